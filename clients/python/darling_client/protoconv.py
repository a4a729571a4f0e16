"""gRPC messages <-> the pydantic wire schema: the one place where the two meet.

The proto messages use the JSON field names of the schema, so the conversion is driven by field names and
descriptors, not written out per field. A request always passes through the same pydantic models as on HTTP,
so both transports accept, default and reject exactly the same things, with the same field paths.

Presence rules: an unset `optional` proto field is a field left out of the JSON body (the schema default
applies); a `DoubleList` message stands for a list that may be absent as a whole (`quality`).
Needs the `grpc` extra (protobuf).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message
from pydantic import BaseModel

from darling_client.proto import reward_pb2
from darling_client.schemas import GroupReward, RewardRequest, RewardResponse

M = TypeVar("M", bound=Message)
B = TypeVar("B", bound=BaseModel)

# Trailing metadata of a failed call: the parts of the HTTP ErrorBody and headers that a gRPC status lacks.
ERROR_KEY = "darling-error"  # ErrorBody.error, e.g. invalid_request
FIELD_KEY = "darling-field"  # one entry per ErrorBody.fields item
HTTP_STATUS_KEY = "darling-http-status"  # the status HTTP would have answered
RETRY_AFTER_KEY = "retry-after"  # seconds, as the HTTP header


def to_proto(data: Mapping[str, Any], message: M) -> M:
    """Fills `message` from a JSON-like mapping (e.g. `model.model_dump()`); None means unset."""
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in data.items():
        if value is None:
            continue
        fd = fields.get(key)
        if fd is None:
            raise ValueError(f"{key}: not a field of {message.DESCRIPTOR.full_name}")
        target = getattr(message, key)
        if fd.message_type is None:
            if fd.is_repeated:
                target.extend(value)
            else:
                setattr(message, key, value)
        elif fd.is_repeated:
            for item in value:
                to_proto(item, target.add())
        else:
            # Presence is the meaning: `{}` or `[]` must still arrive as "set".
            target.SetInParent()
            if isinstance(value, Sequence) and not isinstance(value, str):
                target.values.extend(value)  # a DoubleList
            else:
                to_proto(value, target)
    return message


def _sub_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X`, `list[X]` or `X | None`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _sub_model(arg)
            if found is not None:
                return found
    return None


def to_dict(message: Message, model: type[BaseModel]) -> dict[str, Any]:
    """The JSON-like mapping that `model` would be validated from, had it come over HTTP."""
    out: dict[str, Any] = {}
    fields = message.DESCRIPTOR.fields_by_name
    for name, info in model.model_fields.items():
        fd = fields[name]
        if fd.has_presence and not message.HasField(name):
            if info.is_required():
                out[name] = None  # a required-but-nullable field (e.g. GroupReward.group_id) that was None
            continue
        value = getattr(message, name)
        sub = _sub_model(info.annotation)
        if fd.message_type is None:
            out[name] = list(value) if fd.is_repeated else value
        elif fd.is_repeated:
            assert sub is not None, f"{model.__name__}.{name}: repeated message without a model"
            out[name] = [to_dict(item, sub) for item in value]
        elif sub is None:
            out[name] = list(value.values)  # a DoubleList
        else:
            out[name] = to_dict(value, sub)
    return out


def parse(message: Message, model: type[B]) -> B:
    """`model` validated from `message`; raises pydantic.ValidationError exactly as HTTP would for the same body."""
    return model.model_validate(to_dict(message, model))


def request_to_proto(req: RewardRequest) -> reward_pb2.ScoreRequest:
    return to_proto(req.model_dump(exclude_unset=True), reward_pb2.ScoreRequest())


def request_from_proto(message: reward_pb2.ScoreRequest) -> RewardRequest:
    return parse(message, RewardRequest)


def group_to_proto(group: GroupReward) -> reward_pb2.GroupReward:
    return to_proto(group.model_dump(), reward_pb2.GroupReward())


def group_from_proto(message: reward_pb2.GroupReward) -> GroupReward:
    return parse(message, GroupReward)


def response_to_proto(resp: RewardResponse) -> reward_pb2.ScoreResponse:
    return to_proto(resp.model_dump(), reward_pb2.ScoreResponse())


def response_from_proto(message: reward_pb2.ScoreResponse) -> RewardResponse:
    return parse(message, RewardResponse)

"""The checked-in gRPC stubs are what protoc makes of protos/darling/v1/reward.proto today, and the proto and
the pydantic wire schema name the same fields."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from darling_client import schemas
from darling_client.proto import reward_pb2
from google.protobuf.descriptor import Descriptor
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[3]
CHECKED_IN = ROOT / "clients" / "python" / "darling_client" / "proto"
GENERATED = ("reward_pb2.py", "reward_pb2.pyi", "reward_pb2_grpc.py", "reward_pb2_grpc.pyi")


def test_checked_in_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_grpc.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in GENERATED:
        fresh = (tmp_path / "darling_client" / "proto" / name).read_text()
        assert (CHECKED_IN / name).read_text() == fresh, f"{name} is stale: run `python scripts/gen_grpc.py`"


# pydantic model -> the proto message that carries it.
PAIRS: list[tuple[type[BaseModel], Descriptor]] = [
    (schemas.RewardRequest, reward_pb2.ScoreRequest.DESCRIPTOR),
    (schemas.RewardOptions, reward_pb2.RewardOptions.DESCRIPTOR),
    (schemas.RolloutGroup, reward_pb2.RolloutGroup.DESCRIPTOR),
    (schemas.RewardResponse, reward_pb2.ScoreResponse.DESCRIPTOR),
    (schemas.GroupReward, reward_pb2.GroupReward.DESCRIPTOR),
    (schemas.RolloutReward, reward_pb2.RolloutReward.DESCRIPTOR),
    (schemas.RuleCounts, reward_pb2.RuleCounts.DESCRIPTOR),
    (schemas.JudgementCounts, reward_pb2.JudgementCounts.DESCRIPTOR),
    (schemas.CacheStats, reward_pb2.CacheStats.DESCRIPTOR),
    (schemas.CacheTierStats, reward_pb2.CacheTierStats.DESCRIPTOR),
]

INPUTS = (schemas.RewardRequest, schemas.RewardOptions, schemas.RolloutGroup)


@pytest.mark.parametrize(("model", "message"), PAIRS, ids=[m.__name__ for m, _ in PAIRS])
def test_proto_and_schema_name_the_same_fields(model: type[BaseModel], message: Descriptor) -> None:
    assert set(model.model_fields) == set(message.fields_by_name), (
        f"{model.__name__} and {message.full_name} differ: change protos/darling/v1/reward.proto with the schema"
    )
    for name, info in model.model_fields.items():
        fd = message.fields_by_name[name]
        # A request field the schema lets be left out (it has a default) must be absent-able on the wire too,
        # or a client could not ask for the default. Replies always carry every field.
        if model in INPUTS and not info.is_required() and not fd.is_repeated and fd.message_type is None:
            assert fd.has_presence, f"{message.full_name}.{name} must be `optional`"


def test_grpc_client_side_needs_no_server_code() -> None:
    """The `grpc` extra of the client: stubs, conversion and transport load neither torch nor the service."""
    code = (
        "import sys\n"
        "import darling_client.grpc_transport, darling_client.protoconv, darling_client.proto.reward_pb2_grpc\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'service', 'fastapi'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

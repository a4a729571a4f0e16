"""The RewardService methods: parse through the wire schema, call the shared Scorer, map errors, count calls."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import grpc
import grpc.aio
from darling_client import protoconv
from darling_client.proto import reward_pb2, reward_pb2_grpc
from darling_client.schemas import RewardRequest, RolloutsRequest
from google.protobuf.message import Message
from pydantic import BaseModel, ValidationError

from service.api.deps import ready_scorer
from service.api.errors import validation_error
from service.assembly.assembler import Assembler
from service.engine.engine import Engine
from service.engine.scoring import Scorer
from service.errors import RequestError
from service.grpc.errors import GrpcError, NotServed, TooManyRequests, internal, to_grpc
from service.ops import metrics
from service.ops.admission import Admission
from service.ops.logging import request_id_var
from service.ops.middleware import request_id
from service.settings import Settings

log = logging.getLogger(__name__)
access_log = logging.getLogger("service.access")
SERVICE: str = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name

Context = grpc.aio.ServicerContext[Message, object]
REQUEST_ID_KEY = "x-request-id"
B = TypeVar("B", bound=BaseModel)


class _Call:
    """One call's bookkeeping; a failure is recorded here and the abort happens outside the `except`."""

    def __init__(self, method: str, request_id: str) -> None:
        self.method = method
        self.request_id = request_id
        self.started = time.perf_counter()
        self.error: GrpcError | None = None


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        draining: Callable[[], bool],
        assembler: Callable[[], Assembler] | None = None,
        admission: Admission | None = None,
    ) -> None:
        """`admission`: the in-flight bound shared with HTTP (service/ops/admission.py)."""
        self.settings = settings
        self.engine = engine
        self.draining = draining
        self.assembler = assembler
        self.admission = admission or Admission(settings.max_inflight_requests)

    def _scorer_and_request(self, message: reward_pb2.ScoreRequest) -> tuple[Scorer, RewardRequest]:
        scorer = ready_scorer(self.engine, self.draining())
        return scorer, _parse(message, RewardRequest)

    @contextlib.contextmanager
    def _call(self, method: str, context: Context, counted: bool = True) -> Iterator[_Call]:
        """`counted`: whether the call takes a slot of the in-flight bound (group assembly does not)."""
        given = dict(context.invocation_metadata() or ()).get(REQUEST_ID_KEY)
        call = _Call(method, request_id(given if isinstance(given, str) else None))
        # Log lines written while the call runs carry its id, as on HTTP.
        token = request_id_var.set(call.request_id)
        try:
            yield from self._admit(call, counted)
        finally:
            request_id_var.reset(token)

    def _admit(self, call: _Call, counted: bool) -> Iterator[_Call]:
        if counted and self.admission.full:
            call.error = to_grpc(TooManyRequests(self.admission.refusal()))
            yield call
            return
        if counted:
            self.admission.enter()
        try:
            yield call
        except RequestError as exc:
            call.error = to_grpc(exc)
        except Exception as exc:
            log.exception("unhandled error in a gRPC call")
            call.error = internal(exc)
        finally:
            if counted:
                self.admission.leave()

    async def _finish(self, call: _Call, context: Context) -> None:
        code = call.error.code.name if call.error else "OK"
        elapsed = time.perf_counter() - call.started
        metrics.GRPC_REQUESTS.labels(call.method, code).inc()
        metrics.GRPC_LATENCY.labels(call.method).observe(elapsed)
        if self.settings.access_log:
            # The same fields as the HTTP access log, so one query covers both transports.
            extra = {
                "method": "gRPC",
                "path": f"/{SERVICE}/{call.method}",
                "status": code,
                "duration_ms": round(elapsed * 1000.0, 2),
                "client": context.peer(),
                "outcome": "ok" if call.error is None else "error",
                "request_id": call.request_id,
            }
            access_log.info("gRPC %s %s", call.method, code, extra=extra)
        if call.error is not None:
            trailers = (*call.error.trailers, (REQUEST_ID_KEY, call.request_id))
            await context.abort(call.error.code, call.error.detail, trailers)
        context.set_trailing_metadata(((REQUEST_ID_KEY, call.request_id),))

    async def Score(self, request: reward_pb2.ScoreRequest, context: Context) -> reward_pb2.ScoreResponse:
        reply = reward_pb2.ScoreResponse()
        with self._call("Score", context) as call:
            if call.error is None:
                scorer, req = self._scorer_and_request(request)
                reply = protoconv.response_to_proto(await scorer.score(req))
        await self._finish(call, context)
        return reply

    async def ScoreStream(
        self, request: reward_pb2.ScoreRequest, context: Context
    ) -> AsyncIterator[reward_pb2.GroupResult]:
        with self._call("ScoreStream", context) as call:
            if call.error is None:
                scorer, req = self._scorer_and_request(request)
                async for index, group in scorer.score_each(req):
                    yield reward_pb2.GroupResult(
                        index=index,
                        group=protoconv.group_to_proto(group),
                        elapsed_ms=(time.perf_counter() - call.started) * 1000.0,
                    )
        await self._finish(call, context)

    async def SubmitRollouts(
        self, request: reward_pb2.RolloutsRequest, context: Context
    ) -> reward_pb2.RolloutsResponse:
        reply = reward_pb2.RolloutsResponse()
        with self._call("SubmitRollouts", context, counted=False) as call:
            if call.error is None:
                if self.assembler is None:
                    raise NotServed("group assembly is not served by this server")
                ready_scorer(self.engine, self.draining())
                req = _parse(request, RolloutsRequest)
                resp = await self.assembler().submit(req)
                reply = protoconv.to_proto(resp.model_dump(), reward_pb2.RolloutsResponse())
        await self._finish(call, context)
        return reply


def _parse(message: Message, model: type[B]) -> B:
    try:
        return protoconv.parse(message, model)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None

"""The in-flight bound of one replica (DARLING_MAX_INFLIGHT_REQUESTS), one counter for every transport.

The app factory makes one and hands it to the HTTP middleware and the gRPC servicer, so a replica admits the
limit in all, not the limit per transport. Group assembly (POST /v1/rollouts, /v1/openrlhf, gRPC
SubmitRollouts) is never counted: those calls mostly wait for each other (the rest of their group), and
counting them could fill every slot with waiters whose group-mates are refused, a deadlock. Their own bounds
are DARLING_GROUP_MAX_OPEN and the batch queues.

Both transports run on the one event loop, so a check and the entry that follows it (with no await between)
cannot be interleaved.
"""

from __future__ import annotations


class Admission:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0

    @property
    def full(self) -> bool:
        return self.inflight >= self.limit

    def enter(self) -> None:
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1

    def refusal(self) -> str:
        """The detail of the 429 (gRPC RESOURCE_EXHAUSTED) a refused call gets, the same on both transports."""
        return (
            f"{self.inflight} requests are in progress, the limit of this replica "
            f"(DARLING_MAX_INFLIGHT_REQUESTS={self.limit}); retry shortly"
        )

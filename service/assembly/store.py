"""The group store's contract: what a group's rollouts agree on, and the atomic operations a store offers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol


@dataclass(frozen=True)
class GroupMeta:
    """What every rollout of a group must agree on."""

    group_size: int
    prompt: str
    reference: str | None
    client_quality: bool
    options: str  # canonical JSON of the RewardOptions

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> GroupMeta:
        return cls(**json.loads(raw))

    def differences(self, other: GroupMeta) -> list[str]:
        names = {"client_quality": "quality"}
        return [names.get(k, k) for k, v in asdict(self).items() if asdict(other)[k] != v]


@dataclass
class AddResult:
    status: Literal["ok", "conflict", "duplicate"]
    count: int = 0
    meta: str | None = None  # the group's meta when it conflicts


@dataclass
class Assigned:
    slot: int  # -1: every earlier slot of the name is live (see GroupStore.assign)
    live: dict[int, float] = field(default_factory=dict)  # those live slots -> until when (store time, s)


class GroupStore(Protocol):
    async def add(self, gid: str, meta: str, index: int, payload: str) -> AddResult:
        """Atomically: set the meta if new (else compare), store the payload at index if free (else compare);
        answer the number of distinct indices held."""
        ...

    async def held(self, gid: str) -> tuple[str | None, dict[int, str]]:
        """The meta and the payload per index."""
        ...

    async def claim(self, gid: str, lease_s: float) -> bool: ...

    async def renew(self, gid: str, lease_s: float) -> None:
        """Extend a claim that is still held (a no-op once it expired)."""
        ...

    async def release(self, gid: str) -> None: ...

    async def put_result(self, gid: str, result: str) -> None: ...

    async def get_result(self, gid: str) -> str | None: ...

    async def assign(
        self, key: str, names: list[str], window: int | None, max_age_s: float | None, live_s: float, force: list[bool]
    ) -> list[Assigned]:
        """Atomically give each name a slot of the sequence `key`, and mark that slot live for `live_s` (its
        caller is waiting on it). A name reuses a slot it was given before if that slot is not live (a retry:
        its first attempt's caller is gone); with `window`, only a slot in the current or the previous block of
        `window` slots (block = slot // window), and with `max_age_s` only one given that recently (a prompt
        asked again in a later step is a new rollout). If every slot of the name is live, the answer is
        `Assigned(-1, live)` unless `force`d: the caller must tell a retry racing its own dead first attempt
        (whose slot stops being renewed) from an identical new rollout (its twin's slot keeps being renewed)."""
        ...

    async def hold(self, key: str, slots: list[int], live_s: float) -> None:
        """Keep the slots live (their callers still wait)."""
        ...

    async def let_go(self, key: str, slots: list[int]) -> None:
        """The slots' callers are done: a retry may take them at once."""
        ...

    async def close(self) -> None: ...

"""Group assembly: rollouts that arrive one by one (from several processes and replicas) become whole groups."""

from __future__ import annotations

from service.assembly.memory_store import MemoryGroupStore
from service.assembly.redis_store import RedisGroupStore
from service.assembly.store import GroupStore
from service.settings import Settings


def make_store(settings: Settings) -> GroupStore:
    """Redis when configured (groups may then span replicas), else this replica's memory."""
    if settings.redis_url:
        return RedisGroupStore(
            settings.redis_url,
            settings.redis_namespace,
            settings.group_ttl_s,
            max(1.0, settings.redis_timeout_s),
        )
    return MemoryGroupStore(settings.group_ttl_s, settings.group_max_open)

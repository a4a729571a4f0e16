"""What every adapter shares: where the service is, per-loop async clients, text from chat messages."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from darling_client.client import AsyncRewardClient, OptionsLike, RewardClient
from darling_client.schemas import RUN_MAX_LENGTH, RewardOptions

DEFAULT_URL = "http://127.0.0.1:8000"


def service_url(url: str | None = None) -> str:
    return url or os.environ.get("DARLING_URL") or DEFAULT_URL


def service_key(api_key: str | None = None) -> str | None:
    return api_key or os.environ.get("DARLING_API_KEY") or None


_lock = threading.Lock()
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str | None], AsyncRewardClient]]
_async_clients = weakref.WeakKeyDictionary()
_sync_clients: dict[tuple[str, str | None], RewardClient] = {}


def async_client(url: str | None = None, api_key: str | None = None, **kwargs: Any) -> AsyncRewardClient:
    """A shared AsyncRewardClient for the running event loop (httpx connections belong to one loop)."""
    loop = asyncio.get_running_loop()
    key = (service_url(url), service_key(api_key))
    with _lock:
        per_loop = _async_clients.setdefault(loop, {})
        client = per_loop.get(key)
        if client is None:
            client = AsyncRewardClient(key[0], api_key=key[1], **kwargs)
            per_loop[key] = client
    return client


def sync_client(url: str | None = None, api_key: str | None = None, **kwargs: Any) -> RewardClient:
    """A shared RewardClient per (url, key), for adapters that trainers call synchronously."""
    key = (service_url(url), service_key(api_key))
    with _lock:
        client = _sync_clients.get(key)
        if client is None:
            client = RewardClient(key[0], api_key=key[1], **kwargs)
            _sync_clients[key] = client
    return client


def message_text(value: Any) -> str:
    """Text of a plain string, a chat message, or a list of chat messages (all contents, in order).

    Multi-part contents ([{"type": "text", "text": ...}, ...]) contribute their text parts."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        content = value.get("content", "")
        if isinstance(content, str):
            return content
        if isinstance(content, Sequence):
            return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
        return str(content)
    if isinstance(value, Sequence):
        return "\n".join(message_text(m) for m in value)
    return str(value)


def prompt_text(value: Any) -> str:
    """A prompt as one string; chat prompts keep their roles, so two conversations that differ only in who
    said what are different prompts."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "\n".join(
            f"{m.get('role', '')}: {message_text(m)}" if isinstance(m, Mapping) else message_text(m) for m in value
        )
    return message_text(value)


_RUN_BAD = re.compile(r"[^A-Za-z0-9_.:@+=-]+")


def run_label(*candidates: object) -> str | None:
    """The first non-empty candidate as a valid run label (options.run): other characters become `-`, and it
    is cut to 128."""
    for c in candidates:
        if c is None:
            continue
        label = _RUN_BAD.sub("-", str(c)).strip("-")[:RUN_MAX_LENGTH]
        if label:
            return label
    return None


def adapter_run(options: OptionsLike, explicit: object = None, trainer: object = None) -> str | None:
    """The run label an adapter adds: its run= argument, else $DARLING_RUN, else the trainer's run name; None
    when the caller's options already carry a run (theirs wins)."""
    given = options.run if isinstance(options, RewardOptions) else (options or {}).get("run")
    return None if given else run_label(explicit, os.environ.get("DARLING_RUN"), trainer)

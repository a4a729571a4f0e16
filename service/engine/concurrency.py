"""`gather_or_cancel`: the first failure (or the caller's cancellation) cancels the other awaitables and awaits
them, so a failed request leaves no group feeding the batchers. One implementation, shared with the SDK."""

from darling_client.tasks import gather_or_cancel

__all__ = ["gather_or_cancel"]

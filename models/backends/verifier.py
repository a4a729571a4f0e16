"""Quality for verifiable math: 1 if the response's final answer matches the reference, else 0."""

from __future__ import annotations

import threading

from models.backends.base import Encoded, fingerprint


class MathVerifier:
    source = "verifier"

    def __init__(self) -> None:
        import math_verify

        self._mv = math_verify
        self.id = f"verifier:math-verify-{getattr(math_verify, '__version__', 'unknown')}"
        self.fingerprint = fingerprint("math-verify", self.id)
        self.device = "cpu"

    def encode_rollout(self, prompt: str, response: str, reference: str | None) -> Encoded:
        if reference is None:
            raise ValueError("the verifier needs a reference answer")
        return Encoded(cost=1, payload=(response, reference))

    def check(self, response: str, reference: str) -> float:
        # math-verify's timeouts use SIGALRM, which only the main thread may set; in a worker thread they
        # must be off (parsing is bounded by the character limit on rollouts instead).
        main = threading.current_thread() is threading.main_thread()
        timeout = 5 if main else None
        gold_ref = reference if "$" in reference or "\\boxed" in reference else f"${reference}$"
        gold = self._mv.parse(gold_ref, parsing_timeout=timeout)
        answer = self._mv.parse(response, parsing_timeout=timeout)
        if not gold or not answer:
            return 0.0
        return 1.0 if self._mv.verify(gold, answer, timeout_seconds=timeout) else 0.0

    def run(self, batch: list[Encoded]) -> list[float]:
        return [self.check(*e.payload) for e in batch]

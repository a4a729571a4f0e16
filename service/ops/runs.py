"""Rolling diversity figures per training run, so collapse shows while it happens.

Every scored group whose request carries `options.run` adds one summary to its run: the run's last
`window` groups make the rolling figures, and groups that also carry `options.step` add to that step's
figures. Everything is bounded: at most `max_runs` runs (the least recently active is dropped, with its
Prometheus series), `window` groups and `max_steps` steps per run (the least recently updated step is dropped).
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from darling_client.schemas import GroupReward, RunFigures, RunStats, RunStepFigures

from service.ops import metrics


@dataclass(frozen=True)
class GroupSummary:
    """What a run keeps of one group."""

    distinct: int
    collapsed: bool
    diversity: float
    quality: float
    utility: float
    effective_classes: float

    @classmethod
    def of(cls, g: GroupReward) -> GroupSummary:
        n = max(1, len(g.rollouts))
        return cls(
            distinct=g.distinct,
            collapsed=g.n > 1 and g.distinct == 1,
            diversity=sum(r.diversity for r in g.rollouts) / n,
            quality=sum(r.quality for r in g.rollouts) / n,
            utility=g.utility,
            effective_classes=g.effective_classes,
        )


@dataclass
class _Sums:
    groups: int = 0
    distinct: float = 0.0
    collapsed: int = 0
    diversity: float = 0.0
    quality: float = 0.0
    utility: float = 0.0
    effective_classes: float = 0.0

    def add(self, s: GroupSummary) -> None:
        self.groups += 1
        self.distinct += s.distinct
        self.collapsed += int(s.collapsed)
        self.diversity += s.diversity
        self.quality += s.quality
        self.utility += s.utility
        self.effective_classes += s.effective_classes

    @classmethod
    def over(cls, summaries: Iterable[GroupSummary]) -> _Sums:
        sums = cls()
        for s in summaries:
            sums.add(s)
        return sums

    def means(self) -> dict[str, float | int]:
        k = max(1, self.groups)
        return {
            "groups": self.groups,
            "distinct": self.distinct / k,
            "collapsed_share": self.collapsed / k,
            "diversity": self.diversity / k,
            "quality": self.quality / k,
            "utility": self.utility / k,
            "effective_classes": self.effective_classes / k,
        }


@dataclass
class _Run:
    window: deque[GroupSummary]
    seen: int = 0
    last_step: int | None = None
    steps: OrderedDict[int, _Sums] = field(default_factory=OrderedDict)


class RunRegistry:
    """The runs this process has figures for. Thread-safe: HTTP and gRPC handlers may record concurrently."""

    def __init__(self, max_runs: int = 32, window: int = 256, max_steps: int = 200) -> None:
        if min(max_runs, window, max_steps) < 1:
            raise ValueError("max_runs, window and max_steps must be >= 1")
        self.max_runs = max_runs
        self.window = window
        self.max_steps = max_steps
        self._runs: OrderedDict[str, _Run] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, run: str) -> bool:
        return run in self._runs

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def runs(self) -> list[str]:
        """Tracked runs, least recently active first."""
        with self._lock:
            return list(self._runs)

    def record(self, run: str, step: int | None, group: GroupReward) -> None:
        summary = GroupSummary.of(group)
        with self._lock:
            state = self._runs.get(run)
            if state is None:
                state = _Run(window=deque(maxlen=self.window))
                self._runs[run] = state
                self._evict()
            self._runs.move_to_end(run)
            state.seen += 1
            state.window.append(summary)
            if step is not None:
                state.last_step = step
                sums = state.steps.get(step)
                if sums is None:
                    sums = state.steps[step] = _Sums()
                    while len(state.steps) > self.max_steps:
                        state.steps.popitem(last=False)
                state.steps.move_to_end(step)
                sums.add(summary)
            figures = _Sums.over(state.window).means()
            last_step = state.last_step
            tracked = len(self._runs)
        # Outside the lock: prometheus_client has its own, and a scrape must not wait on ours.
        metrics.RUN_GROUPS.labels(run).inc()
        if summary.collapsed:
            metrics.RUN_COLLAPSED_GROUPS.labels(run).inc()
        else:
            metrics.RUN_COLLAPSED_GROUPS.labels(run)  # present at 0, so rate() works from the first collapse
        for name, gauge in metrics.RUN_FIGURES.items():
            gauge.labels(run).set(figures[name])
        if last_step is not None:
            metrics.RUN_STEP.labels(run).set(last_step)
        metrics.RUNS_TRACKED.set(tracked)

    def _evict(self) -> None:
        while len(self._runs) > self.max_runs:
            old, _ = self._runs.popitem(last=False)
            _forget(old)
            metrics.RUNS_EVICTED.inc()

    def stats(self, run: str) -> RunStats | None:
        with self._lock:
            state = self._runs.get(run)
            if state is None:
                return None
            window = RunFigures.model_validate(_Sums.over(state.window).means())
            steps = [RunStepFigures.model_validate({"step": k, **v.means()}) for k, v in sorted(state.steps.items())]
            return RunStats(run=run, groups_seen=state.seen, last_step=state.last_step, window=window, steps=steps)

    def clear(self) -> None:
        with self._lock:
            for run in self._runs:
                _forget(run)
            self._runs.clear()
        metrics.RUNS_TRACKED.set(0)


def _forget(run: str) -> None:
    """Drop every series of `run` from /metrics."""
    for metric in (metrics.RUN_GROUPS, metrics.RUN_COLLAPSED_GROUPS, metrics.RUN_STEP, *metrics.RUN_FIGURES.values()):
        with contextlib.suppress(KeyError):  # a series never set (e.g. no step was ever sent)
            metric.remove(run)

"""`darling-reward bench`: the service against the bare model and against the published one-pair-per-request setup.

Four modes run in one process, one after another, on the same model weights and the same workload:

- `limit`: the bare forward over every pair i < j of every group, pre-tokenized, sorted by length, at the best
  batch size of a short search. No service, no tokenization: the ceiling of plain all-pairs judging.
- `reference`: the published architecture: every pair i < j is one HTTP request, a group's requests are sent
  together, to a small server (built here, on loopback) that runs one pair per forward.
- `engine`: the in-process `Scorer` (rules, skipping planner, cache, shared batcher), K concurrent callers.
- `http`: the real service app under uvicorn on loopback, K concurrent HTTP clients.

Throughput counts workload pairs (n(n-1)/2 per group, judged or skipped) per second, so skipping shows as speed.
Every mode yields one partition per group; `identical_partitions` says whether all four agree.
"""

"""`darling-reward bench`: runs the modes one after another on one workload and prints their ratios."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
from typing import Any

from service.tools.bench.config import BenchConfig, peak_rss_mb, percentile, progress
from service.tools.bench.direct import load_classifier, measure_int8, measure_limit
from service.tools.bench.reference import measure_reference
from service.tools.bench.service_modes import (
    measure_engine,
    measure_http,
    resolve_threshold,
    service_settings,
)
from service.tools.bench.workload import (
    DEFAULT_DATA,
    load_answers,
    make_workload,
    partition,
)


async def run_async(cfg: BenchConfig) -> dict[str, Any]:
    from models.backends.loading import configure_cpu_threads

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_cpu_threads(cfg.cpu_threads)
    import torch

    answers = load_answers(__import__("pathlib").Path(cfg.data))
    workload = make_workload(cfg.groups, cfg.n, cfg.collapse, answers, seed=cfg.seed)
    total_pairs = cfg.groups * cfg.n * (cfg.n - 1) // 2
    with tempfile.TemporaryDirectory(prefix="darling-bench-") as workdir:
        clf, path = load_classifier(cfg, workdir)
        on_gpu = str(clf.device).startswith("cuda")

        limit, scores, search = measure_limit(clf, workload, cfg, on_gpu)
        threshold, fit = resolve_threshold(cfg, clf, workload, scores)
        limit.partitions = [partition(cfg.n, {p: s > threshold for p, s in sc.items()})[0] for sc in scores]

        # The service is configured for this hardware: rows per forward = the best batch size found above.
        rows = cfg.batch_rows or int(limit.extra["batch_size"])
        width = max(e.cost for e in [clf.encode_pair(g.responses[0], g.responses[1]) for g in workload[:8]])
        settings = service_settings(cfg, path, rows, max(rows * width, 512) if rows > 1 else 1)

        int8: dict[str, Any] = {}
        if cfg.int8 and path is not None and not on_gpu:
            int8 = measure_int8(clf, workload, cfg, scores, threshold, int(limit.extra["batch_size"]))

        progress("limit", limit)
        reference = await measure_reference(clf, workload, cfg, threshold)
        progress("reference", reference)
        engine = await measure_engine(clf, workload, cfg, threshold, settings)
        progress("engine", engine)
        http, latency = await measure_http(workload, cfg, threshold, settings)
        progress("http", http)
        limit_first = limit.pairs_per_s
        limit_again = limit.extra.pop("again")()
        limit.pairs_per_s = max(limit_first, limit_again)
        print(f"bench: limit again: {limit_again:.2f} pairs/s", file=sys.stderr, flush=True)

    modes = {"limit": limit, "reference": reference, "engine": engine, "http": http}
    mismatched = {
        name: sum(a != b for a, b in zip(m.partitions, limit.partitions, strict=True)) for name, m in modes.items()
    }
    all_lat = http.latencies_ms
    return {
        "limit_pairs_per_s": limit.pairs_per_s,
        "reference_pairs_per_s": reference.pairs_per_s,
        "engine_pairs_per_s": engine.pairs_per_s,
        "http_pairs_per_s": http.pairs_per_s,
        "engine_over_limit": engine.pairs_per_s / limit.pairs_per_s,
        "http_over_limit": http.pairs_per_s / limit.pairs_per_s,
        "http_over_reference": http.pairs_per_s / reference.pairs_per_s,
        "judged_share": engine.extra["made"] / total_pairs,
        "padding_share": engine.extra["padding_share"],
        "p50_ms": percentile(all_lat, 50),
        "p99_ms": percentile(all_lat, 99),
        "peak_rss_mb": peak_rss_mb(),
        "identical_partitions": not any(mismatched.values()),
        # workload parameters
        "groups": cfg.groups,
        "n": cfg.n,
        "collapse": cfg.collapse,
        "pairs": total_pairs,
        "classifier": clf.id,
        "model": cfg.model if path else "all-MiniLM-L6-v2 (embedding)",
        "clients": cfg.clients,
        "groups_per_request": cfg.groups_per_request,
        "device": str(clf.device),
        "quick": cfg.quick,
        "seed": cfg.seed,
        "details": {
            "torch_threads": torch.get_num_threads(),
            "threshold": threshold,
            **fit,
            "limit_first_pairs_per_s": limit_first,
            "limit_again_pairs_per_s": limit_again,
            "batch_size_search_pairs_per_s": search,
            "service_max_batch_rows": settings.max_batch_rows,
            "service_max_batch_tokens": settings.max_batch_tokens,
            "partitions_differing_from_limit": mismatched,
            "mean_classes": statistics.mean(len(set(p)) for p in limit.partitions),
            "wall_s": {name: m.wall_s for name, m in modes.items()},
            "engine": {
                **engine.extra,
                "p50_ms": percentile(engine.latencies_ms, 50),
                "p99_ms": percentile(engine.latencies_ms, 99),
            },
            "http": {**http.extra},
            "reference_group_p50_ms": percentile(reference.latencies_ms, 50),
            "latency": latency,
            "int8": int8,
        },
    }


def run(cfg: BenchConfig) -> dict[str, Any]:
    return asyncio.run(run_async(cfg))


# ---- CLI ----------------------------------------------------------------------------------------------------


def _main(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # Tokenizing whole pairs before truncation warns once per process; the presets truncate on purpose.
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    cfg = BenchConfig(
        groups=args.groups,
        n=args.n,
        collapse=args.collapse,
        model=args.model,
        classifier=args.classifier,
        clients=args.clients,
        groups_per_request=args.groups_per_request,
        device=args.device,
        cpu_threads=args.cpu_threads,
        batch_rows=args.batch_rows,
        threshold=args.threshold,
        latency_requests=args.latency_requests,
        seed=args.seed,
        quick=args.quick,
        data=args.data,
        tokenizer=args.tokenizer,
        int8=args.int8,
    )
    if args.quick:
        cfg.groups, cfg.n, cfg.clients = min(cfg.groups, 4), min(cfg.n, 5), min(cfg.clients, 4)
    result = run(cfg)
    text = json.dumps(result, indent=2 if args.pretty else None)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
    return 0


def register(subparsers: Any) -> None:
    from service.tools.bench.models import MODELS

    p = subparsers.add_parser(
        "bench",
        help="Throughput of the service against the bare model and the one-pair-per-request setup (JSON).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--groups", "-B", type=int, default=64, help="Groups in the workload.")
    p.add_argument("--n", "-n", type=int, default=8, help="Rollouts per group.")
    p.add_argument("--collapse", type=float, default=0.5, help="Share of a group's rollouts in one planted class.")
    p.add_argument("--classifier", choices=["cross-encoder", "embedding"], default="cross-encoder")
    p.add_argument("--model", choices=MODELS, default="minilm", help="Cross-encoder built for the run.")
    p.add_argument("--clients", "-K", type=int, default=16, help="Concurrent clients (engine, http, reference).")
    p.add_argument("--groups-per-request", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N.")
    p.add_argument("--cpu-threads", type=int, default=None, help="Torch threads; default all cores.")
    p.add_argument("--batch-rows", type=int, default=None, help="Service rows per forward; default the best found.")
    p.add_argument("--threshold", default="auto", help="auto (fit to the planted collapse), model, or a number.")
    p.add_argument("--latency-requests", type=int, default=0, help="Requests for the half-load latency check.")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="NoveltyBench pairs JSONL.")
    p.add_argument("--tokenizer", default=None, help="Tokenizer folder for the built model; default packaged MiniLM.")
    p.add_argument("--int8", action="store_true", help="Also measure the int8 quantized cross-encoder (CPU).")
    p.add_argument("--quick", action="store_true", help="A small workload (under a minute on 2 cores).")
    p.add_argument("--pretty", action="store_true", help="Indent the JSON.")
    p.add_argument("--output", default=None, help="Also write the JSON here.")
    p.set_defaults(func=_main)

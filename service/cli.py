"""`darling-reward`: serve, score a file offline, and the tools other modules register."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator

from darling_client.schemas import RewardOptions, RewardRequest, RolloutGroup

from service.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    from service.server import serve

    given = {"host": args.host, "port": args.port, "grpc_port": args.grpc_port}
    overrides = {k: v for k, v in given.items() if v is not None}
    serve(Settings(**overrides))
    return 0


def _read_groups(path: str) -> Iterator[tuple[int, RolloutGroup]]:
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield lineno, RolloutGroup.model_validate_json(line)
                except ValueError as exc:
                    raise SystemExit(f"{path}:{lineno}: not a valid group: {exc}") from None


async def _score_file(settings: Settings, src: str, dst: str, options: RewardOptions, chunk: int) -> int:
    from tqdm import tqdm

    from service.engine.engine import Engine

    groups = [g for _, g in _read_groups(src)]  # validate the whole file before loading any model
    engine = Engine(settings)
    await engine.start()
    assert engine.scorer is not None
    written = 0
    try:
        with open(dst, "w") as out, tqdm(total=len(groups), unit="group", file=sys.stderr) as bar:
            for start in range(0, len(groups), chunk):
                part = groups[start : start + chunk]
                resp = await engine.scorer.score(RewardRequest(groups=part, options=options))
                for g in resp.groups:
                    out.write(g.model_dump_json() + "\n")
                    written += 1
                bar.update(len(part))
    finally:
        await engine.stop()
    return written


def _score(args: argparse.Namespace) -> int:
    options = RewardOptions.model_validate_json(args.options) if args.options else RewardOptions()
    n = asyncio.run(_score_file(Settings(), args.input, args.output, options, args.chunk))
    print(json.dumps({"groups": n, "output": args.output}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darling-reward", description="DARLING reward service and tools.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="Run the HTTP service (settings from DARLING_* variables).")
    s.add_argument("--host", default=None, help="Bind address (DARLING_HOST).")
    s.add_argument("--port", type=int, default=None, help="HTTP port (DARLING_PORT).")
    s.add_argument("--grpc-port", type=int, default=None, help="Also serve gRPC on this port (DARLING_GRPC_PORT).")
    s.set_defaults(func=_serve)

    sc = sub.add_parser("score", help="Score a JSONL file of groups offline (one RolloutGroup per line).")
    sc.add_argument("input")
    sc.add_argument("output")
    sc.add_argument("--options", default=None, help='RewardOptions as JSON, e.g. \'{"partition": "greedy"}\'.')
    sc.add_argument("--chunk", type=int, default=64, help="Groups per scoring call.")
    sc.set_defaults(func=_score)

    for module in ("service.tools.bench.run", "service.tools.classifier"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())

"""`darling-reward`: serve, score a file offline, and the tools other modules register."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator

from darling_client.schemas import GroupReward, RewardOptions, RewardRequest, RolloutGroup

from service.errors import RequestError
from service.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    from service.server import serve

    given = {"host": args.host, "port": args.port, "grpc_port": args.grpc_port}
    overrides = {k: v for k, v in given.items() if v is not None}
    serve(Settings(**overrides))
    return 0


def _group_of(obj: object, quality: float | None) -> RolloutGroup:
    """A RolloutGroup line, or a NoveltyBench generations line {"id"?, "prompt", "generations": [...]} that may also
    carry "quality", "ratings" or "reference". `quality`: the constant for groups with no quality source."""
    if isinstance(obj, dict) and "generations" in obj:
        obj = {
            "group_id": None if obj.get("id") is None else str(obj["id"]),
            "prompt": obj.get("prompt"),
            "responses": obj["generations"],
            **{k: obj[k] for k in ("quality", "ratings", "reference") if obj.get(k) is not None},
        }
    group = RolloutGroup.model_validate(obj)
    if quality is not None and group.quality is None and group.reference is None:
        group = group.model_copy(update={"quality": [quality] * len(group.responses)})
    return group


def _read_groups(path: str, quality: float | None = None) -> Iterator[tuple[int, RolloutGroup]]:
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield lineno, _group_of(json.loads(line), quality)
                except ValueError as exc:
                    raise SystemExit(f"{path}:{lineno}: not a valid group: {exc}") from None


async def _score_file(
    settings: Settings, src: str, dst: str | None, options: RewardOptions, chunk: int, quality: float | None = None
) -> list[GroupReward]:
    from tqdm import tqdm

    from service.engine.engine import Engine

    groups = [g for _, g in _read_groups(src, quality)]  # validate the whole file before loading any model
    engine = Engine(settings)
    await engine.start()
    assert engine.scorer is not None
    scored: list[GroupReward] = []
    try:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(dst, "w")) if dst else None
            bar = stack.enter_context(tqdm(total=len(groups), unit="group", file=sys.stderr))
            for start in range(0, len(groups), chunk):
                part = groups[start : start + chunk]
                try:
                    resp = await engine.scorer.score(RewardRequest(groups=part, options=options))
                except RequestError as exc:
                    hint = " (or pass --quality 1 to rate every generation alike)" if "quality" in exc.detail else ""
                    raise SystemExit(f"{src}: {exc.detail}{hint}") from None
                for g in resp.groups:
                    if out is not None:
                        out.write(g.model_dump_json() + "\n")
                    scored.append(g)
                bar.update(len(part))
    finally:
        await engine.stop()
    return scored


_METRICS = ("distinct", "utility", "effective_classes")


def _report(groups: list[GroupReward], as_json: bool, output: str | None) -> str:
    """Per prompt distinct, utility and effective classes (docs/spec.md section 6), then their means."""
    rows = [
        {"group": g.group_id or str(i), "n": g.n, **{m: getattr(g, m) for m in _METRICS}} for i, g in enumerate(groups)
    ]
    k = max(1, len(rows))
    means = {m: sum(float(r[m]) for r in rows) / k for m in _METRICS}
    summary = {"groups": len(rows), **means, **({"output": output} if output else {})}
    if as_json:
        return "\n".join([*(json.dumps(r) for r in rows), json.dumps({"summary": summary})])
    width = max([5, *(len(str(r["group"])) for r in rows)])
    lines = [f"{'group':<{width}}  {'n':>4}  {'distinct':>8}  {'utility':>7}  {'eff_classes':>11}"]
    for r in rows:
        lines.append(
            f"{r['group']!s:<{width}}  {r['n']:>4}  {r['distinct']:>8}  {r['utility']:>7.3f}  "
            f"{r['effective_classes']:>11.3f}"
        )
    lines.append(
        f"{'mean':<{width}}  {'':>4}  {means['distinct']:>8.3f}  {means['utility']:>7.3f}  "
        f"{means['effective_classes']:>11.3f}   ({len(rows)} groups)"
    )
    return "\n".join(lines)


def _score(args: argparse.Namespace) -> int:
    options = RewardOptions.model_validate_json(args.options) if args.options else RewardOptions()
    groups = asyncio.run(_score_file(Settings(), args.input, args.output, options, args.chunk, args.quality))
    print(_report(groups, args.json, args.output))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="darling-reward", description="DARLING reward service and tools.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="Run the HTTP service (settings from DARLING_* variables).")
    s.add_argument("--host", default=None, help="Bind address (DARLING_HOST).")
    s.add_argument("--port", type=int, default=None, help="HTTP port (DARLING_PORT).")
    s.add_argument("--grpc-port", type=int, default=None, help="Also serve gRPC on this port (DARLING_GRPC_PORT).")
    s.set_defaults(func=_serve)

    sc = sub.add_parser(
        "score",
        help="Score a JSONL file offline and print per-prompt distinct, utility and effective classes with their "
        "means. Lines: a RolloutGroup, or NoveltyBench's {prompt, generations} (+ quality, ratings or reference).",
    )
    sc.add_argument("input")
    sc.add_argument("output", nargs="?", default=None, help="Also write every GroupReward here, one per line.")
    sc.add_argument("--json", action="store_true", help="JSON lines (one per prompt, then a summary), not a table.")
    sc.add_argument(
        "--quality",
        type=float,
        default=None,
        help="Quality of every generation of lines that carry none (no reward model needed): with the default "
        "rating cuts, 1 rates all alike and utility then measures novelty alone.",
    )
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

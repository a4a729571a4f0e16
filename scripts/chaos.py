"""Chaos run of group assembly: does any rollout get lost, duplicated or scored in a group not its own?

Real replica processes (`python -m service.cli serve`) share a private redis-server (started here, on a free
loopback port, with an fsync'ed append-only file). One caller per rollout submits it alone, at a random moment
and to a random replica, so every group arrives one by one, out of order and across replicas; half the groups
send `index`, half let the server number them; some rollouts are exact copies of another of their group (which
must count twice, unlike a retry). Meanwhile Redis is paused (SIGSTOP/SIGCONT) and restarted, one
replica is SIGTERMed and another SIGKILLed (both restarted). Callers retry what a trainer retries (connection
errors, 503, 429, 408) on another replica, until their reward comes or the run's time is up.

Every group is scored once beforehand on one replica (POST /v1/rewards): the reference. A caller's answer is
"mixed" when its reward, or its group's rewards, differ from the reference of its own group; "duplicated"
when two callers of a group with different rollouts were given one index (or an index that is not theirs);
"lost" when a caller never got its reward. It prints ONE JSON line (the rest goes to stderr):

    .venv/bin/python scripts/chaos.py --groups 24 --group-size 4 --replicas 3 --seconds 150
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "clients" / "python")]

from service.tools.replicas import PrivateRedis, Replica, start_all  # noqa: E402

RETRYABLE = {408, 429, 503}
OPTIONS = {"cache": False}
WORDS = ["apple", "river", "stone", "cloud", "ember", "violet", "copper", "lantern", "meadow", "harbor", "quartz"]


@dataclass
class Caller:
    group: int
    index: int  # the rollout's position in its group as generated (the server may number it otherwise)
    body: dict[str, Any]
    started: float = 0.0
    finished: float | None = None
    answer: dict[str, Any] | None = None
    statuses: list[int] = field(default_factory=list)
    transport_errors: int = 0


def make_groups(n_groups: int, size: int, rng: random.Random) -> list[dict[str, Any]]:
    groups = []
    for g in range(n_groups):
        base = " ".join(rng.choice(WORDS) for _ in range(8))
        responses: list[str] = []
        quality: list[float] = []
        for i in range(size):
            luck = rng.random() if i > 0 else 1.0
            if luck < 0.2:  # an exact copy of the previous rollout (sampling repeats itself): not a retry
                responses.append(responses[-1])
                quality.append(quality[-1])
                continue
            # Some rollouts of a group say nearly the same thing, so classes differ from group to group.
            near = f"{responses[-1]} indeed" if luck < 0.4 else None
            responses.append(near or f"Group {g} answer {i}: {base} {rng.random():.6f}")
            quality.append(round(rng.uniform(0.1, 1.0), 3))
        groups.append({"prompt": f"Chaos prompt {g}", "responses": responses, "quality": quality})
    return groups


def callers_of(groups: list[dict[str, Any]], run: str) -> list[Caller]:
    out = []
    for g, grp in enumerate(groups):
        for i, text in enumerate(grp["responses"]):
            r: dict[str, Any] = {
                "group_id": f"{run}-g{g}",
                "group_size": len(grp["responses"]),
                "prompt": grp["prompt"],
                "response": text,
                "quality": grp["quality"][i],
            }
            if g % 2 == 0:  # half the groups numbered by the server
                r["index"] = i
            out.append(Caller(g, i, {"rollouts": [r], "options": OPTIONS}))
    return out


async def call(c: Caller, replicas: list[Replica], client: httpx.AsyncClient, rng: random.Random, end: float) -> None:
    c.started = time.monotonic()
    k = rng.randrange(len(replicas))
    while time.monotonic() < end:
        try:
            r = await client.post(replicas[k].base + "/v1/rollouts", json=c.body)
            c.statuses.append(r.status_code)
            if r.status_code == 200:
                c.answer, c.finished = r.json(), time.monotonic()
                return
            if r.status_code not in RETRYABLE and r.status_code < 500:
                log(f"caller g{c.group}/{c.index}: {r.status_code} {r.text[:300]}")
                return  # a trainer does not retry a 4xx other than these: the rollout is lost
        except httpx.TransportError:
            c.transport_errors += 1
        k = (k + 1) % len(replicas)
        await asyncio.sleep(rng.uniform(0.05, 0.3))


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def restart(r: Replica, sig: int) -> None:
    r.signal(sig)
    r.wait(60)
    r.start()
    r.wait_ready()
    log(f"replica :{r.port} is back")


async def chaos(redis: PrivateRedis, replicas: list[Replica], pause_s: float) -> None:
    """Redis paused, a replica SIGTERMed, Redis restarted, another replica SIGKILLed; restarts in threads."""
    threads = []
    await asyncio.sleep(1.0)
    log(f"SIGSTOP redis for {pause_s:g} s")
    redis.pause()
    await asyncio.sleep(pause_s)
    redis.resume()
    log("SIGCONT redis")
    await asyncio.sleep(1.0)
    log(f"SIGTERM replica :{replicas[0].port}")
    threads.append(threading.Thread(target=restart, args=(replicas[0], signal.SIGTERM), daemon=True))
    threads[-1].start()
    await asyncio.sleep(1.5)
    log("restart redis")
    await asyncio.to_thread(redis.restart)
    await asyncio.sleep(1.0)
    victim = replicas[-1]
    log(f"SIGKILL replica :{victim.port}")
    threads.append(threading.Thread(target=restart, args=(victim, signal.SIGKILL), daemon=True))
    threads[-1].start()
    for t in threads:
        await asyncio.to_thread(t.join, 180)


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6


def report(callers: list[Caller], groups: list[dict[str, Any]], ref: list[dict[str, Any]]) -> dict[str, Any]:
    returned = [c for c in callers if c.answer is not None]
    mixed = duplicated = 0
    for g in range(len(groups)):
        mine = [c for c in returned if c.group == g]
        # Two callers given one index is a duplicate unless they sent the very same rollout (exact copies are
        # interchangeable: each gets the reward of one of the copies, and the group holds them all).
        holder: dict[int, str] = {}
        for c in mine:
            assert c.answer is not None
            index, text = c.answer["rollouts"][0]["index"], json.dumps(c.body["rollouts"][0], sort_keys=True)
            if holder.setdefault(index, text) != text:
                duplicated += 1
                log(f"group {g}: index {index} given to two different rollouts")
        for c in mine:
            assert c.answer is not None
            got = c.answer["rollouts"][0]
            want = ref[g]
            if "index" in c.body["rollouts"][0] and got["index"] != c.index:
                duplicated += 1
            # Rewards do not depend on the order inside a group, so a server-numbered rollout must still get the
            # reference reward of its own response, and its group the reference rewards (as a multiset).
            group_rewards = sorted(c.answer["groups"][0]["rewards"])
            if not close(got["reward"], want["rewards"][c.index]) or not all(
                close(a, b) for a, b in zip(group_rewards, sorted(want["rewards"]), strict=True)
            ):
                mixed += 1
    waits = sorted(c.finished - c.started for c in returned if c.finished is not None)
    statuses = [s for c in callers for s in c.statuses]
    return {
        "rollouts_sent": len(callers),
        "rewards_returned": len(returned),
        "lost": len(callers) - len(returned),
        "duplicated": duplicated,
        "mixed": mixed,
        "5xx": sum(1 for s in statuses if s >= 500 and s != 503),
        "retryable_503": statuses.count(503),
        "retried_408": statuses.count(408),
        "transport_errors": sum(c.transport_errors for c in callers),
        "attempts": len(statuses) + sum(c.transport_errors for c in callers),
        "p99_wait_s": round(waits[min(len(waits) - 1, int(0.99 * len(waits)))], 3) if waits else None,
        "groups": len(groups),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    redis = PrivateRedis()
    redis.start()
    logs = Path(tempfile.mkdtemp(prefix="darling-chaos-"))
    env = {
        "DARLING_REDIS_URL": redis.url,
        "DARLING_GROUP_LEASE_S": "2",
        "DARLING_GROUP_TIMEOUT_S": "15",
        "DARLING_SHUTDOWN_GRACE_S": "4",
    }
    replicas = [Replica(env, logs, f"replica{k}") for k in range(args.replicas)]
    try:
        log(f"starting {args.replicas} replicas and redis on :{redis.port} (logs in {logs})")
        start_all(replicas)
        groups = make_groups(args.groups, args.group_size, rng)
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=1000)) as client:
            r = await client.post(replicas[0].base + "/v1/rewards", json={"groups": groups, "options": OPTIONS})
            r.raise_for_status()
            ref = r.json()["groups"]
            callers = callers_of(groups, f"chaos{rng.randrange(10**9)}")
            rng.shuffle(callers)
            end = time.monotonic() + args.seconds

            async def later(c: Caller) -> None:
                await asyncio.sleep(rng.uniform(0, args.spread))
                await call(c, replicas, client, random.Random(rng.random()), end)

            log(f"{len(callers)} callers over {args.spread:g} s, chaos meanwhile")
            await asyncio.gather(chaos(redis, replicas, args.pause), *(later(c) for c in callers))
        out = report(callers, groups, ref)
        if out["duplicated"] or out["mixed"] or out["lost"]:
            import redis as redis_client

            dump = redis_client.Redis.from_url(redis.url, decode_responses=True)
            with open(logs / "redis-dump.txt", "w") as f:
                for key in sorted(dump.scan_iter("*")):
                    kind = dump.type(key)
                    f.write(f"{key} {dump.hgetall(key) if kind == 'hash' else dump.get(key)}\n")
            log(f"the group store is dumped in {logs / 'redis-dump.txt'}")
        return out
    finally:
        for rep in replicas:
            rep.stop()
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--groups", type=int, default=24)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--spread", type=float, default=8.0, help="seconds over which the callers start")
    p.add_argument("--pause", type=float, default=2.0, help="seconds Redis stays SIGSTOPped")
    p.add_argument("--seconds", type=float, default=150.0, help="callers give up after this long")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    print(json.dumps(out), flush=True)
    bad = out["lost"] or out["duplicated"] or out["mixed"] or out["5xx"]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

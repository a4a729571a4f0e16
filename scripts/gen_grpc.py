#!/usr/bin/env python3
"""Regenerate the Python gRPC stubs from protos/darling/v1/reward.proto into the client package.

The stubs are checked in so that `pip install darling-reward-client[grpc]` needs no compiler;
tests/service/grpc/test_grpc_stubs.py runs this into a temporary folder and fails when the checked-in copy differs.
Needs grpcio-tools and mypy-protobuf (the dev extra pins both, because the output carries their versions);
mypy-protobuf writes the typed .pyi stubs that let mypy --strict check the code using them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "protos" / "darling" / "v1"
PROTO = PROTO_DIR / "reward.proto"
CLIENT_ROOT = ROOT / "clients" / "python"
# The proto is mapped into the client package's import path, so the generated `_pb2_grpc` imports
# `darling_client.proto.reward_pb2` without any editing of protoc's output.
PACKAGE_PATH = "darling_client/proto"
GENERATED = ("reward_pb2.py", "reward_pb2.pyi", "reward_pb2_grpc.py", "reward_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    # Beside the running interpreter first: the venv's plugin, whatever PATH says.
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: pip install mypy-protobuf (in the dev extra)")
    return found


def generate(out_root: Path) -> Path:
    """Writes the stubs under out_root/darling_client/proto/ and returns that folder."""
    from grpc_tools import protoc

    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PACKAGE_PATH}={PROTO_DIR}",
        f"--python_out={out_root}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out=async_stubs:{out_root}",
        str(PROTO),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    return out_root / PACKAGE_PATH


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=CLIENT_ROOT, help="Root under which darling_client/proto/ is written.")
    args = p.parse_args(argv)
    folder = generate(args.out)
    print("\n".join(str(folder / name) for name in GENERATED))
    return 0


if __name__ == "__main__":
    sys.exit(main())

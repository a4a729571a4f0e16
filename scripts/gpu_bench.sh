#!/usr/bin/env bash
# The throughput benchmark on a GPU: a ModernBERT-base-shaped cross-encoder (random weights, bf16, SDPA) on CUDA,
# a half-collapsed and a fully collapsed workload (B=64, n=8), each one JSON object (see `darling-reward bench`).
#
#   scripts/gpu_bench.sh --prepare   here: copy the tokenizer and the data into .bench/, fetch the service's
#                                    Python wheels the GPU image lacks into .bench/whl (Python 3.12, x86-64)
#   scripts/gpu_bench.sh             on the GPU machine (the `device` tool, with `.bench` carried):
#                                    JSON files into $OUT (or /tmp/darling-bench-out)
#   scripts/gpu_bench.sh --tiny      anywhere: a 2-layer ModernBERT on CPU and a tiny workload, to check the script
#
# Extra arguments go to `darling-reward bench` (e.g. --groups 128 --clients 32).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ASSETS=$ROOT/.bench

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
    elif [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; then echo .venv/bin/python
    else echo python3
    fi
}
PY=$(pick_python)

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$ASSETS/tokenizer" "$ASSETS/whl"
    TOK=$("$PY" -c 'from models.backends.embedding import packaged_minilm_path as p; print(p())')
    for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
        [ -f "$TOK/$f" ] && cp "$TOK/$f" "$ASSETS/tokenizer/"
    done
    cp "$ROOT/models/data/noveltybench_pairs/train.jsonl" "$ASSETS/train.jsonl"
    # What the service imports and the GPU image (KINDS.md) does not hold; pins match this checkout's .venv.
    WHEELS=$("$PY" -m pip freeze 2>/dev/null | grep -iE '^(fastapi|starlette|uvicorn|pydantic|pydantic[-_]core|pydantic[-_]settings|python-dotenv|annotated-types|typing-inspection|redis)==' || true)
    # shellcheck disable=SC2086
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$ASSETS/whl" $WHEELS
    echo "prepared $ASSETS; carry '.bench' (keep it out of git: echo /.bench/ >> .git/info/exclude)"
    exit 0
fi

# Wheels carried for the GPU image, and the in-repo packages.
if compgen -G "$ASSETS/whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/darling-site \
        "$ASSETS"/whl/*.whl
    export PYTHONPATH=/tmp/darling-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$ROOT:$ROOT/clients/python:${PYTHONPATH:-}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

ARGS=()
[ -d "$ASSETS/tokenizer" ] && ARGS+=(--tokenizer "$ASSETS/tokenizer")
[ -f "$ASSETS/train.jsonl" ] && ARGS+=(--data "$ASSETS/train.jsonl")

if [ "${1:-}" = "--tiny" ]; then
    shift
    ARGS+=(--model modernbert-tiny --device cpu --groups 4 --n 4 --clients 2)
    COLLAPSES=(0.5)
else
    ARGS+=(--model modernbert-base --device cuda --groups 64 --n 8 --clients 16)
    COLLAPSES=(0.5 1.0)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

DEST=${OUT:-${TMPDIR:-/tmp}/darling-bench-out}
mkdir -p "$DEST"
for c in "${COLLAPSES[@]}"; do
    "$PY" -m service.cli bench "${ARGS[@]}" --collapse "$c" "$@" --output "$DEST/bench-collapse-$c.json"
done

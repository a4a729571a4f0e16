#!/usr/bin/env bash
# Lint, type-check and run the test suite against a real Redis.
# Uses $REDIS_URL when it answers; otherwise starts a private redis-server on a free port.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export HF_HUB_OFFLINE=1

redis_ok() { "$VENV/bin/python" -c "import redis,sys; redis.Redis.from_url(sys.argv[1], socket_timeout=1).ping()" "$1" 2>/dev/null; }

started=""
# The outage tests start, stop and pause a redis-server of their own, so the binary is needed either way.
command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
if [ -n "${REDIS_URL:-}" ] && redis_ok "$REDIS_URL"; then
  echo "using Redis at $REDIS_URL"
else
  port=$("$VENV/bin/python" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
    --pidfile "/tmp/darling-redis-$port.pid" --logfile "/tmp/darling-redis-$port.log"
  started="/tmp/darling-redis-$port.pid"
  export REDIS_URL="redis://127.0.0.1:$port/0"
  for _ in $(seq 1 50); do redis_ok "$REDIS_URL" && break; sleep 0.1; done
  echo "started Redis at $REDIS_URL"
fi
cleanup() { if [ -n "$started" ] && [ -f "$started" ]; then kill "$(cat "$started")" 2>/dev/null || true; fi; }
trap cleanup EXIT

ruff check .
ruff format --check service models clients tests
mypy service models clients/python/darling_client
bash scripts/validate_deploy.sh
pytest -q -p no:cacheprovider "$@"

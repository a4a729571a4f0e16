"""API keys, the body size limit, safe model loading and secret-free logs, on a real loopback server."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from models.backends.loading import LoadOptions, load_pretrained
from service.app import create_app
from service.ops.logging import REDACTED, JsonFormatter, RedactFilter
from service.ops.security import ApiKeys
from service.settings import Settings
from tests.conftest import serve

KEYS = ["alpha-key-0123456789", "beta-key-9876543210"]
FILE_KEY = "gamma-key-from-a-secret-file"
BODY = {"groups": [{"prompt": "Name a fruit.", "responses": ["An apple.", "A pear."], "quality": [1.0, 0.5]}]}
LIMIT = 4096


@pytest.fixture(scope="module")
def logs() -> Iterator[io.StringIO]:
    """What the service logs while this module runs, through the production formatter and redaction."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactFilter([*KEYS, FILE_KEY]))
    root = logging.getLogger()
    access = logging.getLogger("service.access")
    old_level = access.level
    access.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        access.setLevel(old_level)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, logs: io.StringIO) -> Iterator[str]:
    keyfile = tmp_path_factory.mktemp("keys") / "api-keys"
    keyfile.write_text(f"# rotated 2026-01\n{FILE_KEY}\n\n")
    settings = Settings(port=0, api_keys=",".join(KEYS), api_keys_file=str(keyfile), max_body_bytes=LIMIT)
    with serve(create_app(settings)) as base:
        yield base


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_configured_key_works(secured: str) -> None:
    for key in [*KEYS, FILE_KEY]:
        r = httpx.post(secured + "/v1/rewards", json=BODY, headers=auth(key), timeout=60)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "headers",
    [
        {},
        auth("wrong-key"),
        auth(KEYS[0][:-1]),  # a prefix of a real key
        auth(KEYS[0] + "x"),
        {"Authorization": KEYS[0]},  # no scheme
        {"Authorization": f"Basic {KEYS[0]}"},
        {"Authorization": "Bearer"},
    ],
)
def test_missing_or_wrong_key_is_401(secured: str, headers: dict[str, str]) -> None:
    r = httpx.post(secured + "/v1/rewards", json=BODY, headers=headers, timeout=60)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    body = r.json()
    assert body["error"] == "unauthorized" and body["request_id"] == r.headers["x-request-id"]


def test_health_and_metrics_open_by_default(secured: str) -> None:
    assert httpx.get(secured + "/healthz").status_code == 200
    assert httpx.get(secured + "/readyz").status_code == 200
    assert httpx.get(secured + "/metrics").status_code == 200
    # The API's other routes (the schema, the docs) are behind the key like the rewards route.
    assert httpx.get(secured + "/openapi.json").status_code == 401
    assert httpx.get(secured + "/openapi.json", headers=auth(KEYS[1])).status_code == 200


async def test_health_and_metrics_can_require_the_key() -> None:
    settings = Settings(api_keys=KEYS[0], auth_health=True, auth_metrics=True)
    app = create_app(settings)  # no lifespan: these paths answer without models
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://asgi") as c:
        for path in ("/healthz", "/readyz", "/metrics"):
            assert (await c.get(path)).status_code == 401, path
        assert (await c.get("/healthz", headers=auth(KEYS[0]))).status_code == 200
        assert (await c.get("/metrics", headers=auth(KEYS[0]))).status_code == 200


def test_keys_compare_whole_tokens() -> None:
    keys = ApiKeys(["k1", "ключ-2"])
    assert keys.enabled
    assert keys.check("Bearer k1") and keys.check("bearer ключ-2") and keys.check("  Bearer   k1 ")
    assert not keys.check("Bearer k") and not keys.check("Bearer k1k1") and not keys.check(None)
    assert ApiKeys([]).check(None), "no keys configured = authentication off"


def test_body_over_the_limit_is_413(secured: str) -> None:
    big = {"groups": [{"prompt": "x" * LIMIT, "responses": ["a"], "quality": [1.0]}]}
    r = httpx.post(secured + "/v1/rewards", json=big, headers=auth(KEYS[0]), timeout=60)
    assert r.status_code == 413
    assert r.json()["error"] == "request_too_large" and "DARLING_MAX_BODY_BYTES" in r.json()["detail"]

    # Chunked: no Content-Length to check up front, so the limit is counted while the body arrives.
    payload = json.dumps(big).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 512):
            yield payload[i : i + 512]

    headers = {**auth(KEYS[0]), "Content-Type": "application/json"}
    r = httpx.post(secured + "/v1/rewards", content=chunks(), headers=headers, timeout=60)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    # Under the limit, chunked is fine.
    small = json.dumps(BODY).encode()
    r = httpx.post(secured + "/v1/rewards", content=iter([small[:10], small[10:]]), headers=headers, timeout=60)
    assert r.status_code == 200, r.text


def test_logs_are_json_with_request_ids_and_no_secrets(secured: str, logs: io.StringIO) -> None:
    httpx.post(secured + "/v1/rewards", json=BODY, headers={**auth(KEYS[1]), "X-Request-ID": "sec-test-1"}, timeout=60)
    httpx.post(secured + "/v1/rewards", json=BODY, headers=auth("a-wrong-guess"), timeout=60)
    # A careless log call that formats a header is still scrubbed.
    logging.getLogger("service.test").warning("headers were %s", {"authorization": f"Bearer {FILE_KEY}"})
    text = logs.getvalue()
    for secret in [*KEYS, FILE_KEY, "a-wrong-guess"]:
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    access = [x for x in lines if x["logger"] == "service.access" and x.get("request_id") == "sec-test-1"]
    assert len(access) == 1
    assert access[0]["status"] == "200" and access[0]["path"] == "/v1/rewards" and access[0]["duration_ms"] > 0
    assert any(REDACTED in x["message"] for x in lines if x["logger"] == "service.test")


def test_settings_do_not_print_keys() -> None:
    s = Settings(api_keys=",".join(KEYS))
    assert KEYS[0] not in repr(s) and KEYS[0] not in str(s.model_dump())
    assert s.trust_remote_code is False and LoadOptions().trust_remote_code is False


def _tiny_bert(folder: Path) -> BertForSequenceClassification:
    cfg = BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=1
    )
    model = BertForSequenceClassification(cfg)
    model.save_pretrained(folder)
    return model


def test_only_safetensors_weights_load(tmp_path: Path) -> None:
    model = _tiny_bert(tmp_path / "ok")
    loaded = load_pretrained(AutoModelForSequenceClassification, str(tmp_path / "ok"), LoadOptions(device="cpu"))
    assert torch.equal(loaded.classifier.weight, model.classifier.weight)

    # The same weights as a pickle (which can run code when unpickled): refused.
    pickled = tmp_path / "pickle"
    _tiny_bert(pickled)
    os.remove(pickled / "model.safetensors")
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        load_pretrained(AutoModelForSequenceClassification, str(pickled), LoadOptions(device="cpu"))


def test_remote_code_is_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    folder = tmp_path / "remote"
    folder.mkdir()
    run = f"open({str(marker)!r}, 'w').write('ran')\n"
    (folder / "configuration_evil.py").write_text(
        run
        + "from transformers import PretrainedConfig\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    (folder / "modeling_evil.py").write_text(
        run + "from transformers import PreTrainedModel\nclass EvilModel(PreTrainedModel):\n    pass\n"
    )
    auto_map = {
        "AutoConfig": "configuration_evil.EvilConfig",
        "AutoModelForSequenceClassification": "modeling_evil.EvilModel",
    }
    (folder / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_pretrained(AutoModelForSequenceClassification, str(folder), LoadOptions(device="cpu"))
    assert not marker.exists()

"""The one settings class: environment prefix, and the settings table of docs/configuration.md generated from it."""

from __future__ import annotations

import pytest

from scripts.settings_table import DOC, doc_block, table
from service.settings import Settings


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DARLING_PORT", "9123")
    monkeypatch.setenv("DARLING_API_KEYS", "a, b ,,c")
    s = Settings()
    assert s.port == 9123
    assert s.keys == ["a", "b", "c"]


def test_configuration_doc_lists_every_setting() -> None:
    assert doc_block(DOC.read_text()) == table(), "run: .venv/bin/python scripts/settings_table.py --write"

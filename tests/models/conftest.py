"""Tiny model folders, built once per test session (see tiny.py for how)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import tiny


@pytest.fixture(scope="session")
def modernbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.make_tiny_modernbert(tmp_path_factory.mktemp("modernbert"))


@pytest.fixture(scope="session")
def qwen3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.make_tiny_qwen3(tmp_path_factory.mktemp("qwen3"))


@pytest.fixture(scope="session")
def deberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.make_tiny_deberta(tmp_path_factory.mktemp("deberta"))


@pytest.fixture(scope="session")
def llama_rm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.make_tiny_llama_reward_model(tmp_path_factory.mktemp("llama-rm"))


@pytest.fixture(scope="session")
def llama_rm_no_template_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.make_tiny_llama_reward_model(tmp_path_factory.mktemp("llama-rm-plain"), chat_template=False)

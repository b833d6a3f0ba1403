"""Keys from Prefect Secret blocks: read at a flow's first step when the environment lacks them,
for that run only (never written into the environment)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.testing.utilities import prefect_test_harness

from ftpipe.settings import get_settings
from ftpipe.tasks.backend import SECRET_BLOCKS, flow_backend


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys absent now and removed again afterwards, whatever the hook sets."""
    for variable in ("OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"):
        monkeypatch.setenv(variable, "placeholder")  # recorded, so teardown restores absence
        monkeypatch.delenv(variable)


@flow
def which_backend() -> str:
    with flow_backend():
        settings = get_settings()
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
        return f"{settings.resolved_backend}:{key[-4:]}"


def test_no_block_no_key_means_the_local_server(no_keys: None) -> None:
    assert which_backend() == "local:"


def test_key_comes_from_the_secret_block(no_keys: None) -> None:
    Secret(value="sk-from-block-9876").save(SECRET_BLOCKS["openai_api_key"], overwrite=True)
    try:
        assert which_backend() == "openai:9876"
        assert "OPENAI_API_KEY" not in os.environ  # the run had it; nothing else inherits it
        assert get_settings().openai_api_key is None
    finally:
        Secret(value="").save(SECRET_BLOCKS["openai_api_key"], overwrite=True)


def test_environment_wins_over_the_block(no_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    Secret(value="sk-from-block-9876").save(SECRET_BLOCKS["openai_api_key"], overwrite=True)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-1234")
    try:
        assert which_backend() == "openai:1234"
        assert os.environ["OPENAI_API_KEY"] == "sk-from-env-1234"
    finally:
        Secret(value="").save(SECRET_BLOCKS["openai_api_key"], overwrite=True)

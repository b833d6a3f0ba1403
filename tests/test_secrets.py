"""Keys from Prefect Secret blocks: read by the flows' hook when the environment lacks them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from prefect import flow
from prefect.blocks.system import Secret
from prefect.testing.utilities import prefect_test_harness

from ftpipe.settings import get_settings
from ftpipe.tasks.secrets import SECRET_BLOCKS, load_secret_blocks


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys absent now and removed again afterwards, whatever the hook sets."""
    for variable in SECRET_BLOCKS:
        monkeypatch.setenv(variable, "placeholder")  # recorded, so teardown restores absence
        monkeypatch.delenv(variable)


@flow(on_running=[load_secret_blocks])
def which_backend() -> str:
    settings = get_settings()
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    return f"{settings.resolved_backend}:{key[-4:]}"


def test_no_block_no_key_means_the_local_server(no_keys: None) -> None:
    assert which_backend() == "local:"


def test_key_comes_from_the_secret_block(no_keys: None) -> None:
    Secret(value="sk-from-block-9876").save(SECRET_BLOCKS["OPENAI_API_KEY"], overwrite=True)
    try:
        assert which_backend() == "openai:9876"
    finally:
        Secret(value="").save(SECRET_BLOCKS["OPENAI_API_KEY"], overwrite=True)


def test_environment_wins_over_the_block(no_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    Secret(value="sk-from-block-9876").save(SECRET_BLOCKS["OPENAI_API_KEY"], overwrite=True)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-1234")
    try:
        assert which_backend() == "openai:1234"
        assert os.environ["OPENAI_API_KEY"] == "sk-from-env-1234"
    finally:
        Secret(value="").save(SECRET_BLOCKS["OPENAI_API_KEY"], overwrite=True)

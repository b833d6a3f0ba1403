"""The client factory picks the right endpoint and starts the local server only when needed."""

from __future__ import annotations

import logging
from pathlib import Path

import openai
import pytest

from ftpipe.client import describe_backend, make_client
from ftpipe.settings import Settings, get_settings


def test_defaults() -> None:
    settings = get_settings()
    assert settings.default_model == "gpt-4o-mini"
    assert settings.resolved_backend == "local"
    assert settings.local.job_speed == "immediate"


def test_home_defaults_to_dot_ftpipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FTPIPE_HOME")
    assert Settings().home == Path(".ftpipe")


def test_no_key_starts_local_server_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ftpipe")
    first = make_client()
    second = make_client()
    assert first.base_url.host == "127.0.0.1"
    assert first.base_url == second.base_url
    started = [r.getMessage() for r in caplog.records if "started the local" in r.getMessage()]
    assert len(started) == 1
    assert str(first.base_url).rstrip("/") in started[0]
    assert [model.id for model in first.models.list()][:1] == ["gpt-4o-mini-2024-07-18"]


def test_key_selects_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    settings = get_settings()
    client = make_client(settings)
    assert settings.resolved_backend == "openai"
    assert client.base_url == openai.OpenAI(api_key="x").base_url
    assert client.api_key == "sk-test-not-real"
    assert "sk-test" not in describe_backend(settings)
    assert "sk-test" not in repr(settings)


def test_base_url_selects_compatible_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    client = make_client()
    assert str(client.base_url) == "http://127.0.0.1:9/v1/"


def test_azure_variables_select_azure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example-resource.openai.azure.invalid")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-test-key")
    client = make_client()
    assert isinstance(client, openai.AzureOpenAI)
    assert "example-resource" in describe_backend()


def test_backend_override_forces_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    monkeypatch.setenv("FTPIPE_BACKEND", "local")
    assert make_client().base_url.host == "127.0.0.1"


def test_bad_job_speed_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTPIPE_LOCAL_JOB_SPEED", "fast")
    with pytest.raises(ValueError, match="job speed 'fast'"):
        get_settings().local  # noqa: B018


def test_every_setting_comes_through_settings_so_dotenv_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FTPIPE_DATABASE_URL, FTPIPE_ASSISTANTS_FILE and FTPIPE_EXPECTATIONS_DIR used to be read
    from os.environ directly, so a .env file never set them."""
    from ftpipe.assistants import catalogue_path
    from ftpipe.prepare.expectations import expectations_dir
    from ftpipe.registry import database_url

    for name in ("FTPIPE_DATABASE_URL", "FTPIPE_ASSISTANTS_FILE", "FTPIPE_EXPECTATIONS_DIR"):
        monkeypatch.delenv(name, raising=False)
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        f"FTPIPE_DATABASE_URL=sqlite:///{tmp_path}/jobs.sqlite3\n"
        f"FTPIPE_ASSISTANTS_FILE={tmp_path}/assistants.json\n"
        f"FTPIPE_EXPECTATIONS_DIR={tmp_path}/suites\n",
        encoding="utf-8",
    )
    from_file = Settings(_env_file=dotenv)  # type: ignore[call-arg]
    assert database_url(from_file) == f"sqlite:///{tmp_path}/jobs.sqlite3"
    monkeypatch.setattr("ftpipe.settings.get_settings", lambda: from_file)
    monkeypatch.setattr("ftpipe.assistants.get_settings", lambda: from_file)
    monkeypatch.setattr("ftpipe.prepare.expectations.get_settings", lambda: from_file)
    assert catalogue_path() == tmp_path / "assistants.json"
    assert expectations_dir() == tmp_path / "suites"


def test_the_shipped_data_files_are_the_defaults() -> None:
    from ftpipe import resources
    from ftpipe.assistants import catalogue_path
    from ftpipe.prepare.expectations import expectations_dir

    assert catalogue_path() == resources.assistants_file()
    assert expectations_dir() == resources.expectations_dir()
    assert (expectations_dir() / "column_pairs.json").is_file()


def test_a_missing_configured_catalogue_is_an_error_not_an_empty_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftpipe.assistants import load_catalogue
    from ftpipe.errors import InputError

    monkeypatch.setenv("FTPIPE_ASSISTANTS_FILE", str(tmp_path / "nope.json"))
    with pytest.raises(InputError, match=r"nope\.json"):
        load_catalogue()

"""The `ftpipe` command line, run the way a user runs it: as a process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftpipe.client import make_client
from ftpipe.registry import JobRecord, default_registry

from .conftest import SAMPLES, qa_examples, write_jsonl

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ftpipe_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ftpipe", *args]


@pytest.fixture
def local_api(isolated_env: Path) -> Iterator[tuple[str, Path]]:
    """`ftpipe local-api --port PORT` as a separate process, until the test ends."""
    port = free_port()
    process = subprocess.Popen(
        ftpipe_command("local-api", "--port", str(port)),
        env={**os.environ, "FTPIPE_HOME": str(isolated_env)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marker = isolated_env / "local_api" / "server.json"
    deadline = time.monotonic() + 60
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"ftpipe local-api did not start: {process.communicate()[0]}")
        time.sleep(0.1)
    yield json.loads(marker.read_text())["url"], isolated_env
    process.terminate()
    process.wait(timeout=30)
    assert not marker.exists(), "a stopped server must take back its announcement"


@pytest.mark.slow
def test_sdk_only_script_against_local_api(local_api: tuple[str, Path]) -> None:
    """A script that imports nothing but `openai` fine-tunes and gets the trained reply."""
    url, _ = local_api
    env = {**os.environ, "OPENAI_BASE_URL": f"{url}/v1", "OPENAI_API_KEY": "any-local-key"}
    sample = SAMPLES / "ferry_support.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "ftpipe.walkthrough", str(sample)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout
    assert "checkpoint ft:gpt-4o-mini-2024-07-18:local:walkthrough:" in result.stdout
    trained = "'The first weekday ferry leaves at 06:15 from Pier 3.'"
    assert f"it replied {trained} (trained reply: {trained})" in result.stdout


@pytest.mark.slow
def test_other_processes_find_the_announced_server(local_api: tuple[str, Path]) -> None:
    url, home = local_api
    client = make_client()
    assert str(client.base_url).startswith(url)
    uploaded = client.files.create(
        file=write_jsonl(home / "t.jsonl", qa_examples(10)).open("rb"), purpose="fine-tune"
    )
    assert uploaded.id in {file.id for file in client.files.list()}


def test_local_api_refuses_non_loopback(isolated_env: Path) -> None:
    result = subprocess.run(
        ftpipe_command("local-api", "--host", "0.0.0.0", "--port", "0"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "loopback only" in result.stdout + result.stderr


@pytest.mark.slow
def test_quickstart_runs_on_embedded_defaults(isolated_env: Path) -> None:
    result = subprocess.run(
        ftpipe_command("quickstart"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "started the local OpenAI-compatible server at http://127.0.0.1:" in result.stderr
    assert "fine-tuned model ft:gpt-4o-mini-2024-07-18:local:walkthrough:" in result.stdout


def test_openai_backend_without_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTPIPE_BACKEND", "openai")
    with pytest.raises(ValueError, match="needs OPENAI_API_KEY"):
        make_client()


def test_quickstart_reports_a_failed_job_plainly(isolated_env: Path, tmp_path: Path) -> None:
    nine = write_jsonl(tmp_path / "nine.jsonl", qa_examples(9))
    result = subprocess.run(
        ftpipe_command("quickstart", str(nine)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "the file has 9 examples; at least 10 are required" in result.stderr  # errors there
    assert "at least 10 are required" not in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_jobs_list_in_a_narrow_terminal_keeps_every_id_whole(isolated_env: Path) -> None:
    """Ids are what people copy: never folded, cut or turned into emoji (":x:")."""
    registry = default_registry()
    jobs = {
        f"ftjob-{index}abcdefghijklmnopqrstuvw": f"ft:gpt-4o-mini-2024-07-18:local:x:run{index}"
        for index in range(2)
    }
    for job_id, model in jobs.items():
        registry.record(
            JobRecord(job_id, "succeeded", "gpt-4o-mini", fine_tuned_model=model, created_at=1)
        )
    for columns in ("60", "200"):
        env = {**os.environ, "COLUMNS": columns}
        result = subprocess.run(
            ftpipe_command("jobs", "list"), env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        words = set(result.stdout.replace("│", " ").split())
        assert set(jobs) | set(jobs.values()) <= words, result.stdout
        assert "1970-01-01 00:00" in result.stdout


def test_jobs_show_prints_times_as_iso_dates(isolated_env: Path) -> None:
    from ftpipe.cli import _job_row

    record = JobRecord("ftjob-1", "succeeded", "gpt-4o-mini", created_at=86400, finished_at=None)
    row = _job_row(record)
    assert (row["created_at"], row["finished_at"]) == ("1970-01-02T00:00:00Z", None)


def test_ftpipe_turns_prefect_telemetry_off_unless_asked(isolated_env: Path) -> None:
    """Offline, a Prefect server that reports usage logs "Failed to send telemetry"."""
    code = (
        "from typer.testing import CliRunner; from ftpipe.cli import app; "
        "assert CliRunner().invoke(app, ['sentiment', 'fine']).exit_code == 0; "
        "from prefect.settings import get_current_settings; "
        "import os; print(get_current_settings().server.analytics_enabled, "
        "os.environ['DO_NOT_TRACK'])"
    )
    outside = {k: v for k, v in os.environ.items() if k not in TELEMETRY_VARS}
    for env, expected in ((outside, "False 1"), ({**outside, **OPTED_IN}, "True 0")):
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.stdout.strip() == expected, done.stderr


TELEMETRY_VARS = ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")
OPTED_IN = {"PREFECT_SERVER_ANALYTICS_ENABLED": "true", "DO_NOT_TRACK": "0"}

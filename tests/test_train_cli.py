"""`ftpipe train` and `ftpipe jobs ...`, run the way a user runs them: as processes.

Each `train` process imports Prefect and runs a flow (seconds each), so the module runs every
command once, several at a time, against one temporary Prefect server, and the tests read the
outcomes. Each FTPIPE_HOME gets the embedded local server, started inside each process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from ftpipe.local_api.server import start_in_thread
from ftpipe.registry import Registry
from ftpipe.settings import LocalApiSettings

REPO = Path(__file__).resolve().parents[1]
JOB_LINE = re.compile(r"^job (ftjob-\S+): (\w+)(.*)$", re.MULTILINE)
MODEL_LINE = re.compile(r"^fine-tuned model: (ft:\S+)$", re.MULTILINE)
ALREADY = "already launched for this dataset; --force makes a new one"
UNKNOWN = "ftjob-unknown"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PROGRESS = re.compile(r"^(ftjob-\S+) succeeded .* (\d+)/\2 loss \d+\.\d{4}$", re.MULTILINE)

pytestmark = pytest.mark.slow


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def last_error(self) -> str:
        """The last line on stderr: where an error is stated, once."""
        return self.stderr.strip().splitlines()[-1]

    @property
    def job(self) -> tuple[str, str, str]:
        """(job id, status, note) from the `job ...: status` line."""
        found = JOB_LINE.search(self.stdout)
        assert found, self.output
        return found.group(1), found.group(2), found.group(3)

    @property
    def model(self) -> str:
        found = MODEL_LINE.search(self.stdout)
        assert found, self.output
        return found.group(1)


@dataclass
class Runs:
    homes: dict[str, Path]
    ran: dict[str, Ran]

    def __getitem__(self, name: str) -> Ran:
        return self.ran[name]


def environment(home: Path, prefect_home: Path, api_url: str, **extra: str) -> dict[str, str]:
    """The caller's environment without ftpipe, OpenAI or Prefect settings, plus ours."""
    prefixes = ("FTPIPE_", "OPENAI_", "AZURE_OPENAI_", "PREFECT_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    return env | {
        "FTPIPE_ENV_FILE": os.devnull,
        "FTPIPE_LOCAL_ENGINE": "stand-in",  # pipeline tests; real training has tests of its own
        "FTPIPE_HOME": str(home),
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
        **extra,
    }


def run_together(commands: dict[str, tuple[list[str], dict[str, str]]]) -> dict[str, Ran]:
    """Start every command, then wait for all of them."""
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "ftpipe", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, env) in commands.items()
    }
    ran = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=240)
        ran[name] = Ran(process.returncode, stdout, stderr)
    return ran


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("train-cli")
    prefect_home = root / "prefect"
    prefect_home.mkdir()
    names = ("csv", "dialogues", "refused", "nowait", "denied")
    homes = {name: root / f"home-{name}" for name in names}
    guarded = start_in_thread(root / "guarded", local=LocalApiSettings(api_key="right-key"))
    with prefect_test_harness(server_startup_timeout=120):
        url = str(PREFECT_API_URL.value())
        env = {name: environment(home, prefect_home, url) for name, home in homes.items()}
        env["refused"]["FTPIPE_LOCAL_REFUSE_FINE_TUNING"] = "true"
        env["denied"] |= {"OPENAI_BASE_URL": guarded.base_url, "OPENAI_API_KEY": "wrong-key"}
        csv, jsonl = env["csv"], "data/samples/ferry_support.jsonl"
        nowait = ["train", jsonl, "--epochs", "2", "--out", str(root / "out-nowait")]
        ran = run_together(
            {
                "first": (["train", "data/samples/csv", "--wait"], csv),
                "refused": (["train", jsonl], env["refused"]),
                "nowait": (nowait, env["nowait"]),
                "denied-train": (
                    ["train", jsonl, "--out", str(root / "out-denied")],
                    env["denied"],
                ),
                "denied-models": (["models"], env["denied"]),
            }
        )
        first = ran["first"].job[0] if ran["first"].returncode == 0 else "ftjob-missing"
        ran |= run_together(
            {
                "again": (["train", "data/samples/csv", "--wait"], csv),
                "show": (["jobs", "show", first], csv),
                "events": (["jobs", "events", first], csv),
                "cancel": (["jobs", "cancel", first], csv),
                "unknown": (["jobs", "show", UNKNOWN], csv),
                "eval": (["eval", first], csv),
            }
        )
        dialogues = ["train", "data/samples/dialogues", "--wait", "--redact"]
        dialogues += ["--out", str(root / "out-dialogues")]
        ran |= run_together(
            {
                "force": (["train", "data/samples/csv", "--wait", "--force"], csv),
                "dialogues": (dialogues, env["dialogues"]),
            }
        )
        ran |= run_together(
            {
                "list": (["jobs", "list", "--json"], csv),
                "poll": (["jobs", "poll"], csv),
                "narrow": (["jobs", "list"], csv | {"COLUMNS": "60"}),
            }
        )
    guarded.stop()
    yield Runs(homes, ran)


def assert_no_traceback(run: Ran) -> None:
    assert "Traceback" not in run.output, run.output


def test_train_waits_and_prints_the_job_and_model(runs: Runs) -> None:
    run = runs["first"]
    assert run.returncode == 0, run.output
    _, status, note = run.job
    assert status == "succeeded"
    assert note == ""
    assert run.model.startswith("ft:gpt-4o-mini-2024-07-18:local:")
    assert_no_traceback(run)


def test_train_wait_shows_one_progress_bar_not_a_line_per_step(runs: Runs) -> None:
    run = runs["first"]
    assert run.returncode == 0, run.output
    [bar] = PROGRESS.findall(run.stderr)  # steps done of all, and the latest training loss
    assert bar[0] == run.job[0]
    assert int(bar[1]) > 1
    assert "Step 1/" not in run.output  # the job's events are not logged one by one
    assert "training loss=" not in run.output


def test_train_without_wait_says_how_to_follow_the_job(runs: Runs) -> None:
    run = runs["nowait"]
    assert run.returncode == 0, run.output
    job_id, _, _ = run.job
    assert f"ftpipe jobs show {job_id}" in run.stdout
    assert "ftpipe jobs poll" in run.stdout


def test_train_estimates_the_cost_for_the_epochs_asked_for(runs: Runs) -> None:
    run = runs["nowait"]
    assert run.returncode == 0, run.output
    [line] = [line for line in run.stdout.splitlines() if line.startswith("estimated training")]
    assert " x 2 epochs = " in line
    record = Registry(f"sqlite:///{runs.homes['nowait'].resolve()}/registry.sqlite3").jobs()[0]
    assert record.options["n_epochs"] == 2


def test_train_redacts_when_asked(runs: Runs) -> None:
    run = runs["dialogues"]
    assert run.returncode == 0, run.output
    [report] = (runs.homes["dialogues"].parent / "out-dialogues").glob("*/report.json")
    assert json.loads(report.read_text())["options"]["redact"] is True


def test_an_api_error_is_one_line_on_stderr_without_a_traceback(runs: Runs) -> None:
    for name, prefix in (
        ("denied-train", "ftpipe train: 401 from "),
        ("denied-models", "ftpipe: 401 from "),
    ):
        run = runs[name]
        assert run.returncode == 1, run.output
        assert run.last_error.startswith(prefix), run.output
        assert "Incorrect API key" in run.last_error
        assert_no_traceback(run)
        assert "401" not in run.stdout


def test_jobs_list_in_a_narrow_terminal_prints_every_id_whole(runs: Runs) -> None:
    run = runs["narrow"]
    assert run.returncode == 0, run.output
    words = set(run.stdout.split())
    for job in json.loads(runs["list"].stdout):
        assert job["job_id"] in words
        assert job["fine_tuned_model"] in words


def test_train_again_reuses_the_job(runs: Runs) -> None:
    first, again = runs["first"], runs["again"]
    assert again.returncode == 0, again.output
    job_id, status, note = again.job
    assert job_id == first.job[0]
    assert status == "succeeded"
    assert ALREADY in note
    assert again.model == first.model


def test_train_force_launches_a_new_job(runs: Runs) -> None:
    forced = runs["force"]
    assert forced.returncode == 0, forced.output
    job_id, status, note = forced.job
    assert job_id != runs["first"].job[0]
    assert status == "succeeded"
    assert ALREADY not in note
    assert forced.model != runs["first"].model


def test_jobs_list_and_job_ids_json_show_both_jobs(runs: Runs) -> None:
    listed = runs["list"]
    assert listed.returncode == 0, listed.output
    jobs = json.loads(listed.stdout)
    first, forced = runs["first"].job[0], runs["force"].job[0]
    assert [job["job_id"] for job in jobs] == [forced, first]  # newest first
    assert {job["status"] for job in jobs} == {"succeeded"}
    assert {job["fine_tuned_model"] for job in jobs} == {runs["first"].model, runs["force"].model}
    assert len({job["dataset_id"] for job in jobs}) == 1
    assert all(job["source_paths"] == ["data/samples/csv"] for job in jobs)
    entries = json.loads((runs.homes["csv"] / "job_ids.json").read_text())
    assert [entry["id"] for entry in entries] == [first, forced]  # oldest first
    assert all(set(entry) == {"id", "description", "created"} for entry in entries)


def test_jobs_show_prints_the_refreshed_job(runs: Runs) -> None:
    shown = runs["show"]
    assert shown.returncode == 0, shown.output
    job = json.loads(shown.stdout)
    assert job["job_id"] == runs["first"].job[0]
    assert job["status"] == "succeeded"
    assert job["fine_tuned_model"] == runs["first"].model
    assert job["trained_tokens"] > 0
    assert ISO_UTC.match(job["created_at"]) and ISO_UTC.match(job["finished_at"])


def test_jobs_events_prints_the_history_oldest_first(runs: Runs) -> None:
    events = runs["events"]
    assert events.returncode == 0, events.output
    lines = events.stdout.strip().splitlines()
    assert "Checkpoint created at step" in "\n".join(lines)
    assert lines[-2].endswith(f"New fine-tuned model created: {runs['first'].model}")
    assert lines[-1].endswith("The job has successfully completed")


def test_jobs_poll_has_nothing_unfinished(runs: Runs) -> None:
    polled = runs["poll"]
    assert polled.returncode == 0, polled.output
    assert polled.stdout.strip() == "no unfinished jobs"


def test_cancelling_a_finished_job_is_refused_clearly(runs: Runs) -> None:
    cancel = runs["cancel"]
    assert cancel.returncode == 1, cancel.output
    assert cancel.stdout == ""
    line = cancel.last_error  # after ftpipe's INFO log lines
    assert line.startswith("ftpipe jobs cancel:")
    assert runs["first"].job[0] in line
    assert "already succeeded" in line
    assert_no_traceback(cancel)


def test_showing_an_unknown_job_names_it_in_one_line(runs: Runs) -> None:
    unknown = runs["unknown"]
    assert unknown.returncode == 1, unknown.output
    assert unknown.stdout == ""
    line = unknown.last_error
    assert UNKNOWN in line
    assert line.startswith("ftpipe jobs: no fine-tuning job")
    assert_no_traceback(unknown)


def test_train_on_dialogues(runs: Runs) -> None:
    run = runs["dialogues"]
    assert run.returncode == 0, run.output
    assert run.job[1] == "succeeded"
    assert run.model.startswith("ft:gpt-4o-mini")
    assert run.job[0] != runs["first"].job[0]


def test_a_refused_launch_exits_1_with_a_plain_message(runs: Runs) -> None:
    refused = runs["refused"]
    assert refused.returncode == 1, refused.output
    assert "refused" not in refused.stdout
    line = refused.last_error
    assert line.startswith("ftpipe train: fine-tuning:")
    for words in ("refused to create a fine-tuning job", "wound down", "OPENAI_BASE_URL"):
        assert words in line
    home = runs.homes["refused"].resolve()
    assert Registry(f"sqlite:///{home}/registry.sqlite3").jobs() == []


def test_a_refused_launch_prints_no_traceback(runs: Runs) -> None:
    assert_no_traceback(runs["refused"])


def verdict(run: Ran) -> str:
    return next(line for line in run.stdout.splitlines() if line.startswith("verdict: "))


def test_train_wait_ends_with_the_evaluation_and_eval_reproduces_it(runs: Runs) -> None:
    first, again = runs["first"], runs["eval"]
    assert "held-out evaluation (2 examples)" in first.stdout
    assert "| tuned - base" in first.stdout.replace("┃", "|")
    assert again.returncode == 0, again.stderr
    assert verdict(again) == verdict(first)
    assert verdict(first).startswith(("verdict: better.", "verdict: no clear difference."))
    assert_no_traceback(again)

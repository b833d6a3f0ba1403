"""`ftpipe ask`, `sentiment`, `models`, `assistants`, `describe-image` and `demo`, run the way a
user runs them: as processes, each with its own FTPIPE_HOME (and so its own embedded server).

The commands run once, several at a time, in a module fixture; `demo` runs the fine-tune flows,
so every process gets the PREFECT_API_URL of one temporary Prefect server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from ftpipe.dialogue_log import DialogueLog
from tests.conftest import SAMPLES

REPO = Path(__file__).resolve().parents[1]
CATALOGUE_IDS = [
    entry["id"]
    for entry in json.loads((REPO / "data" / "assistants.json").read_text("utf-8"))["assistants"]
]
STAND_IN = "(local stand-in for gpt-4o-mini)"
QUESTION = 'Can I bring my "folding" bike & a dog?'
INSTRUCTION = 'Answer "briefly".'

pytestmark = pytest.mark.slow


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    home: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def lines(self) -> list[str]:
        return self.stdout.strip().splitlines()

    @property
    def errors(self) -> list[str]:
        return self.stderr.strip().splitlines()


def environment(home: Path, prefect_home: Path, api_url: str) -> dict[str, str]:
    """The caller's environment without ftpipe, OpenAI or Prefect settings, plus ours."""
    prefixes = ("FTPIPE_", "OPENAI_", "AZURE_OPENAI_", "PREFECT_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    return env | {
        "FTPIPE_ENV_FILE": os.devnull,
        "FTPIPE_LOCAL_ENGINE": "stand-in",  # pipeline tests; real training has tests of its own
        "FTPIPE_HOME": str(home),
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api_url,
    }


def run_together(commands: dict[str, list[str]], root: Path, api_url: str) -> dict[str, Ran]:
    """Start every command, each with its own home and working directory (the demo's flows
    write data/processed there, and it must find its samples from anywhere); wait for all."""
    started = {}
    for name, args in commands.items():
        home, cwd = root / f"home-{name}", root / f"cwd-{name}"
        cwd.mkdir()
        started[name] = (
            home,
            subprocess.Popen(
                [sys.executable, "-m", "ftpipe", *args],
                cwd=cwd,
                env=environment(home, root / "prefect", api_url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
    ran = {}
    for name, (home, process) in started.items():
        stdout, stderr = process.communicate(timeout=240)
        ran[name] = Ran(process.returncode, stdout, stderr, home)
    return ran


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Ran]]:
    root = tmp_path_factory.mktemp("chat-cli")
    (root / "prefect").mkdir()
    not_an_image = root / "notes.png"
    not_an_image.write_text("these are notes, not pixels\n", encoding="utf-8")
    commands = {
        "ask": ["ask", QUESTION, "--system", INSTRUCTION],
        "ask-no-log": ["ask", "Is the café open?", "--no-log", "--model", "gpt-4o"],
        "ask-unknown-model": ["ask", "Hello?", "--model", "no-such-model"],
        "positive": ["sentiment", "I love this ferry, the crew were wonderful!"],
        "negative": ["sentiment", "This is terrible, I hate waiting in the rain."],
        "neutral": ["sentiment", "The ferry leaves from pier 3."],
        "models": ["models"],
        "assistants": ["assistants"],
        "png-sdk": ["describe-image", str(SAMPLES / "images" / "harbour.png")],
        "jpeg-http": ["describe-image", str(SAMPLES / "images" / "sunset.jpg"), "--raw-http"],
        "bad-sdk": ["describe-image", str(not_an_image)],
        "bad-http": ["describe-image", str(not_an_image), "--raw-http"],
        "demo": ["demo"],
    }
    with prefect_test_harness(server_startup_timeout=120):
        url = str(PREFECT_API_URL.value())
        yield run_together(commands, root, url)


def assert_ok(run: Ran) -> None:
    assert run.returncode == 0, run.output
    assert "Traceback" not in run.output, run.output


def test_ask_prints_the_reply_and_logs_the_exchange(runs: dict[str, Ran]) -> None:
    run = runs["ask"]
    assert_ok(run)
    [reply] = run.lines
    instructed = f'System instruction received: "{INSTRUCTION}".'
    assert reply == f"{STAND_IN} {instructed} You asked: {QUESTION}"
    turns = DialogueLog(run.home / "dialogues" / "dialogues.json").read()
    assert [(turn["role"], turn["content"]) for turn in turns] == [
        ("system", INSTRUCTION),
        ("user", QUESTION),
        ("assistant", reply),
    ]
    assert turns[-1]["sentiment"] in ("positive", "negative", "neutral")


def test_ask_with_no_log_leaves_no_dialogue_log(runs: dict[str, Ran]) -> None:
    run = runs["ask-no-log"]
    assert_ok(run)
    assert run.lines == ["(local stand-in for gpt-4o) You asked: Is the café open?"]
    assert not (run.home / "dialogues" / "dialogues.json").exists()


def test_ask_with_an_unknown_model_exits_1_in_one_line(runs: dict[str, Ran]) -> None:
    run = runs["ask-unknown-model"]
    assert run.returncode == 1, run.output
    line = run.errors[-1]  # errors go to stderr, one line, after ftpipe's INFO log lines
    assert run.stdout == ""
    assert line.startswith("ftpipe ask: 404 from ")
    assert sum("ftpipe ask" in each for each in run.errors) == 1
    assert "no-such-model" in line
    assert "Traceback" not in run.output


@pytest.mark.parametrize("label", ["positive", "negative", "neutral"])
def test_sentiment_prints_the_label(runs: dict[str, Ran], label: str) -> None:
    run = runs[label]
    assert_ok(run)
    assert run.lines == [label]


def test_models_lists_the_default_model(runs: dict[str, Ran]) -> None:
    run = runs["models"]
    assert_ok(run)
    assert "gpt-4o-mini" in run.lines
    assert len(run.lines) == len(set(run.lines))


def test_assistants_lists_the_catalogue(runs: dict[str, Ran]) -> None:
    run = runs["assistants"]
    assert_ok(run)
    rows = [line.split("\t") for line in run.lines]
    assert [row[0] for row in rows[: len(CATALOGUE_IDS)]] == CATALOGUE_IDS
    assert all(len(row) == 4 and row[3] == "(catalogue)" for row in rows)


@pytest.mark.parametrize(
    ("name", "size"), [("png-sdk", "320x200 PNG"), ("jpeg-http", "160x120 JPEG")]
)
def test_describe_image_prints_a_description(runs: dict[str, Ran], name: str, size: str) -> None:
    run = runs[name]
    assert_ok(run)
    [description] = run.lines
    assert description.startswith(STAND_IN)
    assert size in description


@pytest.mark.parametrize("name", ["bad-sdk", "bad-http"])
def test_describe_image_of_a_text_file_exits_1_in_one_line(runs: dict[str, Ran], name: str) -> None:
    run = runs[name]
    assert run.returncode == 1, run.output
    line = run.errors[-1]
    assert run.stdout == ""
    assert line.startswith("ftpipe describe-image:")
    assert sum("ftpipe describe-image" in each for each in run.errors) == 1
    assert "notes.png" in line
    assert "not an image" in line
    assert "Traceback" not in run.output


def test_demo_prints_every_step(runs: dict[str, Ran]) -> None:
    run = runs["demo"]
    assert_ok(run)
    out = run.stdout
    assert out.startswith("models: gpt-4o-mini")
    assert f"assistants: {', '.join(CATALOGUE_IDS)}" in out
    assert f"first reply: {STAND_IN}" in out
    dynamic = next(line for line in run.lines if line.startswith("dynamic_train job"))
    trained = next(line for line in run.lines if line.startswith("train job"))
    dynamic_id, train_id = dynamic.split()[-1], trained.split()[-1]
    assert dynamic_id.startswith("ftjob-") and train_id.startswith("ftjob-")
    assert dynamic_id != train_id
    job_ids = run.home / "job_ids.json"
    assert f"saved job id {train_id} in {job_ids}" in out
    assert train_id in [entry["id"] for entry in json.loads(job_ids.read_text("utf-8"))]
    image = next(line for line in run.lines if line.startswith("image harbour.png:"))
    assert "320x200 PNG" in image

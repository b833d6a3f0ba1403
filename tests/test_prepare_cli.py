"""`ftpipe prepare`, run the way a user runs it: as a process.

Each process spends seconds importing pyarrow and Great Expectations, so the module starts all
of its commands at once and the tests then read their outcomes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ftpipe.cli import app
from ftpipe.finetune.options import LaunchOptions
from ftpipe.prepare.options import PrepareOptions
from tests.conftest import SAMPLES

REPO = Path(__file__).resolve().parents[1]
RAGGED_ROWS = ["q1,a1", "q2,a2,extra", "q3,a3"]
RAGGED_PROBLEM = "line 3 has 3 fields, expected 2 ('q2,a2,extra'); quote cells that contain the "
RAGGED_PROBLEM += "delimiter"


@dataclass
class Ran:
    out: Path
    returncode: int
    stdout: str
    stderr: str
    source: Path | None = None

    @property
    def lines(self) -> list[str]:
        """Every non-blank line the command wrote, stdout and stderr together."""
        return [line for line in (self.stdout + self.stderr).splitlines() if line.strip()]

    def folder(self) -> Path:
        [folder] = list(self.out.iterdir())
        return folder


def write_rows(path: Path, rows: list[str]) -> Path:
    path.write_text("question,answer\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def clean_env(home: Path) -> dict[str, str]:
    """The caller's environment without any ftpipe or OpenAI settings."""
    prefixes = ("FTPIPE_", "OPENAI_", "AZURE_OPENAI_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    # the stand-in engine, so the default model stays gpt-4o-mini (as in the test session)
    return env | {
        "FTPIPE_ENV_FILE": os.devnull,
        "FTPIPE_HOME": str(home),
        "FTPIPE_LOCAL_ENGINE": "stand-in",
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Ran]:
    root = tmp_path_factory.mktemp("prepare-cli")
    ragged = write_rows(root / "ragged.csv", RAGGED_ROWS)
    rejects = write_rows(
        root / "faq.csv",
        [f"Question {i}?,Answer {i}." for i in range(20)] + ["Q1?,", "Q2?,", "Q3?,"],
    )
    reviews = SAMPLES / "reviews" / "reviews.csv"
    commands: dict[str, tuple[Path | None, list[str | Path]]] = {
        "sample": (None, [SAMPLES / "csv"]),
        "options": (
            reviews,
            [
                *(reviews, "--label", "negative", "--system", "Rate the review."),
                *("--validation-share", "0", "--seed", "3", "--max-rejects", "0"),
            ],
        ),
        "ragged": (ragged, [ragged]),
        "rejects": (rejects, [rejects]),
    }
    env = clean_env(root / "home")
    started = {}
    for name, (source, args) in commands.items():
        out = root / f"out-{name}"
        command = [sys.executable, "-m", "ftpipe", "prepare", *map(str, args), "--out", str(out)]
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started[name] = (source, out, process)
    ran = {}
    for name, (source, out, process) in started.items():
        stdout, stderr = process.communicate(timeout=180)
        ran[name] = Ran(out, process.returncode, stdout, stderr, source)
    return ran


def test_prepare_sample_folder(runs: dict[str, Ran]) -> None:
    run = runs["sample"]
    assert run.returncode == 0, run.stdout + run.stderr
    folder = run.folder()
    dataset_id = folder.name
    assert (
        f"dataset {dataset_id}: 20 examples (18 train, 2 validation), 1 rows rejected, "
        "1 duplicates dropped"
    ) in run.stdout
    assert "estimated training cost on gpt-4o-mini-2024-07-18" in run.stdout
    assert "billed tokens" in run.stdout
    assert f"outputs in {folder}" in run.stdout
    assert run.stderr.strip() == ""
    assert sorted(p.name for p in folder.iterdir()) == [
        "data_docs",  # GX Data Docs of the run's validation
        "rejects.csv",
        "report.json",
        "report.md",
        "train.jsonl",
        "validation.jsonl",
    ]
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["dataset_id"] == dataset_id
    assert report["options"]["model"] == "gpt-4o-mini"


def test_prepare_options_reach_the_pipeline(runs: dict[str, Ran]) -> None:
    run = runs["options"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert "120 examples (120 train, 0 validation)" in run.stdout
    folder = run.folder()
    options = json.loads((folder / "report.json").read_text(encoding="utf-8"))["options"]
    assert options["label"] == "negative"
    assert options["system_instruction"] == "Rate the review."
    assert (options["validation_share"], options["seed"], options["max_rejects"]) == (0.0, 3, 0)
    first = json.loads((folder / "train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first["messages"][0] == {"role": "system", "content": "Rate the review."}
    assert first["messages"][-1] == {"role": "assistant", "content": "negative"}
    assert not (folder / "validation.jsonl").exists()


def test_bad_file_exits_1_with_one_line_naming_it(runs: dict[str, Ran]) -> None:
    run = runs["ragged"]
    assert run.returncode == 1
    assert run.lines == [f"ftpipe prepare: {run.source}: {RAGGED_PROBLEM}"]
    assert "Traceback" not in run.stderr
    assert not run.out.exists() or list(run.out.iterdir()) == []


def test_too_many_rejects_exits_1_naming_rejects_csv(runs: dict[str, Ran]) -> None:
    run = runs["rejects"]
    assert run.returncode == 1
    [line] = run.lines
    folder = run.folder()
    assert line.startswith(f"ftpipe prepare: dataset {folder.name}: 3 of 23 rows were rejected")
    assert line.endswith(f"see {folder / 'rejects.csv'}")
    assert (folder / "rejects.csv").is_file()
    assert (folder / "report.json").is_file()
    assert not (folder / "train.jsonl").exists()


@pytest.mark.parametrize(
    ("name", "row"),
    [
        pytest.param("plain.csv", "q2,a2,extra", id="plain"),
        pytest.param("export[v2].csv", "q2,a2,extra", id="brackets-in-name"),
        pytest.param("notes.csv", "see [b]here[/b],a2,extra", id="tag-in-row"),
        pytest.param("notes.csv", "closing [/] tag,a2,extra", id="closing-tag-in-row"),
    ],
)
def test_error_message_is_printed_verbatim(tmp_path: Path, name: str, row: str) -> None:
    """File names and quoted rows are not Rich markup: "[...]" is printed as it is.

    In-process (typer's runner), so each case costs no new interpreter.
    """
    source = write_rows(tmp_path / name, ["q1,a1", row])
    result = CliRunner().invoke(app, ["prepare", str(source), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""  # errors go to stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    fields = row.count(",") + 1
    assert lines == [
        f"ftpipe prepare: {source}: line 3 has {fields} fields, expected 2 ({row!r}); "
        "quote cells that contain the delimiter"
    ]


SPELLED = {  # fields whose flag is not --field-name; every other one is
    "system_instruction": "--system",
    "column_map": "--column",
    "sentiments": "--sentiment",
    "n_epochs": "--epochs",
}


def options_of(command: str) -> dict[str, Any]:
    """The command's options as typer builds them for click, by flag."""
    group: Any = typer.main.get_command(app)
    params = group.commands[command].params
    return {p.opts[0]: p for p in params if p.param_type_name == "option"}


def flag(name: str) -> str:
    return SPELLED.get(name, "--" + name.replace("_", "-"))


@pytest.mark.parametrize("command", ["prepare", "train"])
def test_every_prepare_option_is_a_flag_made_from_the_model(command: str) -> None:
    """The flags come from PrepareOptions, so the CLI and the flows cannot drift."""
    options = options_of(command)
    for name, field in PrepareOptions.model_fields.items():
        option = options[flag(name)]
        if name not in ("column_map", "sentiments"):  # these two explain their own spelling
            assert option.help == field.description, name
        if name != "model":  # the CLI's default model is FTPIPE_DEFAULT_MODEL
            assert option.default == field.default, name


def test_train_has_every_training_option_and_keeps_the_split_seed_apart() -> None:
    options = options_of("train")
    for name, field in LaunchOptions.model_fields.items():
        if name not in ("model", "seed"):
            assert options[flag(name)].help == field.description, name
    assert "--training-seed" in options  # --seed is the split's, as in `prepare`
    assert options["--seed"].default == PrepareOptions.model_fields["seed"].default
    for shared in ("--redact", "--truncate", "--max-rejects", "--csv-text", "--out"):
        assert shared in options


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        ("prepare", ["--column", "user=Q"], "invalid option --column: Value error, column_map"),
        ("prepare", ["--sentiment", "happy"], "invalid option --sentiment: Input should be"),
        ("prepare", ["--validation-share", "1"], "invalid option --validation-share:"),
        ("train", ["--suffix", "x" * 65], "invalid option --suffix: String should have at most 64"),
        ("train", ["--max-rejects", "-1"], "invalid option --max-rejects:"),
    ],
)
def test_an_invalid_option_is_one_line_on_stderr_before_any_work(
    tmp_path: Path, command: str, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [command, str(SAMPLES / "csv"), *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"ftpipe {command}: {message}")
    assert not out.exists()

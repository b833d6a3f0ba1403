"""Bad input, second round: options, model names, settings and paths are checked before any
input is read, each as one line (exit 2 from the CLI), in the CLI, the flows and the facade.

In-process (typer's runner, direct calls) wherever that shows the behaviour; the two flow runs
share one temporary Prefect server that only their test starts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prefect.exceptions import ParameterTypeError
from typer.testing import CliRunner

from ftpipe import catalog
from ftpipe.cli import app
from ftpipe.errors import InputError
from ftpipe.finetune.options import LaunchOptions
from ftpipe.flows.finetune import TrainingOptions, finetune, finetune_dialogues
from ftpipe.flows.prepare_dataset import prepare_dataset
from ftpipe.openai_model import FacadeError, OpenAIModel
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import discard_run, plan_run
from ftpipe.settings import get_settings, unusable_folder

MISSING = "no-such-input.csv"  # an option error must win over it: no input is looked at first
ROWS = "".join(f"Question {i}?,Answer {i}.\n" for i in range(12))
CSV_TEXT = "question,answer\n" + ROWS


def invoke(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert "Traceback" not in result.output
    return result.exit_code, result.stdout, result.stderr


def one_line(stderr: str) -> str:
    [line] = [line for line in stderr.splitlines() if line.strip()]
    return line


def faq(path: Path) -> Path:
    path.write_text(CSV_TEXT, encoding="utf-8")
    return path


# --- kind 3: options and model names, checked before the work ---------------------------------


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        (
            "prepare",
            ["--model", "gpt-4o-mnii"],
            "--model: Value error, unknown model 'gpt-4o-mnii'",
        ),
        ("prepare", ["--model", "gpt-4"], "'gpt-4' cannot be fine-tuned; models that can: "),
        ("prepare", ["--model", "ft:"], "'ft:' is not a fine-tuned model id"),
        ("prepare", ["--model", "ft:gpt-5-ultra:o:s:i"], "unknown fine-tuned model base"),
        ("prepare", ["--encoding", "klingon"], "--encoding: Value error, unknown text encoding"),
        ("prepare", ["--encoding", "base64"], "'base64' is not a text encoding"),
        ("prepare", ["--text-column", " "], "--text-column: Value error, names no column"),
        ("train", ["--suffix", "x" * 100], "--suffix: String should have at most 64 characters"),
        ("train", ["--suffix", "my model"], "--suffix: Value error, may hold only letters"),
        ("train", ["--suffix", "a:b"], "(it becomes part of the model name"),
        ("train", ["--epochs", "0"], "--epochs: Value error, expected 'auto' or a whole number"),
        ("train", ["--epochs", "-3"], "from 1 to 50, got '-3'"),
        ("train", ["--epochs", "51"], "from 1 to 50, got '51'"),
        ("train", ["--epochs", "2.5"], "from 1 to 50, got '2.5'"),
        ("train", ["--batch-size", "0"], "--batch-size: Value error, expected 'auto' or a whole"),
        ("train", ["--batch-size", "257"], "from 1 to 256, got '257'"),
        ("train", ["--learning-rate-multiplier", "0"], "expected 'auto' or a number above 0"),
        ("train", ["--learning-rate-multiplier", "-1"], "a number above 0, got '-1'"),
        ("train", ["--learning-rate-multiplier", "nan"], "a number above 0, got 'nan'"),
        ("train", ["--training-seed", "-1"], "--training-seed: Input should be greater than"),
    ],
)
def test_a_bad_option_is_one_line_exit_2_before_any_input_is_read(
    tmp_path: Path, command: str, args: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = invoke(command, MISSING, *args, "--out", out)
    assert code == 2, stderr
    assert stdout == ""
    line = one_line(stderr)
    assert line.startswith(f"ftpipe {command}: invalid option "), line
    assert expected in line
    assert not out.exists()


def test_an_unknown_model_names_the_closest_ones_and_how_to_use_ones_own(tmp_path: Path) -> None:
    code, _, stderr = invoke("prepare", MISSING, "--model", "gpt-4o-mnii")
    line = one_line(stderr)
    assert code == 2
    assert "did you mean gpt-4o-mini" in line
    assert "ftpipe models pull" in line and "FTPIPE_LOCAL_BASE_MODELS" in line


def test_model_names_that_are_known_pass(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalogue's names and snapshots, fine-tuned ids, and local models of every kind:
    the embedded one, configured ones (their limit comes from their folder) and pulled ones."""
    monkeypatch.setenv("FTPIPE_LOCAL_BASE_MODELS", json.dumps({"my-qwen": "/models/qwen"}))
    pulled = isolated_env / "local_api" / "models" / "org--pulled-model"
    pulled.mkdir(parents=True)
    (pulled / "config.json").write_text("{}", encoding="utf-8")
    for name in (
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "gpt-3.5-turbo-0613",
        "ft:gpt-4o-mini-2024-07-18:my-org:support:abc123",
        "ft:gpt-4o-mini:local::abc123:ckpt-step-10",
        "smollm2-135m-instruct",
        "my-qwen",
        "org/pulled-model",
        "ft:my-qwen:local:x:abc",
    ):
        assert catalog.model_problem(name) is None, name
        assert PrepareOptions(model=name).model == name
    problem = catalog.model_problem("my-qwne")
    assert problem is not None and "did you mean my-qwen?" in problem


def test_training_options_take_auto_and_numbers_and_refuse_the_rest() -> None:
    given = LaunchOptions(n_epochs="3", batch_size="AUTO", learning_rate_multiplier="0.5")
    assert (given.n_epochs, given.batch_size, given.learning_rate_multiplier) == (3, "auto", 0.5)
    assert LaunchOptions(n_epochs=4.0, suffix="ferry-v1.2_b").n_epochs == 4
    for bad in ({"n_epochs": True}, {"n_epochs": "many"}, {"suffix": ""}, {"batch_size": -1}):
        with pytest.raises(ValueError):
            TrainingOptions(**bad)  # the flows' copy of the fields keeps every check


def test_the_flow_form_keeps_the_ranges() -> None:
    """Prefect's form is drawn from the schema: the ranges show there too."""
    schema = TrainingOptions.model_json_schema()["properties"]
    assert {"maximum": 50, "minimum": 1, "type": "integer"} in schema["n_epochs"]["anyOf"]
    assert {"maxLength": 64, "minLength": 1, "type": "string"} in schema["suffix"]["anyOf"]


def test_a_bad_flow_parameter_is_one_line_naming_it() -> None:
    """What Prefect's engine calls before the flow body: one line per run, every bad one named."""
    parameters = {"paths": ["x.csv"], "options": {"model": "gpt-4o-mnii"}}
    parameters["training"] = {"n_epochs": 0, "suffix": "x" * 65}
    with pytest.raises(ParameterTypeError) as raised:
        finetune.validate_parameters(parameters)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("invalid parameters options.model: unknown model 'gpt-4o-mnii'")
    assert "training.n_epochs: expected 'auto' or a whole number from 1 to 50, got 0" in message
    assert "training.suffix: String should have at most 64 characters" in message
    with pytest.raises(ParameterTypeError, match=r"^invalid parameter n_epochs: expected"):
        finetune_dialogues.validate_parameters({"n_epochs": 0})  # 0 was silently 'auto'
    with pytest.raises(ParameterTypeError, match=r"^invalid parameter options.encoding: unknown"):
        prepare_dataset.validate_parameters({"paths": [], "options": {"encoding": "klingon"}})


def test_the_facade_refuses_an_unknown_model_before_any_flow(tmp_path: Path) -> None:
    model = OpenAIModel(model_name="gpt-4o-mnii")
    with pytest.raises(FacadeError) as raised:
        model.train(data_file=tmp_path / MISSING)
    assert str(raised.value).startswith("train: model_name: unknown model 'gpt-4o-mnii'; did ")
    assert isinstance(raised.value.cause, InputError)
    with pytest.raises(FacadeError, match=r"^dynamic_train: model_name: unknown model"):
        model.dynamic_train()


# --- the encoding option and the dataset id -------------------------------------------------


def test_the_dataset_id_is_todays_while_encoding_is_unset(tmp_path: Path) -> None:
    """Digests taken before `encoding` existed: datasets prepared then keep their ids."""
    options = PrepareOptions(model="gpt-4o-mini")
    assert options.fingerprint() == (
        "3ee2dc5725ef5e72c851c9e39ddb75b4bd475e83df3c865caa607ca4c12c173a"
    )
    labelled = PrepareOptions(model="gpt-4o-mini", label="positive", seed=3, validation_share=0.2)
    assert labelled.fingerprint() == (
        "014f7c4dad3034210a6d934ecd8d45241ccb7212c5505168c32f9306a9bc1400"
    )
    plan = plan_run([], options, csv_text=CSV_TEXT, out_root=tmp_path / "out")
    assert plan.dataset_id == "2654482847b72ef5"
    discard_run(plan)
    chosen = PrepareOptions(model="gpt-4o-mini", encoding="latin-1")
    assert chosen.encoding == "latin-1"
    assert chosen.fingerprint() != options.fingerprint()


# --- kind 4: environment and paths ------------------------------------------------------------


@pytest.mark.parametrize("command", ["prepare", "train"])
def test_a_home_that_cannot_be_a_folder_is_one_line_naming_ftpipe_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    blocker = tmp_path / "home-file"
    blocker.write_text("not a folder", encoding="utf-8")
    source = faq(tmp_path / "faq.csv")
    for home, problem in (
        (blocker, "is a file, not a folder"),
        (blocker / "ftpipe", f"cannot be created: {blocker} is a file, not a folder"),
    ):
        monkeypatch.setenv("FTPIPE_HOME", str(home))
        code, _, stderr = invoke(command, source, "--out", tmp_path / "out")
        assert code == 2
        assert one_line(stderr) == f"ftpipe {command}: FTPIPE_HOME={home}: {problem}"
        with pytest.raises(InputError, match="FTPIPE_HOME"):  # never an OSError, anywhere
            get_settings().state_dir("local_api")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FTPIPE_DEFAULT_MODEL", "gpt4o", "FTPIPE_DEFAULT_MODEL=gpt4o: unknown model 'gpt4o'"),
        ("FTPIPE_MAX_RETRIES", "many", "FTPIPE_MAX_RETRIES='many': Input should be a valid"),
        ("FTPIPE_BACKEND", "aws", "FTPIPE_BACKEND='aws': Input should be 'auto', 'local'"),
        ("FTPIPE_LOCAL_ENGINE", "fast", "FTPIPE_LOCAL_ENGINE='fast': Input should be"),
    ],
)
def test_a_setting_that_cannot_work_is_one_line_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    code, _, stderr = invoke("prepare", faq(tmp_path / "faq.csv"), "--out", tmp_path / "out")
    assert code == 2
    assert one_line(stderr).startswith(f"ftpipe prepare: {expected}")


def test_a_secret_setting_is_named_without_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTPIPE_LOCAL_API_KEY", "sk-secret")
    monkeypatch.setenv("FTPIPE_LOCAL_MAX_ENGINES", "0")  # a bad neighbour of the key
    with pytest.raises(InputError) as raised:
        get_settings()
    assert str(raised.value).startswith("FTPIPE_LOCAL_MAX_ENGINES='0': Input should be")
    assert "sk-secret" not in str(raised.value)


def test_a_sqlite_registry_under_a_file_is_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("", encoding="utf-8")
    url = f"sqlite:///{blocker}/jobs.sqlite3"
    monkeypatch.setenv("FTPIPE_DATABASE_URL", url)
    out = tmp_path / "out"
    code, _, stderr = invoke("train", faq(tmp_path / "faq.csv"), "--out", out)
    assert code == 2
    assert one_line(stderr) == (
        f"ftpipe train: FTPIPE_DATABASE_URL={url}: cannot open the job registry: its folder "
        f"{blocker} is a file, not a folder"
    )
    assert not out.exists()


@pytest.mark.parametrize("command", ["prepare", "train"])
def test_bad_paths_are_one_line_naming_them_exit_2(tmp_path: Path, command: str) -> None:
    source = faq(tmp_path / "faq.csv")
    taken = tmp_path / "taken.txt"
    taken.write_text("", encoding="utf-8")
    fifo = tmp_path / "named-pipe.csv"
    os.mkfifo(fifo)
    broken = tmp_path / "broken.csv"
    broken.symlink_to(tmp_path / "gone.csv")
    read_end, write_end = os.pipe()  # what <(cat x.csv) hands over: /dev/fd/N
    try:
        cases = [
            ([source, "--out", taken], f"--out {taken}: is a file, not a folder"),
            ([source, "--out", taken / "out"], f"--out {taken / 'out'}: cannot be created: "),
            ([f"/dev/fd/{read_end}"], f"/dev/fd/{read_end}: is a pipe (process substitution"),
            ([fifo], f"{fifo}: is a pipe"),
            ([broken], f"{broken}: is a broken symbolic link to {tmp_path / 'gone.csv'}, not a"),
            ([tmp_path / MISSING], f"{tmp_path / MISSING}: does not exist"),
            ([], "no input given"),
        ]
        for args, expected in cases:
            if "--out" not in args:
                args = [*args, "--out", tmp_path / "out"]
            code, stdout, stderr = invoke(command, *args)
            assert code == 2, (args, stderr)
            assert one_line(stderr).startswith(f"ftpipe {command}: {expected}"), stderr
            assert stdout == ""
    finally:
        os.close(read_end)
        os.close(write_end)
    assert not (tmp_path / "out").exists()


def test_folder_paths_that_cannot_be_folders_say_why() -> None:
    assert unusable_folder(Path("/proc/version")) == "is a file, not a folder"
    assert unusable_folder(Path("/proc/version/x")) == (
        "cannot be created: /proc/version is a file, not a folder"
    )


def test_skipped_inputs_are_listed_on_the_console_and_in_report_md(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    faq(inputs / "faq.csv")
    locked = faq(inputs / "locked.csv")
    (inputs / "gone.csv").symlink_to(tmp_path / "moved.csv")
    os.mkfifo(inputs / "feed.csv")
    (inputs / "notes.md").write_text("# notes", encoding="utf-8")
    real_open = Path.open

    def guarded_open(path: Path, *args: object, **kwargs: object) -> object:
        if path == locked:  # as an unreadable file is for anyone but root
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", guarded_open)
    code, stdout, stderr = invoke("prepare", inputs, "--out", tmp_path / "out")
    assert code == 0, stderr
    reasons = {
        inputs / "feed.csv": "a pipe",
        inputs / "gone.csv": f"a broken symbolic link to {tmp_path / 'moved.csv'}",
        locked: "cannot be read: Permission denied",
        inputs / "notes.md": "not .csv, .tsv, .json or .jsonl",
    }
    for path, reason in reasons.items():
        assert f"skipped {path}: {reason}\n" in stdout
    [folder] = (tmp_path / "out").iterdir()
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    assert report["skipped_inputs"] == [{"path": str(p), "reason": r} for p, r in reasons.items()]
    assert [Path(s["name"]).name for s in report["sources"]] == ["faq.csv"]
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert "## Skipped inputs\n\n4 found but not read:" in markdown
    for path, reason in reasons.items():
        assert f"| {path} | {reason} |" in markdown


def test_a_folder_of_broken_links_says_so(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "faq.csv").symlink_to(tmp_path / "elsewhere.csv")
    code, _, stderr = invoke("prepare", inputs, "--out", tmp_path / "out")
    assert code == 1  # the folder is there; what it holds cannot be used
    assert one_line(stderr).endswith(
        f"skipped {inputs / 'faq.csv'}: a broken symbolic link to {tmp_path / 'elsewhere.csv'}"
    )

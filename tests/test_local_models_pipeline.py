"""The pipeline side of local models: the default model follows the backend, prepare counts a
local model's examples with its own tokenizer and context limit, `models pull`, the loss curve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftpipe import catalog, tokens
from ftpipe import settings as settings_module
from ftpipe.chat_format import check_jsonl_file
from ftpipe.cli import app
from ftpipe.client import make_client
from ftpipe.local_engine import EMBEDDED_BASE_MODEL, engine_in_use, real_engine_available
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import prepare
from ftpipe.settings import LocalApiSettings, Settings, get_settings

from .conftest import SAMPLES, qa_examples, write_jsonl

LOCAL_ID = "tiny-chat"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from .tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def tiny(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FTPIPE_LOCAL_BASE_MODELS", json.dumps({LOCAL_ID: str(tiny_folder)}))
    return tiny_folder


# -- the default model follows the backend ---------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"FTPIPE_LOCAL_ENGINE": "stand-in"}, "gpt-4o-mini"),
        ({"FTPIPE_LOCAL_ENGINE": "real"}, EMBEDDED_BASE_MODEL),
        ({"FTPIPE_LOCAL_ENGINE": "real", "OPENAI_API_KEY": "sk-test"}, "gpt-4o-mini"),
        ({"FTPIPE_LOCAL_ENGINE": "real", "FTPIPE_BACKEND": "openai"}, "gpt-4o-mini"),
        ({"FTPIPE_LOCAL_ENGINE": "real", "AZURE_OPENAI_ENDPOINT": "https://x"}, "gpt-4o-mini"),
        ({"FTPIPE_LOCAL_ENGINE": "real", "FTPIPE_DEFAULT_MODEL": "my-model"}, "my-model"),
        ({"FTPIPE_LOCAL_ENGINE": "stand-in", "FTPIPE_DEFAULT_MODEL": "gpt-4o"}, "gpt-4o"),
    ],
)
def test_default_model_follows_backend_and_engine(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert get_settings().default_model == expected
    assert PrepareOptions().model == expected


def test_auto_engine_is_real_exactly_where_the_training_stack_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FTPIPE_LOCAL_ENGINE", "auto")
    expected = "real" if real_engine_available() else "stand-in"
    assert engine_in_use(LocalApiSettings()) == expected
    assert engine_in_use(Settings()) == expected
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert not real_engine_available()
    assert engine_in_use(LocalApiSettings()) == "stand-in"
    assert get_settings().default_model == "gpt-4o-mini"


def test_openai_names_never_stand_for_local_models(tiny: Path) -> None:
    assert not catalog.is_local_model("gpt-4o-mini")
    assert catalog.lookup("gpt-4o-mini").encoding == "o200k_base"  # type: ignore[union-attr]
    assert catalog.lookup("no-such-model") is None
    assert catalog.is_local_model(LOCAL_ID)
    assert catalog.is_local_model(f"ft:{LOCAL_ID}:local:x:abc")


# -- local models count with their own tokenizer and context length --------------------------


def test_local_model_lookup_gives_its_tokenizer_and_context_length(tiny: Path) -> None:
    info = catalog.lookup(LOCAL_ID)
    assert info is not None
    assert info.training_token_limit == 512  # the tiny model's max_position_embeddings
    assert info.encoding == f"hf:{tiny}"
    assert catalog.lookup(f"ft:{LOCAL_ID}:local:x:abc") == info
    assert not tokens.uses_openai_rule(LOCAL_ID)


def test_local_count_is_what_training_tokenises(tiny: Path) -> None:
    from transformers import AutoTokenizer

    from ftpipe.training.data import tokenise, training_template

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    template = training_template(tokenizer.chat_template)
    for example in qa_examples(5, system="You are a helpful assistant."):
        ids, _, _ = tokenise(tokenizer, template, example["messages"], 10_000)
        assert tokens.count_message_tokens(example["messages"], LOCAL_ID) == len(ids)


def test_prepare_for_a_local_model_counts_with_its_tokenizer(tiny: Path, tmp_path: Path) -> None:
    result = prepare([SAMPLES / "csv"], PrepareOptions(model=LOCAL_ID), out_root=tmp_path)
    lines = result.train_path.read_text(encoding="utf-8").splitlines()
    expected = sum(
        tokens.count_message_tokens(json.loads(line)["messages"], LOCAL_ID) for line in lines
    )
    assert result.report["cost"]["model"] == LOCAL_ID
    assert result.report["cost"]["tokens_per_epoch"] == expected
    check = check_jsonl_file(result.train_path, LOCAL_ID)
    assert check.ok and check.token_limit == 512 and check.limit_model == LOCAL_ID


def test_a_local_model_is_found_once_per_source_not_once_per_example(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding a local model's folder reads the settings (~1 ms); counting one example costs
    less, so 200 examples must not read them 200 times (a 200 MB CSV took hours that way)."""
    rows = "".join(f"Question {i}?,Answer {i}.\n" for i in range(200))
    csv = tmp_path / "many.csv"
    csv.write_text("question,answer\n" + rows, encoding="utf-8")
    reads = 0
    original = settings_module.get_settings  # the catalogue imports it where it is used

    def counted() -> Settings:
        nonlocal reads
        reads += 1
        return original()

    monkeypatch.setattr(settings_module, "get_settings", counted)
    result = prepare([csv], PrepareOptions(model=LOCAL_ID), out_root=tmp_path / "out")
    assert result.report["counts"]["examples"] == 200
    assert reads < 50, f"settings read {reads} times for 200 examples"


def test_prepare_enforces_the_local_context_limit(tiny: Path, tmp_path: Path) -> None:
    long_text = "The ferry leaves at nine. " * 200  # far over 512 tokens of the tiny BPE
    rows = [("What is the code word?", f"word-{i}") for i in range(12)] + [
        ("Tell me everything.", long_text)
    ]
    source = tmp_path / "qa.csv"
    source.write_text(
        "question,answer\n" + "".join(f'"{q}",{a}\n' for q, a in rows), encoding="utf-8"
    )
    options = PrepareOptions(model=LOCAL_ID, max_rejects=5)
    result = prepare([source], options, out_root=tmp_path / "out")
    assert result.report["counts"]["over_token_limit_rejected"] == 1
    truncated = prepare(
        [source], options.model_copy(update={"truncate": True}), out_root=tmp_path / "out2"
    )
    lines = truncated.train_path.read_text(encoding="utf-8").splitlines()
    if truncated.validation_path and truncated.validation_path.exists():
        lines += truncated.validation_path.read_text(encoding="utf-8").splitlines()
    counts = [tokens.count_message_tokens(json.loads(line)["messages"], LOCAL_ID) for line in lines]
    assert max(counts) <= 512 and len(counts) == 13


def test_local_server_file_check_uses_the_local_limit(tiny: Path, tmp_path: Path) -> None:
    examples = qa_examples(10)
    examples[3]["messages"][0]["content"] = "word " * 600
    check = check_jsonl_file(write_jsonl(tmp_path / "t.jsonl", examples), LOCAL_ID)
    assert [bad.line for bad in check.too_long] == [4]
    assert "512-token limit of tiny-chat" in (check.first_error() or "")


# -- ftpipe models pull ----------------------------------------------------------------------


def test_models_pull_copies_a_folder_into_the_models_folder(
    tiny_folder: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["models", "pull", str(tiny_folder), "--name", "my-tiny"])
    assert result.exit_code == 0, result.output
    target = isolated_env.resolve() / "local_api" / "models" / "my-tiny"
    assert (target / "config.json").is_file() and (target / "tokenizer.json").is_file()
    assert "model my-tiny ready" in result.stdout
    info = catalog.lookup("my-tiny")
    assert info is not None and info.training_token_limit == 512


def test_models_pull_offline_is_one_clear_line(
    isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(app, ["models", "pull", "HuggingFaceTB/SmolLM2-360M-Instruct"])
    assert result.exit_code == 1
    assert "cannot download HuggingFaceTB/SmolLM2-360M-Instruct" in result.stderr
    assert "HF_HUB_OFFLINE" in result.stderr
    assert "Traceback" not in result.output
    models = isolated_env.resolve() / "local_api" / "models"
    assert not models.exists() or not any(
        p.name.startswith("HuggingFaceTB") for p in models.iterdir()
    )


def test_models_pull_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["models", "pull", str(tmp_path)])
    assert result.exit_code == 1 and "no config.json" in result.stderr


# -- the loss curve --------------------------------------------------------------------------


def test_jobs_show_writes_the_loss_curve(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_LOCAL_ENGINE", "stand-in")
    client = make_client()
    training = client.files.create(
        file=write_jsonl(tmp_path / "train.jsonl", qa_examples(12)).open("rb"),
        purpose="fine-tune",
    )
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training.id)
    result = CliRunner().invoke(app, ["jobs", "show", job.id])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["job_id"] == job.id  # stdout stays JSON
    folder = isolated_env.resolve() / "jobs" / job.id
    png = folder / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "step_metrics.csv").read_text().startswith("step,train_loss")
    assert f"loss curve: {png}" in result.stderr


def test_loss_summary_is_a_small_table(tmp_path: Path) -> None:
    from ftpipe.loss_curve import SavedCurve, markdown_summary, parse_metrics

    text = "step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy\n"
    text += "".join(f"{s},{3 - s / 20},0.5,{'' if s % 10 else 2.5},\n" for s in range(1, 41))
    curve = parse_metrics(text)
    assert curve.steps[-1] == 40 and curve.has_valid
    table = markdown_summary("ftjob-x", SavedCurve(tmp_path / "m.csv", tmp_path / "l.png", curve))
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 10 and rows[-1].startswith("| 40 |")
    assert "l.png" in table


def test_a_pulled_model_is_a_base_model_of_the_real_engine(tmp_path: Path) -> None:
    """`ftpipe models pull org/name` puts it in <models>/org--name; the server offers it."""
    from ftpipe.local_api.engines import real_base_models

    from .tiny_model import build_tiny_model

    models = tmp_path / "models"
    build_tiny_model(models / "org--tiny-chat")
    assert "org/tiny-chat" in real_base_models(LocalApiSettings(engine="real"), models)


def test_the_default_model_is_one_the_real_engine_really_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ftpipe import local_engine

    monkeypatch.setattr(local_engine, "embedded_model_available", lambda models: False)
    configured = LocalApiSettings(engine="real", base_models={"tiny-chat": "/models/tiny"})
    assert local_engine.default_model_for("local", configured) == "tiny-chat"
    bare = LocalApiSettings(engine="real")
    assert local_engine.default_model_for("local", bare) == "gpt-4o-mini"

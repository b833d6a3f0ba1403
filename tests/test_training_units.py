"""The training room's pure parts: hyperparameter resolution, label masking, base model ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftpipe.training import hyperparameters as hp
from ftpipe.training.base_models import BaseModelError, resolve_base_model
from ftpipe.training.data import IGNORE, DataError, read_examples, tokenise, tokenise_file
from ftpipe.training.spec import TrainingSpec
from ftpipe.training.templates import CHATML_WITH_GENERATION

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_name] = "1"

CHAT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the code word?"},
    {"role": "assistant", "content": "word-1", "weight": 0},
    {"role": "user", "content": "again"},
    {"role": "assistant", "content": "word-2"},
]


# hyperparameters -------------------------------------------------------------------------------
def test_auto_values_follow_the_documented_rules() -> None:
    plan = hp.resolve(examples=50)
    assert plan.n_epochs == 3  # the data-prep guide: 3 epochs, 50 x 3 >= 100
    assert plan.batch_size == 5  # 50 // 10
    assert (plan.micro_batch_size, plan.gradient_accumulation) == (1, 5)  # 5 is prime, max 4
    assert plan.learning_rate == pytest.approx(2e-4)
    assert plan.steps_per_epoch == 10 and plan.total_steps == 30


def test_small_datasets_get_more_epochs_and_batch_one() -> None:
    plan = hp.resolve(examples=10)
    assert plan.n_epochs == 10 and plan.batch_size == 1 and plan.total_steps == 100


def test_batch_is_capped_at_eight_and_split_into_accumulation() -> None:
    plan = hp.resolve(examples=1000, max_micro_batch=4)
    assert (plan.batch_size, plan.micro_batch_size, plan.gradient_accumulation) == (8, 4, 2)
    assert plan.steps_per_epoch == 125


def test_explicit_values_and_full_fine_tuning_rate() -> None:
    plan = hp.resolve(
        examples=7, method="full", n_epochs=2, batch_size=6, learning_rate_multiplier=3
    )
    assert (plan.micro_batch_size, plan.gradient_accumulation) == (3, 2)
    assert plan.learning_rate == pytest.approx(3e-5)
    # 7 examples in micro batches of 3: 3 batches, 2 per step -> 2 steps per epoch
    assert plan.steps_per_epoch == 2 and plan.total_steps == 4


def test_fixed_accumulation_rounds_the_micro_batch_up() -> None:
    assert hp.split_batch(10, 4, 3) == (4, 3)


def test_resolve_spec_uses_the_spec_values(tmp_path: Path) -> None:
    spec = TrainingSpec(
        job_id="ftjob-1", base_model="m", training_file=tmp_path / "t.jsonl", n_epochs=4
    )
    assert hp.resolve_spec(spec, 40).total_steps == 4 * 10  # batch 4 -> 10 steps per epoch


def test_http_side_modules_do_not_import_torch() -> None:
    code = (
        "import sys; import ftpipe.training.spec, ftpipe.training.hyperparameters, "
        "ftpipe.training.protocol, ftpipe.training.base_models, ftpipe.training.worker; "
        "print([m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# data ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    from tests.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    return AutoTokenizer.from_pretrained(folder)


def _trained_text(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE])


def test_only_weighted_assistant_tokens_are_labelled(tokenizer) -> None:
    ids, labels, truncated = tokenise(tokenizer, CHATML_WITH_GENERATION, CHAT, 512)
    assert not truncated
    assert _trained_text(tokenizer, ids, labels) == "word-2<|im_end|>"
    # exact positions: the last assistant turn is "<|im_start|>assistant\nword-2<|im_end|>\n"
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False)
    assert tokenizer.decode(ids) == rendered
    tail = tokenizer("word-2<|im_end|>\n", add_special_tokens=False)["input_ids"]
    start = len(ids) - len(tail)
    expected = list(range(start, len(ids) - 1))  # everything but the final "\n"
    assert [p for p, label in enumerate(labels) if label != IGNORE] == expected
    assert all(labels[p] == ids[p] for p in expected)


def test_weight_one_trains_every_assistant_turn(tokenizer) -> None:
    chat = [{**m, "weight": 1} if m["role"] == "assistant" else m for m in CHAT]
    ids, labels, _ = tokenise(tokenizer, CHATML_WITH_GENERATION, chat, 512)
    assert _trained_text(tokenizer, ids, labels) == "word-1<|im_end|>word-2<|im_end|>"


def test_templates_without_markers_use_rendered_prefixes(tokenizer) -> None:
    plain = CHATML_WITH_GENERATION.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    marked = tokenise(tokenizer, CHATML_WITH_GENERATION, CHAT, 512)
    assert tokenise(tokenizer, plain, CHAT, 512) == marked


def test_truncation_and_counting(tokenizer, tmp_path: Path) -> None:
    ids, labels, truncated = tokenise(tokenizer, CHATML_WITH_GENERATION, CHAT, 10)
    assert truncated and len(ids) == len(labels) == 10
    path = tmp_path / "train.jsonl"
    masked_only = [CHAT[0], CHAT[1], CHAT[2]]
    path.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps({"messages": masked_only}))
    data = tokenise_file(path, tokenizer, CHATML_WITH_GENERATION, 512)
    assert len(data.rows) == 1 and data.skipped == [2]  # nothing to learn on line 2: reported
    assert data.trained_tokens == len(tokenizer("word-2<|im_end|>")["input_ids"])


def test_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": CHAT}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: not JSON"):
        read_examples(path)
    path.write_text(json.dumps({"messages": [{"role": "assistant", "content": "x", "weight": 2}]}))
    with pytest.raises(DataError, match="line 1: 'weight' must be 0 or 1"):
        read_examples(path)


# base models -----------------------------------------------------------------------------------
def test_unknown_and_missing_base_models_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="unknown base model 'gpt-4o-mini'"):
        resolve_base_model("gpt-4o-mini", tmp_path)
    with pytest.raises(BaseModelError, match="ftpipe models pull ftpipe-tests/no-such-model"):
        resolve_base_model("ftpipe-tests/no-such-model", tmp_path)
    with pytest.raises(BaseModelError, match=r"has no config\.json"):
        resolve_base_model(str(tmp_path), tmp_path)


def test_folders_cached_and_mapped_models_resolve(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "org--name"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert resolve_base_model("org/name", tmp_path / "models") == folder
    assert resolve_base_model(str(folder), None) == folder.resolve()
    mapping = {"my-model": str(folder)}
    assert resolve_base_model("my-model", None, mapping=mapping) == folder.resolve()

"""The training worker on a tiny random Llama: real steps, files, checkpoints, control, failures.

One job trains once (module fixture) and several tests read its files; cancel, pause/resume and
a bad base model each run a job of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftpipe.training import protocol
from ftpipe.training.spec import TrainingSpec

ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
}
EXAMPLES = 16
EPOCHS = 5
BATCH = 4
TOTAL = EPOCHS * EXAMPLES // BATCH  # 20 steps


def _example(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"What is the code word number {i % 4}?"},
            {"role": "assistant", "content": f"The code word number {i % 4} is word-{i % 4}."},
        ]
    }


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model and a small repetitive dataset (train + validation)."""
    from tests.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("training")
    build_tiny_model(root / "tiny")
    lines = [json.dumps(_example(i)) for i in range(EXAMPLES)]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    (root / "valid.jsonl").write_text("\n".join(lines[:4]) + "\n")
    return root


def _job(workspace: Path, name: str, **values: object) -> Path:
    job_dir = workspace / name
    job_dir.mkdir()
    fields: dict = {
        "job_id": f"ftjob-{name}",
        "base_model": "tiny",
        "base_model_path": workspace / "tiny",
        "models_dir": workspace / "models",
        "training_file": workspace / "train.jsonl",
        "validation_file": workspace / "valid.jsonl",
        "n_epochs": EPOCHS,
        "batch_size": BATCH,
        "learning_rate_multiplier": 50,  # 1e-2: a tiny random model moves visibly in 20 steps
        "device": "cpu",
    }
    spec = TrainingSpec(**{**fields, **values})
    (job_dir / protocol.SPEC).write_text(spec.to_json())
    return job_dir


def _start(job_dir: Path) -> subprocess.Popen:
    log = (job_dir / protocol.LOG).open("wb")
    command = [sys.executable, "-m", "ftpipe.training.worker", str(job_dir)]
    return subprocess.Popen(command, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def _train(job_dir: Path) -> dict:
    process = _start(job_dir)
    assert process.wait(timeout=240) in (0, 1), (job_dir / protocol.LOG).read_text()[-3000:]
    status = protocol.read_status(job_dir)
    assert status is not None
    return status


def _metrics(job_dir: Path) -> list[dict]:
    events = protocol.read_jsonl(job_dir / protocol.EVENTS)
    return [e["data"] for e in events if e["type"] == "metrics"]


@pytest.fixture(scope="module")
def trained(workspace: Path) -> Path:
    job_dir = _job(workspace, "trained")
    status = _train(job_dir)
    assert status["state"] == "succeeded", (job_dir / protocol.LOG).read_text()[-3000:]
    return job_dir


def test_status_reports_success_steps_and_trained_tokens(trained: Path, workspace: Path) -> None:
    from transformers import AutoTokenizer

    from ftpipe.training.data import tokenise_file

    status = protocol.read_status(trained)
    assert status["step"] == status["total_steps"] == TOTAL
    assert status["error"] is None and status["estimated_finish"] is None
    assert status["plan"]["n_epochs"] == EPOCHS and status["plan"]["batch_size"] == BATCH
    tokenizer = AutoTokenizer.from_pretrained(workspace / "tiny")
    data = tokenise_file(workspace / "train.jsonl", tokenizer, tokenizer.chat_template, 1024)
    assert status["trained_tokens"] == data.trained_tokens * EPOCHS


def test_loss_falls(trained: Path) -> None:
    losses = [m["train_loss"] for m in _metrics(trained)]
    assert len(losses) == TOTAL
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5


def test_events_have_openai_shape_and_validation_metrics(trained: Path) -> None:
    events = protocol.read_jsonl(trained / protocol.EVENTS)
    for event in events:
        assert set(event) == {"created_at", "level", "message", "type", "data"}
        assert event["level"] in ("info", "warn", "error")
    metrics = _metrics(trained)
    assert [m["step"] for m in metrics] == list(range(1, TOTAL + 1))
    assert all(m["total_steps"] == TOTAL for m in metrics)
    assert all(0.0 <= m["train_mean_token_accuracy"] <= 1.0 for m in metrics)
    validated = [m for m in metrics if m["valid_loss"] is not None]
    # the validation file is evaluated at the end of each epoch
    assert [m["step"] for m in validated] == [4, 8, 12, 16, 20]
    assert validated[-1]["valid_loss"] < validated[0]["valid_loss"]
    assert all(m["valid_mean_token_accuracy"] is not None for m in validated)


def test_result_csv_matches_the_metrics_events(trained: Path) -> None:
    lines = (trained / protocol.METRICS).read_text().splitlines()
    header = "step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy"
    assert lines[0] == header
    assert len(lines) == TOTAL + 1
    last = lines[-1].split(",")
    assert last[0] == str(TOTAL) and float(last[3]) == _metrics(trained)[-1]["valid_loss"]


def test_checkpoints_are_real_adapters_that_load(trained: Path, workspace: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    records = protocol.read_jsonl(trained / protocol.CHECKPOINTS)
    assert [r["step_number"] for r in records] == [4, 8, 12, 16, 20]  # one per epoch end
    kept = sorted(p.name for p in (trained / protocol.CHECKPOINTS_DIR).iterdir())
    assert kept == ["step-12", "step-16", "step-20"]  # the last three, like OpenAI
    last = records[-1]
    assert last["path"] == "checkpoints/step-20"
    assert set(last["metrics"]) == {
        "step",
        "train_loss",
        "train_mean_token_accuracy",
        "valid_loss",
        "valid_mean_token_accuracy",
        "full_valid_loss",
        "full_valid_mean_token_accuracy",
    }
    assert last["metrics"]["valid_loss"] == _metrics(trained)[-1]["valid_loss"]
    for folder in (trained / last["path"], trained / protocol.MODEL_DIR):
        assert (folder / "adapter_model.safetensors").is_file()
        assert (folder / "tokenizer_config.json").is_file()
        base = AutoModelForCausalLM.from_pretrained(workspace / "tiny")
        model = PeftModel.from_pretrained(base, folder)
        assert any("lora_" in name for name, _ in model.named_parameters())
    assert not (trained / ".trainer").exists()


def test_a_bad_base_model_fails_the_job_with_an_error_object(workspace: Path) -> None:
    job_dir = _job(workspace, "bad-model", base_model="no-such-model", base_model_path=None)
    status = _train(job_dir)
    assert status["state"] == "failed"
    assert status["error"]["code"] == "invalid_base_model"
    assert status["error"]["param"] == "model"
    assert "unknown base model 'no-such-model'" in status["error"]["message"]
    events = protocol.read_jsonl(job_dir / protocol.EVENTS)
    assert events[-1]["level"] == "error"


def test_cancel_stops_a_running_job(workspace: Path) -> None:
    job_dir = _job(workspace, "cancel", n_epochs=500, validation_file=None)  # 2,000 steps
    process = _start(job_dir)
    try:
        running: dict = {}
        while running.get("step", 0) < 1:
            assert process.poll() is None, (job_dir / protocol.LOG).read_text()[-3000:]
            time.sleep(0.2)
            running = protocol.read_status(job_dir) or {}
        protocol.request(job_dir, "cancel")
        assert running["state"] == "running" and running["pid"] == process.pid
        assert running["estimated_finish"] >= running["updated_at"]  # filled from the step rate
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()
    status = protocol.read_status(job_dir)
    assert status["state"] == "cancelled"
    assert 1 <= status["step"] < status["total_steps"] == 2000
    assert not (job_dir / protocol.MODEL_DIR).exists()
    assert not (job_dir / protocol.CONTROL).exists()


def test_pause_then_resume_continues_to_the_end(workspace: Path, trained: Path) -> None:
    from safetensors.torch import load_file

    job_dir = _job(workspace, "pause")
    protocol.request(job_dir, "pause")  # read at the end of the first step
    status = _train(job_dir)
    assert status["state"] == "paused" and status["step"] == 1
    checkpoint = Path(status["checkpoint"])
    assert checkpoint == job_dir / "checkpoints" / "step-1" and checkpoint.is_dir()
    assert not (job_dir / protocol.CONTROL).exists()

    spec = TrainingSpec.read(job_dir).model_copy(update={"resume_from": checkpoint})
    (job_dir / protocol.SPEC).write_text(spec.to_json())
    status = _train(job_dir)
    assert status["state"] == "succeeded"
    assert status["step"] == status["total_steps"] == TOTAL
    # one metrics event and one CSV row per step across both runs: continued, not restarted
    assert [m["step"] for m in _metrics(job_dir)] == list(range(1, TOTAL + 1))
    assert len((job_dir / protocol.METRICS).read_text().splitlines()) == TOTAL + 1
    assert status["trained_tokens"] == protocol.read_status(trained)["trained_tokens"]
    # same seed, same data order, optimizer and scheduler restored: the same adapter
    resumed = load_file(job_dir / "model" / "adapter_model.safetensors")
    straight = load_file(trained / "model" / "adapter_model.safetensors")
    assert resumed.keys() == straight.keys()
    for name, tensor in straight.items():
        assert (resumed[name] - tensor).abs().max().item() < 1e-5, name

"""Real fine-tuning jobs through the official SDK: a tiny random Llama trained by worker
processes behind the local server (events, checkpoints, result file, cancel, pause/resume,
server restarts, failures). Each worker run takes about ten seconds on a CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from ftpipe.local_api.server import RunningServer, start_in_thread
from ftpipe.settings import LocalApiSettings
from ftpipe.training import protocol
from tests.conftest import StartServer, strict_client

pytestmark = pytest.mark.slow

EXAMPLES = 20
TERMINAL = ("succeeded", "failed", "cancelled")
KNOBS = {"lora_rank": 8, "lora_alpha": 16, "max_seq_length": 256}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")


def _example(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"What is the code word number {i % 4}?"},
            {"role": "assistant", "content": f"The code word number {i % 4} is word-{i % 4}."},
        ]
    }


def _upload(client: openai.OpenAI, folder: Path, name: str, count: int) -> str:
    path = folder / name
    path.write_text("".join(json.dumps(_example(i)) + "\n" for i in range(count)))
    with path.open("rb") as handle:
        return client.files.create(file=handle, purpose="fine-tune").id


def _settings(tiny_model: Path, **values: Any) -> LocalApiSettings:
    return LocalApiSettings(
        engine="real",
        base_models={"tiny": str(tiny_model), "ghost": "/no/such/model/folder"},
        training_device="cpu",
        **values,
    )


def _create(client: openai.OpenAI, training: str, epochs: int, **kwargs: Any) -> Any:
    return client.fine_tuning.jobs.create(
        model="tiny",
        training_file=training,
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": epochs,
                    "batch_size": 4,
                    "learning_rate_multiplier": 50,  # 1e-2: a tiny model moves in 20 steps
                }
            },
        },
        extra_body=KNOBS,
        **kwargs,
    )


def _wait(client: openai.OpenAI, job_id: str, until: Any, timeout: float = 300) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if until(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job.status}"
        time.sleep(0.3)


def _events(client: openai.OpenAI, job_id: str) -> list[Any]:
    return list(reversed(client.fine_tuning.jobs.list_events(job_id, limit=1000).data))


def _metrics(client: openai.OpenAI, job_id: str) -> list[dict]:
    return [e.data for e in _events(client, job_id) if e.type == "metrics"]


def _done(job: Any) -> bool:
    return job.status in TERMINAL


@pytest.fixture(scope="module")
def real(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real-engine server for the module (its base model `tiny` is the tiny Llama)."""
    root = tmp_path_factory.mktemp("real-server")
    running = start_in_thread(root / "state", local=_settings(tiny_model))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def data(real: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    client = strict_client(real.base_url)
    folder = tmp_path_factory.mktemp("data")
    return {
        "train": _upload(client, folder, "train.jsonl", EXAMPLES),
        "valid": _upload(client, folder, "valid.jsonl", 4),
    }


@pytest.fixture(scope="module")
def trained(real: RunningServer, data: dict[str, str]) -> dict[str, Any]:
    """One job trained to the end, watched while it runs."""
    client = strict_client(real.base_url)
    job = _create(client, data["train"], 4, validation_file=data["valid"], suffix="tiny")
    assert job.status == "validating_files" and job.model == "tiny"
    seen: dict[str, Any] = {"statuses": set(), "estimated_finish": None, "files_listed": False}
    deadline = time.monotonic() + 300
    while True:
        current = client.fine_tuning.jobs.retrieve(job.id)
        seen["statuses"].add(current.status)
        if current.status == "running":
            seen["estimated_finish"] = seen["estimated_finish"] or current.estimated_finish
            # the server answers other requests while a job trains
            seen["files_listed"] = seen["files_listed"] or bool(client.files.list().data)
        if current.status in TERMINAL:
            break
        assert time.monotonic() < deadline, f"job stuck in {current.status}"
        time.sleep(0.2)
    return {"job": current, "seen": seen}


def test_a_job_trains_for_real_and_succeeds(real: RunningServer, trained: dict) -> None:
    job = trained["job"]
    assert job.status == "succeeded", job.error
    assert job.error is None and job.finished_at is not None
    assert job.fine_tuned_model and job.fine_tuned_model.startswith("ft:tiny:local:tiny:")
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.hyperparameters.n_epochs == 4 and job.hyperparameters.batch_size == 4
    assert {"queued", "running"} <= trained["seen"]["statuses"]
    assert trained["seen"]["files_listed"]
    client = strict_client(real.base_url)
    ids = {model.id for model in client.models.list().data}
    assert job.fine_tuned_model in ids


def test_events_carry_real_falling_metrics_with_validation(
    real: RunningServer, trained: dict
) -> None:
    client = strict_client(real.base_url)
    metrics = _metrics(client, trained["job"].id)
    assert [m["step"] for m in metrics] == list(range(1, 21))
    assert all(m["total_steps"] == 20 for m in metrics)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    validated = [m for m in metrics if m.get("valid_loss") is not None]
    assert [m["step"] for m in validated] == [5, 10, 15, 20]
    messages = [e.message for e in _events(client, trained["job"].id)]
    assert "Files validated, moving job to queued state" in messages
    assert messages[-1] == "The job has successfully completed"


def test_checkpoints_are_models_and_the_result_file_is_the_csv(
    real: RunningServer, trained: dict
) -> None:
    client = strict_client(real.base_url)
    job = trained["job"]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert sorted(c.step_number for c in checkpoints) == [10, 15, 20]  # the last three kept
    ids = {model.id for model in client.models.list().data}
    for checkpoint in checkpoints:
        name = checkpoint.fine_tuned_model_checkpoint
        assert name == f"{job.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        assert name in ids
        assert checkpoint.metrics.valid_loss is not None
    (result,) = job.result_files
    assert client.files.retrieve(result).purpose == "fine-tune-results"
    lines = client.files.content(result).text.splitlines()
    assert lines[0] == (
        "step,train_loss,train_mean_token_accuracy,valid_loss,valid_mean_token_accuracy"
    )
    assert [line.split(",")[0] for line in lines[1:]] == [str(s) for s in range(1, 21)]


def test_model_rows_name_their_base_and_adapter(real: RunningServer, trained: dict) -> None:
    from ftpipe.local_api.store import Store

    with Store(real.root).reader() as tx:
        row = tx.get("model", trained["job"].fine_tuned_model)
    assert row.internal["engine"] == "real" and row.internal["base_model"] == "tiny"
    assert (Path(row.internal["adapter_path"]) / "adapter_config.json").is_file()
    assert (Path(row.internal["base_path"]) / "config.json").is_file()


def test_an_openai_model_name_is_not_a_local_model(real: RunningServer, data: dict) -> None:
    client = strict_client(real.base_url)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=data["train"])
    assert caught.value.code == "model_not_available"
    assert "tiny" in caught.value.message and "ghost" in caught.value.message


def test_unknown_and_bad_knobs_are_refused(real: RunningServer, data: dict) -> None:
    client = strict_client(real.base_url)
    with pytest.raises(openai.BadRequestError, match="lora_rnak"):
        client.fine_tuning.jobs.create(
            model="tiny", training_file=data["train"], extra_body={"lora_rnak": 4}
        )
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model="tiny", training_file=data["train"], extra_body={"training_method": "qlora"}
        )
    assert caught.value.param == "training_method"


def test_a_missing_base_model_folder_fails_the_job(real: RunningServer, data: dict) -> None:
    client = strict_client(real.base_url)
    job = client.fine_tuning.jobs.create(model="ghost", training_file=data["train"])
    job = _wait(client, job.id, _done)
    assert job.status == "failed"
    assert job.error.code == "invalid_base_model" and job.error.param == "model"
    assert "/no/such/model/folder" in job.error.message


def test_cancel_ends_the_job_and_its_worker(real: RunningServer, data: dict) -> None:
    client = strict_client(real.base_url)
    job = _create(client, data["train"], 50)  # 250 steps
    # filled from the worker's measured step rate while it runs
    running = _wait(client, job.id, lambda j: _done(j) or j.estimated_finish is not None)
    assert running.status == "running" and running.estimated_finish >= running.created_at
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    job_dir = real.root / "training" / job.id
    deadline = time.monotonic() + 60
    while (protocol.read_status(job_dir) or {}).get("state") != "cancelled":
        assert time.monotonic() < deadline, "the worker did not stop"
        time.sleep(0.2)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_then_resume_ends_succeeded(real: RunningServer, data: dict) -> None:
    client = strict_client(real.base_url)
    job = _create(client, data["train"], 12)  # long enough that the pause lands mid-job
    _wait(client, job.id, lambda j: _done(j) or bool(_metrics(client, j.id)))
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "running"
    _wait(
        client,
        job.id,
        lambda j: _done(j) or any("paused at step" in e.message for e in _events(client, j.id)),
    )
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    client.fine_tuning.jobs.resume(job.id)
    job = _wait(client, job.id, _done)
    assert job.status == "succeeded", job.error
    messages = [e.message for e in _events(client, job.id)]
    assert "Fine-tuning job paused" in messages and "Fine-tuning job resumed" in messages
    assert [m["step"] for m in _metrics(client, job.id)] == list(range(1, 61))


def _internal(root: Path, job_id: str) -> dict:
    from ftpipe.local_api.store import Store

    with Store(root).reader() as tx:
        return tx.get("job", job_id).internal


def _server_on(start_server: StartServer, root: Path, tiny_model: Path) -> RunningServer:
    return start_server(
        root, engine="real", base_models={"tiny": str(tiny_model)}, training_device="cpu"
    )


def _start_job(running: RunningServer, tmp_path: Path, epochs: int) -> tuple[Any, Any]:
    client = strict_client(running.base_url)
    training = _upload(client, tmp_path, "train.jsonl", EXAMPLES)
    return client, _create(client, training, epochs)


def test_a_new_server_follows_a_worker_that_outlived_the_old_one(
    start_server: StartServer, tmp_path: Path, tiny_model: Path
) -> None:
    root = tmp_path / "state"
    first = _server_on(start_server, root, tiny_model)
    client, job = _start_job(first, tmp_path, 6)
    _wait(client, job.id, lambda j: _done(j) or bool(_metrics(client, j.id)))
    first.stop()
    second = _server_on(start_server, root, tiny_model)
    client = strict_client(second.base_url)
    job = _wait(client, job.id, _done)
    assert job.status == "succeeded", job.error
    assert [m["step"] for m in _metrics(client, job.id)] == list(range(1, 31))
    assert _internal(root, job.id)["launches"] == 1  # followed, never started twice


def test_a_dead_worker_is_resumed_from_its_last_checkpoint(
    start_server: StartServer, tmp_path: Path, tiny_model: Path
) -> None:
    root = tmp_path / "state"
    first = _server_on(start_server, root, tiny_model)
    client, job = _start_job(first, tmp_path, 30)  # 150 steps
    _wait(
        client,
        job.id,
        lambda j: _done(j) or bool(client.fine_tuning.jobs.checkpoints.list(j.id).data),
    )
    first.stop()
    status = protocol.read_status(root / "training" / job.id)
    os.kill(status["pid"], signal.SIGKILL)
    second = _server_on(start_server, root, tiny_model)
    client = strict_client(second.base_url)
    job = _wait(client, job.id, _done)
    messages = [e.message for e in _events(client, job.id)]
    assert any("restarting from its checkpoint at step" in m for m in messages), messages
    assert job.status == "succeeded", job.error
    assert job.trained_tokens and job.trained_tokens > 0
    assert _internal(root, job.id)["launches"] == 2


def test_the_http_layer_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from ftpipe.local_api.app import create_app, "
        "shutdown_app; from ftpipe.settings import LocalApiSettings; "
        f"app = create_app(Path({str(tmp_path)!r}), LocalApiSettings(engine='real')); "
        "shutdown_app(app); "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_a_worker_killed_under_the_server_fails_the_job_as_out_of_memory(
    real: RunningServer, data: dict
) -> None:
    client = strict_client(real.base_url)
    job = _create(client, data["train"], 50)
    _wait(client, job.id, lambda j: _done(j) or bool(_metrics(client, j.id)))
    status = protocol.read_status(real.root / "training" / job.id)
    os.kill(status["pid"], signal.SIGKILL)  # what the kernel's OOM killer does
    job = _wait(client, job.id, _done)
    assert job.status == "failed"
    assert job.error.code == "out_of_memory" and "SIGKILL" in job.error.message
    assert client.files.list().data  # the server itself is fine


def test_the_stand_in_checks_knobs_and_ignores_them(client: openai.OpenAI, tmp_path: Path) -> None:
    training = _upload(client, tmp_path, "train.jsonl", EXAMPLES)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=training, extra_body={"lora_rank": 4}
    )
    assert job.model == "gpt-4o-mini-2024-07-18"
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini-2024-07-18", training_file=training, extra_body={"lora_rank": 0}
        )
    assert caught.value.param == "lora_rank"


def test_continuing_a_fine_tuned_model_is_refused_clearly(
    real: RunningServer, data: dict, trained: dict
) -> None:
    client = strict_client(real.base_url)
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(
            model=trained["job"].fine_tuned_model, training_file=data["train"]
        )
    assert caught.value.code == "model_not_available"
    assert "not supported" in caught.value.message and "tiny" in caught.value.message


def test_a_worker_that_keeps_vanishing_fails_the_job(tmp_path: Path, tiny_model: Path) -> None:
    """Deaths nobody can explain (server restarts) restart the job, a few times, then fail it."""
    from ftpipe.local_api import real_jobs, workers
    from ftpipe.local_api.store import Store

    store = Store(tmp_path / "state")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(_example(i)) + "\n" for i in range(EXAMPLES)))
    store.file_path("file-train").write_bytes(path.read_bytes())
    file_body = {"id": "file-train", "object": "file", "bytes": 1, "created_at": 1}
    with store.transaction() as tx:
        tx.insert("file", {**file_body, "filename": "t.jsonl", "purpose": "fine-tune"})
    job = real_jobs.create_job(
        store, {"model": "tiny", "training_file": "file-train"}, _settings(tiny_model)
    )
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    claim = {"pid": int(gone.stdout), "host": workers.HOST, "start": None, "owner": "old"}
    for _ in range(real_jobs.MAX_RESTARTS + 1):
        with store.transaction() as tx:
            row = tx.get("job", job["id"])
            row.body["status"] = "running"
            row.internal["worker"] = claim
            real_jobs.sync(tx, store, row)
    assert row.body["status"] == "failed"
    assert row.body["error"]["code"] == "worker_lost"
    assert "3 times" in row.body["error"]["message"]
    with store.reader() as tx:
        warnings = [e for e in tx.all("event", parent=job["id"]) if e.body["level"] == "warn"]
    assert len(warnings) == real_jobs.MAX_RESTARTS
    assert "restarting from scratch" in warnings[0].body["message"]


def test_the_evaluation_finds_the_trained_model_ahead_of_its_base(
    real: RunningServer, trained: dict, tmp_path: Path
) -> None:
    """Held-out prompts through the real inference worker: the tiny model picked up the reply
    pattern, its random base did not, and the endpoint's own validation loss is reported."""
    from ftpipe.eval.run import EvalRequest, evaluate
    from ftpipe.eval.target import final_validation_metrics

    client = strict_client(real.base_url, timeout=120)
    job = trained["job"]
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(json.dumps(_example(i)) + "\n" for i in range(8)))
    result = evaluate(
        EvalRequest(tuned=job.fine_tuned_model, base="tiny", data=data, out_dir=tmp_path / "out"),
        client,
        endpoint_scores=final_validation_metrics(client, job.id),
    )
    tuned, base = result.scores_of("tuned").scores, result.scores_of("base").scores
    assert result.kind == "free_text" and result.primary == "token_f1"
    assert tuned["token_f1"].value > base["token_f1"].value, (tuned, base)
    difference = result.difference("token_f1")
    assert difference.wins > difference.losses, difference
    assert result.verdict != "worse"
    assert tuned["valid_loss"].source.startswith("endpoint") and tuned["valid_loss"].value > 0

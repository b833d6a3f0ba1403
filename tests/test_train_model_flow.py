"""Training on GPU machines through Prefect: the executor seam of the local server, the
`train_model` flow on a tiny Llama, and (slow) a server whose jobs run on a real work pool."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from ftpipe.settings import LocalApiSettings
from ftpipe.training import protocol
from ftpipe.training.spec import TrainingSpec

EXAMPLES = 8


def _example(i: int) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"What is the code word number {i % 4}?"},
            {"role": "assistant", "content": f"The code word number {i % 4} is word-{i % 4}."},
        ]
    }


def _training_file(path: Path, count: int = EXAMPLES) -> Path:
    path.write_text("".join(json.dumps(_example(i)) + "\n" for i in range(count)))
    return path


def _job(folder: Path, tiny_model: Path, **values: Any) -> Path:
    """A job folder as the server writes it (spec.json only)."""
    folder.mkdir(parents=True)
    fields: dict[str, Any] = {
        "job_id": f"ftjob-{folder.name}",
        "base_model": "tiny",
        "base_model_path": tiny_model,
        "models_dir": folder.parent / "models",
        "training_file": _training_file(folder.parent / f"{folder.name}.jsonl"),
        "n_epochs": 2,
        "batch_size": 4,
        "max_seq_length": 128,
        "device": "cpu",
    }
    spec = TrainingSpec(**{**fields, **values})
    (folder / protocol.SPEC).write_text(spec.to_json())
    return folder


# The executor choice, no Prefect needed


def test_the_process_executor_is_the_default_and_prefect_is_a_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert LocalApiSettings().training_executor == "process"
    monkeypatch.setenv("FTPIPE_LOCAL_TRAINING_EXECUTOR", "prefect")
    monkeypatch.setenv("FTPIPE_LOCAL_TRAINING_DEPLOYMENT", "train_model/a100")
    local = LocalApiSettings()
    assert (local.training_executor, local.training_deployment) == ("prefect", "train_model/a100")
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        LocalApiSettings(training_executor="ssh")


def test_a_process_claim_is_followed_by_pid_without_prefect(tmp_path: Path) -> None:
    code = (
        "import json, os, sys; from pathlib import Path; from ftpipe.local_api import workers; "
        "from ftpipe.settings import LocalApiSettings; "
        "w = workers.start(Path(sys.argv[1]), 'o', LocalApiSettings(), key='k', tags=[]); "
        "os.waitpid(w['pid'], 0); "
        "print(json.dumps([sorted(w), workers.describe(w), 'prefect' in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    keys, described, imported = json.loads(done.stdout)
    assert "pid" in keys and "executor" not in keys and not imported
    assert described.startswith("worker process ")
    assert protocol.read_status(tmp_path)["error"]["code"] == "invalid_spec"  # it really ran


def test_the_http_layer_never_imports_prefect_even_with_the_prefect_executor(
    tmp_path: Path,
) -> None:
    code = (
        "import sys; from pathlib import Path; from ftpipe.local_api.app import create_app, "
        "shutdown_app; from ftpipe.settings import LocalApiSettings; "
        f"app = create_app(Path({str(tmp_path)!r}), "
        "LocalApiSettings(engine='real', training_executor='prefect')); shutdown_app(app); "
        "print('prefect' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False", done.stderr


# The Prefect executor and the flow against a real local Prefect API


@pytest.fixture(scope="module")
def prefect_api() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _logs(run_id: Any) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    return [log.message for log in logs]


def test_submit_starts_a_flow_run_that_the_executor_follows_and_cancels(
    prefect_api: None, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client

    from ftpipe.flows import train_model as executor

    executor.train_model.to_deployment(name="gpu").apply()
    job_dir = tmp_path / "ftjob-x"
    job_dir.mkdir()
    claim = executor.submit(job_dir, deployment="train_model/gpu", key="ftjob-x:0", tags=["t"])
    again = executor.submit(job_dir, deployment="train_model/gpu", key="ftjob-x:0", tags=["t"])
    assert again["flow_run_id"] == claim["flow_run_id"]  # a repeated submit finds its run
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(claim["flow_run_id"])
    assert run.parameters == {"job_dir": str(job_dir)} and "t" in run.tags
    assert run.state.is_scheduled()
    assert executor.alive(claim)  # waiting for a GPU machine counts as running
    assert not executor.owns_status(claim, {"pid": 1, "state": "succeeded"})  # no heartbeat yet
    assert executor.failure(claim) is None
    executor.cancel(claim)
    assert not executor.alive(claim)
    assert executor.failure(claim) is None  # cancelled is not a failure

    with pytest.raises(executor.ExecutorError, match="train_model/nowhere"):
        executor.submit(job_dir, deployment="train_model/nowhere", key="k", tags=[])


def test_the_flow_trains_a_job_and_logs_its_events(
    prefect_api: None, tmp_path: Path, tiny_model: Path
) -> None:
    from prefect.client.orchestration import get_client

    from ftpipe.flows.train_model import HEARTBEAT, train_model

    job_dir = _job(tmp_path / "ftjob-flow", tiny_model)
    state = train_model(job_dir=str(job_dir), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["state"] == "succeeded" and summary["step"] == 4
    status = protocol.read_status(job_dir)
    assert status["state"] == "succeeded" and (job_dir / "model").is_dir()
    beat = json.loads((job_dir / HEARTBEAT).read_text())
    run_id = state.state_details.flow_run_id
    assert beat["flow_run_id"] == str(run_id) and beat["worker_pid"] == status["pid"]
    messages = _logs(run_id)
    assert "Fine-tuning job started" in messages
    assert any(m.startswith("Step 4/4: training loss=") for m in messages)
    assert "Training finished: 4 steps" in messages
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts()
    progress = [a for a in artifacts if a.type == "progress" and a.flow_run_id == run_id]
    assert [a.data for a in progress] == [100.0]


def test_a_failed_job_fails_the_flow_run_with_its_error(
    prefect_api: None, tmp_path: Path, tiny_model: Path
) -> None:
    from ftpipe.flows.train_model import train_model

    job_dir = _job(tmp_path / "ftjob-bad", tiny_model, base_model_path=tmp_path / "nothing")
    state = train_model(job_dir=str(job_dir), return_state=True)
    assert state.is_failed()
    assert "invalid_base_model" in state.message and "not a model folder" in state.message
    assert protocol.read_status(job_dir)["error"]["code"] == "invalid_base_model"


def test_a_job_folder_this_machine_cannot_see_fails_the_run_plainly(
    prefect_api: None, tmp_path: Path
) -> None:
    from ftpipe.flows.train_model import train_model

    state = train_model(job_dir=str(tmp_path / "elsewhere"), return_state=True)
    assert state.is_failed() and "shared storage" in state.message


# A server whose jobs run as flow runs on a real work pool


@pytest.mark.slow
def test_a_server_with_the_prefect_executor_trains_on_a_work_pool(
    tmp_path: Path, tiny_model: Path
) -> None:
    """The README's commands: a `ftpipe-gpu` process pool, `prefect deploy --name
    train_model/gpu`, a worker on it, and `ftpipe local-api` with the prefect executor."""
    from tests.conftest import strict_client
    from tests.prefect_server import (
        ROOT,
        PrefectServer,
        Process,
        clean_environment,
        free_port,
        wait_until,
    )

    server = PrefectServer(tmp_path)
    started: list[Process] = []
    try:
        env = clean_environment(
            PREFECT_API_URL=server.api_url, PREFECT_HOME=str(tmp_path / "cli-prefect-home")
        )
        for args in (
            ["work-pool", "create", "ftpipe-gpu", "--type", "process"],
            ["deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "train_model/gpu"],
        ):
            done = subprocess.run(
                [sys.executable, "-m", "prefect", *args],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        home = tmp_path / "shared-home"  # one folder both sides see at the same path
        worker_env = env | {
            "FTPIPE_PROJECT_DIR": str(ROOT),
            "FTPIPE_HOME": str(home),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "HF_HUB_OFFLINE": "1",
        }
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", "ftpipe-gpu"]
        started.append(Process(command, worker_env, tmp_path / "worker.log", cwd=tmp_path))
        port = free_port()
        api_env = env | {
            "FTPIPE_HOME": str(home),
            "FTPIPE_LOCAL_ENGINE": "real",
            "FTPIPE_LOCAL_TRAINING_EXECUTOR": "prefect",
            "FTPIPE_LOCAL_TRAINING_DEVICE": "cpu",
            "FTPIPE_LOCAL_BASE_MODELS": json.dumps({"tiny": str(tiny_model)}),
            "HF_HUB_OFFLINE": "1",
        }
        api_command = [sys.executable, "-c", "from ftpipe.cli import run; run()"]
        api = Process(
            [*api_command, "local-api", "--port", str(port)], api_env, tmp_path / "api.log"
        )
        started.append(api)
        base_url = f"http://127.0.0.1:{port}/v1"
        client = strict_client(base_url)

        def listening() -> bool:
            api.check_alive()
            try:
                return bool(client.models.list())
            except openai.APIConnectionError:
                return False

        wait_until(listening, 60, "the local API starting", api.log)
        path = _training_file(tmp_path / "train.jsonl", 12)  # the API asks for 10 or more
        with path.open("rb") as handle:
            training = client.files.create(file=handle, purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model="tiny",
            training_file=training,
            method={
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 4}},
            },
            extra_body={"max_seq_length": 128},
        )
        deadline = time.monotonic() + 180
        while job.status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, (
                f"job stuck in {job.status}:\n{started[0].log.read_text()[-3000:]}"
            )
            time.sleep(0.5)
            job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", (job.error, started[0].log.read_text()[-3000:])
        events = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data]
        [submitted] = [m for m in events if m.startswith("Training submitted as flow run")]
        run_id = submitted.rsplit("(", 1)[1].rstrip(")")
        run = server.wait_for_run(run_id, 60, started[0].log)  # it ends just after the job
        assert run["state_type"] == "COMPLETED" and "ftpipe" in run["tags"]
        assert "Training finished: 3 steps" in events
        answer = client.chat.completions.create(
            model=job.fine_tuned_model,
            messages=[{"role": "user", "content": "What is the code word number 1?"}],
            max_tokens=4,
        )
        assert answer.choices[0].message.content is not None
    finally:
        for process in reversed(started):
            process.stop()
        server.stop()

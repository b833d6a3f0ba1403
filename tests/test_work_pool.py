"""The README's "More than one machine" commands, run as written against a real Prefect server:
a `process` work pool, `prefect deploy --all` from deployments/prefect.yaml, and a worker that
starts in another folder and runs a `finetune` deployment to a job in the registry."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.prefect_server import (
    ROOT,
    PrefectServer,
    Process,
    clean_environment,
    job_described,
    unique_csv_folder,
)

pytestmark = pytest.mark.slow
PREFECT = [sys.executable, "-m", "prefect"]


@dataclass
class Pool:
    server: PrefectServer
    worker: Process
    home: Path


def prefect(env: dict[str, str], *args: str) -> str:
    """A Prefect CLI command from the project folder, as the README runs it."""
    done = subprocess.run(
        [*PREFECT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    folder = tmp_path_factory.mktemp("work-pool")
    server = PrefectServer(folder)
    worker: Process | None = None
    try:
        env = clean_environment(
            PREFECT_API_URL=server.api_url, PREFECT_HOME=str(folder / "cli-prefect-home")
        )
        prefect(env, "work-pool", "create", "ftpipe", "--type", "process")
        prefect(env, "work-pool", "create", "ftpipe-gpu", "--type", "process")  # train_model/gpu
        prefect(env, "deploy", "--prefect-file", "deployments/prefect.yaml", "--all")
        home = folder / "ftpipe-home"
        elsewhere = folder / "worker-started-here"  # the pull step moves runs to the project
        elsewhere.mkdir()
        worker_env = env | {
            "FTPIPE_PROJECT_DIR": str(ROOT),
            "FTPIPE_HOME": str(home),
            "FTPIPE_BACKEND": "local",  # a deployed run must name its backend (README)
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        }
        command = [*PREFECT, "worker", "start", "--pool", "ftpipe"]
        worker = Process(command, worker_env, folder / "worker.log", cwd=elsewhere)
        yield Pool(server, worker, home)
    finally:
        if worker:
            worker.stop()
        server.stop()


def test_deploy_puts_every_deployment_in_the_pool(pool: Pool) -> None:
    deployments = pool.server.deployments()
    assert len(deployments) == 8
    pools = {(d["name"] == "gpu", d["work_pool_name"]) for d in deployments}
    assert pools == {(False, "ftpipe"), (True, "ftpipe-gpu")}  # train_model/gpu: GPU machines
    [poll] = [d for d in deployments if d["name"] == "every-5-minutes"]
    assert poll["schedules"][0]["schedule"]["interval"] == 300
    [manual] = [d for d in deployments if d["entrypoint"] == "flows/finetune.py:finetune"]
    [step] = manual["pull_steps"]  # kept unresolved: the worker fills in its own folder
    directory = step["prefect.deployments.steps.set_working_directory"]["directory"]
    assert directory == "{{ $FTPIPE_PROJECT_DIR }}"


def test_worker_runs_a_finetune_deployment(
    pool: Pool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [manual] = [
        d for d in pool.server.deployments() if d["entrypoint"] == "flows/finetune.py:finetune"
    ]
    data = unique_csv_folder(tmp_path / "worker-run")
    description = f"run by a worker {uuid.uuid4().hex[:6]}"
    parameters = {
        "paths": [str(data)],
        "description": description,
        "out_dir": str(tmp_path / "processed"),  # not the project's data/processed
    }
    response = pool.server.post(
        f"/deployments/{manual['id']}/create_flow_run",
        {"parameters": parameters, "state": {"type": "SCHEDULED"}},
    )
    assert response.status_code == 201, response.text
    run = pool.server.wait_for_run(response.json()["id"], 240, pool.worker.log)
    assert run["state_type"] == "COMPLETED", run["state"]
    record = job_described(pool.home, description, monkeypatch)
    assert record.status == "succeeded" and record.source_paths == [str(data)]
    assert any((tmp_path / "processed").glob("*/train.jsonl"))

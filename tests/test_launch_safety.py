"""Launch and upload never reuse the wrong thing nor do one thing twice, and never wait on a
dead run: an endpoint that ignores metadata filters, lost upload answers, a killed claimer.

Real local servers over HTTP, the official SDK with strict validation, real SQLite registries
and a real process killed with SIGKILL.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from ftpipe.finetune.launch import LaunchRequest, launch
from ftpipe.finetune.options import LaunchOptions
from ftpipe.finetune.upload import upload_training_file
from ftpipe.registry import Registry
from ftpipe.settings import FaultSettings
from tests.conftest import qa_examples, strict_client, write_jsonl
from tests.test_registry import claim_in_a_process, kill

if TYPE_CHECKING:
    import openai

    from tests.conftest import StartServer

ENDPOINT = "local:safety"


def training_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_jsonl(folder / f"{name}.jsonl", qa_examples(12, system=f"Dataset {name}."))


def request_for(client: openai.OpenAI, path: Path, dataset_id: str) -> LaunchRequest:
    return LaunchRequest(
        dataset_id=dataset_id,
        training_file=upload_training_file(client, path).file_id,
        validation_file=None,
        options=LaunchOptions(),
        endpoint=ENDPOINT,
        sources=[str(path)],
    )


def no_sleep(_seconds: float) -> None:
    """Waits between tries are the policy's business, not this test's."""


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")


# --- an endpoint that ignores the metadata filter ------------------------------------------


def test_a_dataset_never_adopts_another_datasets_job(
    start_server: StartServer, tmp_path: Path, registry: Registry
) -> None:
    client = strict_client(start_server(ignore_metadata_filter=True).base_url)
    request_a = request_for(client, training_file(tmp_path, "a"), "ds-a")
    request_b = request_for(client, training_file(tmp_path, "b"), "ds-b")

    job_a = launch(client, registry, request_a, sleep=no_sleep).job
    result_b = launch(client, registry, request_b, sleep=no_sleep)

    assert not result_b.reused
    assert result_b.job.job_id != job_a.job_id
    on_server = client.fine_tuning.jobs.retrieve(result_b.job.job_id)
    assert on_server.training_file == request_b.training_file
    assert on_server.metadata and on_server.metadata["ftpipe_dataset"] == "ds-b"
    assert [r.job_id for r in registry.by_launch_key(request_a.key())] == [job_a.job_id]
    again = launch(client, registry, request_b, sleep=no_sleep)  # still idempotent
    assert (again.reused, again.job.job_id) == (True, result_b.job.job_id)


# --- uploads whose answer was lost ---------------------------------------------------------


def test_a_lost_upload_answer_never_stores_a_second_copy(
    start_server: StartServer, tmp_path: Path
) -> None:
    root = tmp_path / "server-state"
    clean = strict_client(start_server(root).base_url)
    faulty = start_server(root, faults=FaultSettings(rate_500_after=0.5, seed=5))
    lost: list[httpx.Response] = []

    def watch(response: httpx.Response) -> None:
        sent = response.request
        if sent.method == "POST" and sent.url.path.endswith("/files") and response.is_error:
            lost.append(response)

    hooked = httpx.Client(event_hooks={"response": [watch]})
    client = strict_client(faulty.base_url, max_retries=8, http_client=hooked)
    paths = [training_file(tmp_path, f"upload-{index}") for index in range(4)]
    uploaded = [upload_training_file(client, path) for path in paths]

    assert lost, "the seed should lose at least one files.create answer"
    stored = list(clean.files.list(purpose="fine-tune"))
    assert sorted(file.filename for file in stored) == sorted(u.filename for u in uploaded)
    assert {file.id for file in stored} == {u.file_id for u in uploaded}


# --- a run killed between its claim and the job's creation ---------------------------------


def test_a_claim_of_a_killed_run_is_taken_over_at_once(
    start_server: StartServer, tmp_path: Path, registry: Registry
) -> None:
    client = strict_client(start_server().base_url)
    request = request_for(client, training_file(tmp_path, "killed"), "ds-killed")
    claimer = claim_in_a_process(registry.url, f"{request.key()}#0")  # launch's first claim
    kill(claimer)

    result = launch(client, registry, request, claim_timeout=0, sleep=no_sleep)

    assert not result.reused
    assert [job.id for job in client.fine_tuning.jobs.list()] == [result.job.job_id]
    assert registry.launched_job(f"{request.key()}#0") == result.job.job_id

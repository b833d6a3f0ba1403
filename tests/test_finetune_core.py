"""Uploading, launching (exactly once), waiting and rebuilding, against real local servers.

No Prefect here: these are the library calls the tasks wrap, over real HTTP with the official
SDK (strict response validation), real files and real SQLite registries.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from ftpipe import retry
from ftpipe.finetune.launch import (
    LaunchError,
    LaunchOptions,
    LaunchRefused,
    LaunchRequest,
    LaunchResult,
    launch,
)
from ftpipe.finetune.poll import Backoff, JobFailed, WaitTimeout, wait_for_job
from ftpipe.finetune.upload import content_hash, remote_name, upload_training_file
from ftpipe.jobs import TERMINAL
from ftpipe.registry import Registry
from ftpipe.retry import is_transient
from ftpipe.settings import FaultSettings
from tests.conftest import qa_examples, strict_client, write_jsonl

if TYPE_CHECKING:
    from tests.conftest import StartServer

ENDPOINT = "local:test-endpoint"  # several servers share one state folder: one endpoint
FAST = Backoff(initial=0.01, maximum=0.02)


def no_sleep(_seconds: float) -> None:
    """The launch's pause between create attempts, shortened so tests stay quick."""
    time.sleep(0.01)


def training_file(folder: Path, name: str, count: int = 12) -> Path:
    """A valid chat JSONL file whose content differs per name."""
    folder.mkdir(parents=True, exist_ok=True)
    return write_jsonl(folder / f"{name}.jsonl", qa_examples(count, system=f"Dataset {name}."))


def request_for(
    client: openai.OpenAI, path: Path, dataset_id: str, **options: Any
) -> LaunchRequest:
    uploaded = upload_training_file(client, path)
    return LaunchRequest(
        dataset_id=dataset_id,
        training_file=uploaded.file_id,
        validation_file=None,
        options=LaunchOptions(**options),
        endpoint=ENDPOINT,
        sources=[str(path)],
        description=f"test {dataset_id}",
    )


def registry_at(path: Path) -> Registry:
    return Registry(f"sqlite:///{path}")


def server_jobs(client: openai.OpenAI, **metadata: str) -> list[FineTuningJob]:
    return list(client.fine_tuning.jobs.list(metadata=metadata or openai.omit, limit=100))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "server-state"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "registry" / "registry.sqlite3"


# --- upload -----------------------------------------------------------------------------------


def test_small_file_goes_through_files_create_and_is_reused(
    start_server: StartServer, tmp_path: Path
) -> None:
    client = strict_client(start_server().base_url)
    path = training_file(tmp_path, "small")

    first = upload_training_file(client, path)
    assert first.how == "files"
    assert first.bytes == path.stat().st_size
    assert first.filename == remote_name(path, content_hash(path))
    assert content_hash(path)[:16] in first.filename
    on_server = client.files.retrieve(first.file_id)
    assert (on_server.filename, on_server.bytes, on_server.purpose) == (
        first.filename,
        first.bytes,
        "fine-tune",
    )
    assert client.files.content(first.file_id).read() == path.read_bytes()

    again = upload_training_file(client, path)
    assert again.how == "reused"
    assert again.file_id == first.file_id
    assert len(list(client.files.list(purpose="fine-tune"))) == 1

    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    changed = upload_training_file(client, path)
    assert changed.how == "files"
    assert changed.file_id != first.file_id


def test_large_file_goes_through_the_uploads_api(start_server: StartServer, tmp_path: Path) -> None:
    client = strict_client(start_server().base_url)
    path = training_file(tmp_path, "chunked", count=16)
    size = path.stat().st_size
    assert 1500 < size < 4000  # several 300-byte parts

    uploaded = upload_training_file(client, path, direct_max_bytes=100, part_bytes=300)
    assert uploaded.how == "uploads"
    assert uploaded.bytes == size
    assert client.files.retrieve(uploaded.file_id).bytes == size
    assert client.files.content(uploaded.file_id).read() == path.read_bytes()

    again = upload_training_file(client, path, direct_max_bytes=100, part_bytes=300)
    assert (again.how, again.file_id) == ("reused", uploaded.file_id)


# --- launch: once per dataset and options --------------------------------------------------


def test_sequential_launches_reuse_the_job_and_force_makes_a_new_one(
    start_server: StartServer, tmp_path: Path, db: Path
) -> None:
    client = strict_client(start_server(job_speed="seconds:30").base_url)
    registry = registry_at(db)
    request = request_for(client, training_file(tmp_path, "seq"), "ds-seq")

    first = launch(client, registry, request, sleep=no_sleep)
    assert not first.reused
    assert first.job.status == "validating_files"
    assert first.job.dataset_id == "ds-seq"
    assert first.job.launch_key == request.key()
    assert registry.get(first.job.job_id) is not None

    second = launch(client, registry, request, sleep=no_sleep)
    assert second.reused
    assert second.job.job_id == first.job.job_id
    assert [job.id for job in server_jobs(client)] == [first.job.job_id]

    other_options = request_for(client, training_file(tmp_path, "seq"), "ds-seq", n_epochs=2)
    assert other_options.key() != request.key()
    with_epochs = launch(client, registry, other_options, sleep=no_sleep)
    assert not with_epochs.reused
    assert with_epochs.job.job_id != first.job.job_id

    request.force = True
    forced = launch(client, registry, request, sleep=no_sleep)
    assert not forced.reused
    assert forced.job.job_id not in (first.job.job_id, with_epochs.job.job_id)

    request.force = False
    after = launch(client, registry, request, sleep=no_sleep)
    assert after.reused
    assert after.job.job_id == forced.job.job_id  # the newest job for the key
    assert len(server_jobs(client)) == 3
    assert {r.job_id for r in registry.by_launch_key(request.key())} == {
        first.job.job_id,
        forced.job.job_id,
    }


def test_a_failed_job_is_not_reused(start_server: StartServer, tmp_path: Path, db: Path) -> None:
    client = strict_client(start_server().base_url)
    registry = registry_at(db)
    request = request_for(client, training_file(tmp_path, "nine", count=9), "ds-nine")

    first = launch(client, registry, request, sleep=no_sleep)
    assert client.fine_tuning.jobs.retrieve(first.job.job_id).status == "failed"

    second = launch(client, registry, request, sleep=no_sleep)
    assert not second.reused
    assert second.job.job_id != first.job.job_id
    assert registry.get(first.job.job_id).status == "failed"  # type: ignore[union-attr]
    assert len(server_jobs(client)) == 2


def test_a_cancelled_job_is_not_reused(start_server: StartServer, tmp_path: Path, db: Path) -> None:
    client = strict_client(start_server(job_speed="seconds:30").base_url)
    registry = registry_at(db)
    request = request_for(client, training_file(tmp_path, "cancel"), "ds-cancel")

    first = launch(client, registry, request, sleep=no_sleep)
    client.fine_tuning.jobs.cancel(first.job.job_id)

    second = launch(client, registry, request, sleep=no_sleep)
    assert not second.reused
    assert second.job.job_id != first.job.job_id
    assert registry.get(first.job.job_id).status == "cancelled"  # type: ignore[union-attr]

    third = launch(client, registry, request, sleep=no_sleep)
    assert (third.reused, third.job.job_id) == (True, second.job.job_id)
    assert len(server_jobs(client)) == 2


def test_concurrent_launches_make_one_job(
    start_server: StartServer, tmp_path: Path, db: Path
) -> None:
    url = start_server(job_speed="seconds:30").base_url
    request = request_for(strict_client(url), training_file(tmp_path, "race"), "ds-race")
    registry_at(db)  # tables exist before the race
    barrier = threading.Barrier(2)
    results: list[LaunchResult] = []
    errors: list[BaseException] = []

    def run() -> None:
        client, registry = strict_client(url), registry_at(db)
        barrier.wait()
        try:
            results.append(launch(client, registry, request, claim_timeout=30, sleep=no_sleep))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    jobs = server_jobs(strict_client(url))
    assert len(jobs) == 1
    assert {result.job.job_id for result in results} == {jobs[0].id}
    assert sorted(result.reused for result in results) == [False, True]
    assert [r.job_id for r in registry_at(db).jobs()] == [jobs[0].id]


def test_a_launch_racing_past_a_cancelled_job_makes_one_new_job(
    start_server: StartServer, tmp_path: Path, db: Path
) -> None:
    url = start_server(job_speed="seconds:30").base_url
    client_a = strict_client(url)
    request = request_for(client_a, training_file(tmp_path, "again"), "ds-again")
    cancelled = launch(client_a, registry_at(db), request, sleep=no_sleep).job.job_id
    client_a.fine_tuning.jobs.cancel(cancelled)
    results: dict[str, LaunchResult] = {}

    def other_run_launches_meanwhile(sent: httpx.Request) -> None:
        """While B re-reads the cancelled job, a second run (A) launches from start to end."""
        if sent.url.path.endswith(f"/fine_tuning/jobs/{cancelled}") and "a" not in results:
            results["a"] = launch(client_a, registry_at(db), request, sleep=no_sleep)

    hooked = httpx.Client(event_hooks={"request": [other_run_launches_meanwhile]})
    client_b = strict_client(url, http_client=hooked)
    results["b"] = launch(client_b, registry_at(db), request, sleep=no_sleep)

    assert not results["a"].reused
    new_jobs = [j.id for j in server_jobs(client_a, ftpipe_launch_key=request.key())]
    assert len(new_jobs) == 2  # the cancelled one and exactly one new one
    assert results["b"].job.job_id == results["a"].job.job_id


# --- launch: lost responses, rate limits and server errors ----------------------------------


def test_lost_create_responses_never_make_a_second_job(
    start_server: StartServer, tmp_path: Path, root: Path, db: Path
) -> None:
    clean = strict_client(start_server(root).base_url)
    requests = [
        request_for(clean, training_file(tmp_path, f"lost-{i}"), f"ds-lost-{i}") for i in range(4)
    ]
    faulty = start_server(root, faults=FaultSettings(rate_500_after=0.5, seed=11))
    lost_creates: list[httpx.Response] = []

    def watch(response: httpx.Response) -> None:
        request = response.request
        creating = request.method == "POST" and request.url.path.endswith("/fine_tuning/jobs")
        if creating and response.status_code == 500:
            lost_creates.append(response)

    client = strict_client(
        faulty.base_url, max_retries=8, http_client=httpx.Client(event_hooks={"response": [watch]})
    )
    registry = registry_at(db)
    results = [launch(client, registry, request, sleep=no_sleep) for request in requests]

    assert lost_creates, "the seed should lose at least one create response"
    for request, result in zip(requests, results, strict=True):
        on_server = server_jobs(clean, ftpipe_launch_key=request.key())
        assert [job.id for job in on_server] == [result.job.job_id]
        assert [r.job_id for r in registry.by_launch_key(request.key())] == [result.job.job_id]
        assert not result.reused
    assert len(server_jobs(clean)) == len(requests)


def test_rate_limits_and_server_errors_lose_no_launch(
    start_server: StartServer, tmp_path: Path, root: Path, db: Path
) -> None:
    clean = strict_client(start_server(root).base_url)
    requests = [
        request_for(clean, training_file(tmp_path, f"busy-{i}"), f"ds-busy-{i}") for i in range(5)
    ]
    faults = FaultSettings(rate_429=0.3, rate_500=0.2, seed=7)
    client = strict_client(start_server(root, faults=faults).base_url, max_retries=10)
    registry = registry_at(db)

    def launch_with_caller_retries(request: LaunchRequest) -> LaunchResult:
        """As the Prefect task does: a transient failure of the whole launch is retried."""
        for _ in range(5):
            try:
                return launch(client, registry, request, sleep=no_sleep)
            except Exception as error:
                if not is_transient(error):
                    raise
        raise AssertionError(f"{request.dataset_id} never launched")

    results = [launch_with_caller_retries(request) for request in requests]

    jobs = server_jobs(clean)
    assert len(jobs) == 5
    assert {job.id for job in jobs} == {result.job.job_id for result in results}
    assert {r.job_id for r in registry.jobs()} == {job.id for job in jobs}
    for request in requests:
        assert len(server_jobs(clean, ftpipe_launch_key=request.key())) == 1


# --- launch: refusals and rejections -------------------------------------------------------


def test_a_refusal_says_what_to_do_and_leaves_nothing_behind(
    start_server: StartServer, tmp_path: Path, root: Path, db: Path
) -> None:
    clean = strict_client(start_server(root).base_url)
    request = request_for(clean, training_file(tmp_path, "refused"), "ds-refused")
    refusing = strict_client(start_server(root, refuse_fine_tuning=True).base_url)
    registry = registry_at(db)

    with pytest.raises(LaunchRefused) as refused:
        launch(refusing, registry, request, sleep=no_sleep)
    message = str(refused.value)
    assert "refused" in message
    assert "wind" in message
    assert "OPENAI_BASE_URL" in message
    assert "403" in message
    assert registry.jobs() == []
    assert server_jobs(clean) == []

    # the claim was released: a permissive endpoint on the same state launches at once
    result = launch(clean, registry, request, claim_timeout=1, sleep=no_sleep)
    assert not result.reused
    assert [r.job_id for r in registry.jobs()] == [result.job.job_id]


def test_a_rejected_request_is_a_launch_error_with_the_endpoints_message(
    start_server: StartServer, tmp_path: Path, db: Path
) -> None:
    client = strict_client(start_server().base_url)
    registry = registry_at(db)
    request = request_for(client, training_file(tmp_path, "bad"), "ds-bad", model="no-such-model")

    with pytest.raises(LaunchError) as rejected:
        launch(client, registry, request, claim_timeout=1, sleep=no_sleep)
    assert not isinstance(rejected.value, LaunchRefused)
    assert "no-such-model" in str(rejected.value)
    assert "not available for fine-tuning" in str(rejected.value)
    assert registry.jobs() == []

    request.options = LaunchOptions()
    assert not launch(client, registry, request, claim_timeout=1, sleep=no_sleep).reused


# --- waiting ------------------------------------------------------------------------------------


def new_job(client: openai.OpenAI, path: Path) -> FineTuningJob:
    uploaded = upload_training_file(client, path)
    return client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.file_id)


def test_waiting_relays_every_event_once_in_order(
    start_server: StartServer, tmp_path: Path
) -> None:
    client = strict_client(start_server(job_speed="retrieves:6").base_url)
    job = new_job(client, training_file(tmp_path, "poll"))
    events: list[FineTuningJobEvent] = []
    statuses: list[str] = []

    done = wait_for_job(
        client,
        job.id,
        on_event=events.append,
        on_status=lambda seen: statuses.append(seen.status),
        backoff=FAST,
    )

    assert done.status == "succeeded"
    assert done.fine_tuned_model
    assert statuses == ["queued", "running", "succeeded"]
    ids = [event.id for event in events]
    assert len(ids) == len(set(ids))
    everything = list(client.fine_tuning.jobs.list_events(job.id, limit=1000))
    assert ids == [event.id for event in reversed(everything)]
    assert [e.created_at for e in events] == sorted(e.created_at for e in events)
    assert events[0].message == f"Created fine-tuning job: {job.id}"
    assert any(event.type == "metrics" for event in events)
    assert f"New fine-tuned model created: {done.fine_tuned_model}" in [e.message for e in events]
    assert events[-1].message == "The job has successfully completed"


def test_waiting_through_injected_faults_relays_every_event_once(
    start_server: StartServer,
    tmp_path: Path,
    root: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each look at the job is retried by the one policy, and every retry is logged."""
    monkeypatch.setattr(retry, "INITIAL_BACKOFF_S", 0.001)
    monkeypatch.setattr(retry, "MAX_BACKOFF_S", 0.01)
    clean = strict_client(start_server(root, job_speed="retrieves:6").base_url)
    job = new_job(clean, training_file(tmp_path, "faulty-poll"))
    faults = FaultSettings(rate_429=0.3, rate_500=0.2, seed=2, retry_after_s=0.001)
    faulty = strict_client(start_server(root, job_speed="retrieves:6", faults=faults).base_url)
    events: list[FineTuningJobEvent] = []

    with caplog.at_level(logging.INFO, logger="ftpipe"):
        done = wait_for_job(faulty, job.id, on_event=events.append, backoff=FAST, sleep=no_sleep)

    assert done.status == "succeeded"
    everything = list(clean.fine_tuning.jobs.list_events(job.id, limit=1000))
    assert [event.id for event in events] == [event.id for event in reversed(everything)]
    assert f"polling {job.id}: " in caplog.text and "retrying in" in caplog.text


def test_waiting_on_a_failing_job_raises_its_own_error(
    start_server: StartServer, tmp_path: Path
) -> None:
    client = strict_client(start_server(job_speed="retrieves:3").base_url)
    job = new_job(client, training_file(tmp_path, "few", count=9))
    events: list[FineTuningJobEvent] = []

    with pytest.raises(JobFailed) as failed:
        wait_for_job(client, job.id, on_event=events.append, backoff=FAST)

    on_server = client.fine_tuning.jobs.retrieve(job.id)
    assert on_server.status == "failed"
    assert on_server.error is not None and on_server.error.message
    assert failed.value.job.status == "failed"
    assert on_server.error.message in str(failed.value)
    assert job.id in str(failed.value)
    assert events[-1].level == "error"
    assert events[-1].message == on_server.error.message


def test_a_slow_job_ends_the_wait_but_keeps_running(
    start_server: StartServer, tmp_path: Path
) -> None:
    client = strict_client(start_server(job_speed="seconds:30").base_url)
    job = new_job(client, training_file(tmp_path, "slow"))

    with pytest.raises(WaitTimeout) as slow:
        wait_for_job(client, job.id, timeout=0.2, backoff=FAST)

    assert slow.value.job.id == job.id
    assert slow.value.job.status not in TERMINAL
    assert "poll_jobs" in str(slow.value)
    assert client.fine_tuning.jobs.retrieve(job.id).status not in TERMINAL


# --- the registry, rebuilt from the endpoint ---------------------------------------------


def test_a_lost_registry_is_rebuilt_from_the_endpoint(
    start_server: StartServer, tmp_path: Path, db: Path
) -> None:
    client = strict_client(start_server().base_url)
    registry = registry_at(db)
    requests = [
        request_for(client, training_file(tmp_path, f"keep-{i}"), f"ds-keep-{i}") for i in range(2)
    ]
    launched = {r.dataset_id: launch(client, registry, r, sleep=no_sleep).job for r in requests}
    registry.close()
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()

    rebuilt = registry_at(db)
    assert rebuilt.jobs() == []
    assert rebuilt.rebuild_from_api(client, ENDPOINT) == 2

    by_dataset = {record.dataset_id: record for record in rebuilt.jobs()}
    assert set(by_dataset) == {"ds-keep-0", "ds-keep-1"}
    for dataset_id, job in launched.items():
        record = by_dataset[dataset_id]
        assert record.job_id == job.job_id
        assert record.launch_key == job.launch_key
        assert record.source_paths == job.source_paths
        assert record.description == f"test {dataset_id}"

    again = launch(client, rebuilt, requests[0], sleep=no_sleep)
    assert (again.reused, again.job.job_id) == (True, launched["ds-keep-0"].job_id)
    assert len(server_jobs(client)) == 2

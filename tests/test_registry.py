"""The job registry on real SQLite files and a real PostgreSQL server: upserts, launch claims
across threads and processes, job_ids.json, and rebuilding from the endpoint's own job list."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, select, update

from ftpipe.errors import InputError
from ftpipe.jobs import TERMINAL
from ftpipe.registry import (
    JobRecord,
    Registry,
    current_owner,
    database_url,
    default_registry,
    launches_table,
)
from tests.conftest import require_system
from tests.postgres import PostgresServer, find_bin_dir

if TYPE_CHECKING:
    import openai
    from openai.types.fine_tuning import FineTuningJob

    from tests.conftest import StartServer

OURS = {
    "ftpipe": "1",
    "ftpipe_dataset": "abc",
    "ftpipe_launch_key": "k1",
    "ftpipe_description": "d",
    "ftpipe_sources": '["a.csv"]',
}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


NewUrl = Callable[[], str]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; each test gets its own databases on it."""
    bin_dir = find_bin_dir()
    require_system(bin_dir is not None, "PostgreSQL (initdb, pg_ctl)")
    assert bin_dir is not None
    with PostgresServer(bin_dir) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def new_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewUrl]:
    """Makes empty databases of one backend: SQLite files or PostgreSQL databases."""
    made: list[str] = []
    server: PostgresServer | None = None
    if request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")

    def new() -> str:
        if server is None:
            url = sqlite_url(tmp_path / f"db-{len(made)}" / "registry.sqlite3")
        else:
            url = server.create_database()
        made.append(url)
        return url

    yield new
    if server is not None:
        for url in made:
            server.drop_database(url)


@pytest.fixture
def db_url(new_db_url: NewUrl) -> str:
    return new_db_url()


@pytest.fixture
def registry(db_url: str) -> Registry:
    return Registry(db_url)


def job(job_id: str, created_at: int, **kwargs: Any) -> JobRecord:
    values: dict[str, Any] = {"status": "running", "base_model": "gpt-4o-mini-2024-07-18"}
    return JobRecord(job_id=job_id, created_at=created_at, **{**values, **kwargs})


def run_processes(target: Callable[..., None], args: list[tuple[Any, ...]]) -> list[Any]:
    """Run `target(queue, *a)` in one spawned process per args, return what each put."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=target, args=(queue, *a)) for a in args]
    for process in processes:
        process.start()
    results = [queue.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return results


# --- spawned workers: top level so a spawned interpreter can import them -------------------


def claim_worker(queue: Any, url: str, key: str, barrier: Any) -> None:
    registry = Registry(url)
    barrier.wait(timeout=30)
    queue.put(registry.claim_launch(key))


def record_worker(queue: Any, url: str, worker: int, count: int) -> None:
    try:
        registry = Registry(url)
        for index in range(count):
            registry.record(job(f"ftjob-{worker}-{index}", 1_700_000_000 + index))
        queue.put("ok")
    except Exception as error:  # reported to the test, which names it
        queue.put(f"{type(error).__name__}: {error}")


# --- settings ------------------------------------------------------------------------------


def test_default_url_lives_in_the_state_folder(isolated_env: Path) -> None:
    url = database_url()
    assert url == f"sqlite:///{isolated_env.resolve()}/registry.sqlite3"
    registry = default_registry()
    registry.record(job("ftjob-1", 1))
    assert (isolated_env / "registry.sqlite3").exists()


def test_database_url_variable_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = sqlite_url(tmp_path / "elsewhere" / "jobs.db")
    monkeypatch.setenv("FTPIPE_DATABASE_URL", url)
    assert database_url() == url
    default_registry().record(job("ftjob-1", 1))
    assert (tmp_path / "elsewhere" / "jobs.db").exists()


def test_database_url_variable_reaches_postgresql(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_server.create_database()
    try:
        monkeypatch.setenv("FTPIPE_DATABASE_URL", url)
        registry = default_registry()
        assert registry.engine.dialect.name == "postgresql"
        registry.record(job("ftjob-1", 1, source_paths=["a.csv"]))
        assert Registry(url).get("ftjob-1") == job("ftjob-1", 1, source_paths=["a.csv"])
        registry.close()
    finally:
        postgres_server.drop_database(url)


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    registry = Registry(sqlite_url(tmp_path / "registry.sqlite3"))
    with registry.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


# --- record / get ----------------------------------------------------------------------------


def test_record_round_trip(registry: Registry) -> None:
    full = job(
        "ftjob-1",
        1_700_000_000,
        dataset_id="ds-1",
        source_paths=["a.csv", "b.csv"],
        training_file="file-t",
        validation_file="file-v",
        options={"n_epochs": 3, "suffix": None},
        description="first",
        endpoint="http://127.0.0.1:1/v1",
        launch_key="key-1",
    )
    registry.record(full)
    assert registry.get("ftjob-1") == full
    assert registry.get("ftjob-missing") is None


def test_partial_update_keeps_what_it_does_not_give(registry: Registry) -> None:
    registry.record(
        job("ftjob-1", 100, source_paths=["a.csv"], options={"n_epochs": 2}, dataset_id="ds")
    )
    registry.record(JobRecord("ftjob-1", "succeeded", "", fine_tuned_model="ft:m", finished_at=200))
    stored = registry.get("ftjob-1")
    assert stored is not None
    assert stored.status == "succeeded"
    assert stored.fine_tuned_model == "ft:m"
    assert stored.finished_at == 200
    assert stored.source_paths == ["a.csv"]
    assert stored.options == {"n_epochs": 2}
    assert stored.dataset_id == "ds"
    assert stored.base_model == "gpt-4o-mini-2024-07-18"
    assert stored.created_at == 100


def test_terminal_status_never_regresses(registry: Registry) -> None:
    registry.record(job("ftjob-1", 1, status="succeeded"))
    registry.record(job("ftjob-1", 1, status="running"))
    assert registry.get("ftjob-1").status == "succeeded"  # type: ignore[union-attr]


def test_endpoints_are_compared_without_trailing_slash(registry: Registry) -> None:
    registry.record(job("ftjob-1", 1, endpoint="http://h/v1/"))
    assert [r.job_id for r in registry.jobs(endpoint="http://h/v1")] == ["ftjob-1"]


# --- jobs / active -------------------------------------------------------------------------


def test_jobs_newest_first_and_by_endpoint(registry: Registry) -> None:
    registry.record(job("ftjob-old", 100, endpoint="http://a/v1"))
    registry.record(job("ftjob-new", 300, endpoint="http://a/v1", status="succeeded"))
    registry.record(job("ftjob-mid", 200, endpoint="http://b/v1"))
    registry.record(job("ftjob-tie", 200, endpoint="http://b/v1", status="failed"))
    ids = [r.job_id for r in registry.jobs()]
    assert ids == ["ftjob-new", "ftjob-tie", "ftjob-mid", "ftjob-old"]
    assert [r.job_id for r in registry.jobs(endpoint="http://a/v1")] == ["ftjob-new", "ftjob-old"]
    assert [r.job_id for r in registry.active()] == ["ftjob-mid", "ftjob-old"]
    assert [r.job_id for r in registry.active(endpoint="http://b/v1")] == ["ftjob-mid"]
    assert all(r.status not in TERMINAL for r in registry.active())


def test_by_launch_key_newest_first(registry: Registry) -> None:
    registry.record(job("ftjob-1", 1, launch_key="k"))
    registry.record(job("ftjob-2", 2, launch_key="k"))
    registry.record(job("ftjob-3", 3, launch_key="other"))
    assert [r.job_id for r in registry.by_launch_key("k")] == ["ftjob-2", "ftjob-1"]
    assert registry.by_launch_key("none") == []


# --- update_from_job with real SDK objects ---------------------------------------------------


def create_job(client: openai.OpenAI, path: Path, **kwargs: Any) -> FineTuningJob:
    file = client.files.create(file=path, purpose="fine-tune")
    return client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, **kwargs)


def test_update_from_job(registry: Registry, start_server: StartServer, tmp_path: Path) -> None:
    from tests.conftest import qa_examples, strict_client, write_jsonl

    server = start_server()
    client = strict_client(server.base_url)
    created = create_job(client, write_jsonl(tmp_path / "t.jsonl", qa_examples(10)))
    first = registry.update_from_job(created, server.base_url)
    assert first.status == "validating_files"
    assert first.created_at == created.created_at
    assert first.training_file == created.training_file
    registry.record(JobRecord(created.id, created.status, "", source_paths=["t.csv"]))

    done = client.fine_tuning.jobs.retrieve(created.id)
    assert done.status == "succeeded"
    fresh = registry.update_from_job(done, server.base_url)
    assert fresh.status == "succeeded"
    assert fresh.fine_tuned_model == done.fine_tuned_model is not None
    assert fresh.finished_at == done.finished_at is not None
    assert fresh.trained_tokens == done.trained_tokens
    assert fresh.source_paths == ["t.csv"]
    assert fresh.endpoint == server.base_url.rstrip("/")
    assert registry.update_from_job(created, server.base_url).status == "succeeded"
    assert registry.active() == []


def test_update_from_failed_job_keeps_its_error(
    registry: Registry, start_server: StartServer, tmp_path: Path
) -> None:
    from tests.conftest import qa_examples, strict_client, write_jsonl

    server = start_server()
    client = strict_client(server.base_url)
    created = create_job(client, write_jsonl(tmp_path / "few.jsonl", qa_examples(3)))
    failed = client.fine_tuning.jobs.retrieve(created.id)
    assert failed.status == "failed" and failed.error is not None
    stored = registry.update_from_job(failed, server.base_url)
    assert stored.status == "failed"
    assert stored.error == failed.error.message
    assert stored.error


# --- launch claims ---------------------------------------------------------------------------


def test_claim_complete_and_release(registry: Registry) -> None:
    assert registry.launched_job("k") is None
    assert registry.claim_launch("k")
    assert not registry.claim_launch("k")
    assert registry.launched_job("k") is None
    registry.release_launch("k")
    assert registry.claim_launch("k")
    registry.complete_launch("k", "ftjob-1")
    assert registry.launched_job("k") == "ftjob-1"
    registry.release_launch("k")  # a completed claim stays
    assert registry.launched_job("k") == "ftjob-1"
    assert not registry.claim_launch("k")


def test_threads_racing_for_a_claim_one_wins(registry: Registry, db_url: str) -> None:
    barrier = threading.Barrier(8)
    wins: list[bool] = []
    registries = [registry, *(Registry(db_url) for _ in range(7))]

    def race(own: Registry) -> None:
        barrier.wait(timeout=30)
        wins.append(own.claim_launch("key"))

    threads = [threading.Thread(target=race, args=(own,)) for own in registries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(wins) == [False] * 7 + [True]


def test_processes_racing_for_a_claim_one_wins(registry: Registry, db_url: str) -> None:
    barrier = multiprocessing.get_context("spawn").Barrier(2)
    wins = run_processes(claim_worker, [(db_url, "key", barrier), (db_url, "key", barrier)])
    assert sorted(wins) == [False, True]
    assert registry.launched_job("key") is None
    assert not registry.claim_launch("key")


def wait_in_thread(registry: Registry, key: str) -> tuple[threading.Thread, list[str | None]]:
    result: list[str | None] = []
    thread = threading.Thread(target=lambda: result.append(registry.wait_for_launch(key)))
    thread.start()
    return thread, result


def test_wait_for_launch_gets_the_winners_job(registry: Registry, db_url: str) -> None:
    assert registry.claim_launch("k")
    thread, result = wait_in_thread(Registry(db_url), "k")
    registry.complete_launch("k", "ftjob-42")
    thread.join(timeout=30)
    assert result == ["ftjob-42"]


def test_wait_for_launch_none_after_release(registry: Registry, db_url: str) -> None:
    assert registry.claim_launch("k")
    thread, result = wait_in_thread(Registry(db_url), "k")
    registry.release_launch("k")
    thread.join(timeout=30)
    assert result == [None]
    assert registry.claim_launch("k")


def test_wait_for_launch_gives_up_on_a_pending_claim(registry: Registry) -> None:
    assert registry.claim_launch("k")
    naps: list[float] = []
    assert registry.wait_for_launch("k", timeout=0.0, sleep=naps.append) is None
    assert registry.wait_for_launch("never-claimed") is None


def test_stale_claim_is_taken_over_once(registry: Registry) -> None:
    assert registry.claim_launch("k")
    assert not registry.claim_launch("k", stale_after=3600)
    assert registry.claim_launch("k", stale_after=0)
    registry.complete_launch("k", "ftjob-1")
    assert not registry.claim_launch("k", stale_after=0)  # completed claims are never stale
    assert registry.launched_job("k") == "ftjob-1"


CLAIMER = """
import sys, time
from ftpipe.registry import Registry
assert Registry(sys.argv[1]).claim_launch(sys.argv[2])
print("claimed", flush=True)
time.sleep(600)
"""


def claim_in_a_process(url: str, claim: str) -> subprocess.Popen[str]:
    """A process that holds `claim` and then hangs, as a run stopped mid-launch."""
    process = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, url, claim], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "claimed"
    return process


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def claim_owner(registry: Registry, key: str) -> str | None:
    query = select(launches_table.c.owner).where(launches_table.c.launch_key == key)
    with registry.engine.connect() as conn:
        return conn.execute(query).scalar_one()


def test_a_claim_records_its_owner(registry: Registry) -> None:
    assert registry.claim_launch("k")
    host, pid, started = (claim_owner(registry, "k") or "").split("|")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert float(started) > 0


def test_a_claim_of_a_killed_process_is_taken_over_at_once(registry: Registry) -> None:
    claimer = claim_in_a_process(registry.url, "k")
    try:
        assert not registry.claim_launch("k", stale_after=3600)  # its owner still runs
    finally:
        kill(claimer)
    assert not registry.claim_launch("k")  # without stale_after, never taken over
    naps: list[float] = []
    assert registry.wait_for_launch("k", timeout=3600, sleep=naps.append) is None
    assert naps == []  # a dead owner is not waited for
    assert registry.claim_launch("k", stale_after=3600)
    assert claim_owner(registry, "k") == current_owner()
    assert not registry.claim_launch("k", stale_after=3600)  # now ours, and we run


def test_a_claim_of_another_host_waits_for_its_timeout(registry: Registry) -> None:
    assert registry.claim_launch("k")
    elsewhere = update(launches_table).values(owner="elsewhere|1|1.00")
    with registry.engine.begin() as conn:
        conn.execute(elsewhere)
    naps: list[float] = []
    assert registry.wait_for_launch("k", timeout=0.0, sleep=naps.append) is None
    assert not registry.claim_launch("k", stale_after=3600)
    assert registry.claim_launch("k", stale_after=0)


def test_a_registry_made_before_claim_owners_gains_the_column(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old-registry.sqlite3")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE launches (launch_key VARCHAR(512) PRIMARY KEY, job_id VARCHAR(255), "
            "claimed_at BIGINT NOT NULL)"
        )
        conn.exec_driver_sql(f"INSERT INTO launches VALUES ('old', NULL, {int(time.time())})")
    engine.dispose()
    registry = Registry(url)
    assert claim_owner(registry, "old") is None
    assert not registry.claim_launch("old", stale_after=3600)  # owner unknown: the timeout rules
    assert registry.claim_launch("old", stale_after=0)
    assert registry.claim_launch("new")
    assert claim_owner(registry, "new") == current_owner()


# --- job_ids.json ----------------------------------------------------------------------------


def test_export_job_ids(registry: Registry, tmp_path: Path) -> None:
    registry.record(job("ftjob-b", 1_700_000_100, description="second"))
    registry.record(job("ftjob-a", 1_700_000_000, description="first"))
    path = tmp_path / "out" / "job_ids.json"
    registry.export_job_ids(path)
    assert json.loads(path.read_text(encoding="utf-8")) == [
        {"id": "ftjob-a", "description": "first", "created": "2023-11-14T22:13:20+00:00"},
        {"id": "ftjob-b", "description": "second", "created": "2023-11-14T22:15:00+00:00"},
    ]
    assert [p.name for p in path.parent.iterdir()] == ["job_ids.json"]


def test_export_job_ids_readers_never_see_half_a_file(registry: Registry, tmp_path: Path) -> None:
    for index in range(300):
        registry.record(job(f"ftjob-{index}", index, description="x" * 200))
    path = tmp_path / "job_ids.json"
    registry.export_job_ids(path)
    stop = threading.Event()
    errors: list[BaseException] = []

    def export_repeatedly() -> None:
        try:
            while not stop.is_set():
                registry.export_job_ids(path)
        except BaseException as error:
            errors.append(error)

    writer = threading.Thread(target=export_repeatedly)
    writer.start()
    try:
        for _ in range(200):
            assert len(json.loads(path.read_text(encoding="utf-8"))) == 300
    finally:
        stop.set()
        writer.join(timeout=30)
    assert errors == []
    assert [p.name for p in tmp_path.iterdir() if "job_ids" in p.name] == ["job_ids.json"]


# --- rebuild ---------------------------------------------------------------------------------


def test_rebuild_from_api(start_server: StartServer, tmp_path: Path, new_db_url: NewUrl) -> None:
    from tests.conftest import qa_examples, strict_client, write_jsonl

    server = start_server()
    client = strict_client(server.base_url)
    data = write_jsonl(tmp_path / "t.jsonl", qa_examples(10))
    ours = [create_job(client, data, metadata=OURS) for _ in range(2)]
    create_job(client, data, metadata={"team": "other"})
    create_job(client, data)

    registry = Registry(new_db_url())
    for created in ours:
        registry.update_from_job(created, server.base_url)
    registry.close()

    rebuilt = Registry(new_db_url())  # the database was lost: an empty one replaces it
    assert rebuilt.jobs() == []
    assert rebuilt.rebuild_from_api(client, server.base_url) == 2
    records = rebuilt.jobs()
    assert {r.job_id for r in records} == {created.id for created in ours}
    for record in records:
        assert record.dataset_id == "abc"
        assert record.launch_key == "k1"
        assert record.description == "d"
        assert record.source_paths == ["a.csv"]
        assert record.endpoint == server.base_url.rstrip("/")
        assert record.base_model == "gpt-4o-mini-2024-07-18"
    assert [r.job_id for r in rebuilt.by_launch_key("k1")] == [r.job_id for r in records]


def test_rebuild_pages_through_every_job(
    start_server: StartServer, tmp_path: Path, registry: Registry
) -> None:
    from tests.conftest import qa_examples, strict_client, write_jsonl

    server = start_server()
    client = strict_client(server.base_url)
    file = client.files.create(
        file=write_jsonl(tmp_path / "t.jsonl", qa_examples(10)), purpose="fine-tune"
    )
    created = {
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=file.id, metadata={"ftpipe": "1"}
        ).id
        for _ in range(105)
    }
    assert registry.rebuild_from_api(client, server.base_url) == 105
    assert {r.job_id for r in registry.jobs()} == created


# --- concurrent writers ----------------------------------------------------------------------


def test_concurrent_writer_processes(db_url: str) -> None:
    outcomes = run_processes(record_worker, [(db_url, worker, 50) for worker in range(4)])
    assert outcomes == ["ok"] * 4
    assert len(Registry(db_url).jobs()) == 200


def test_upsert_without_on_conflict(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Databases other than SQLite and PostgreSQL take the update-or-insert path."""
    monkeypatch.setattr("ftpipe.registry._dialect_insert", lambda name: None)
    registry.record(job("ftjob-1", 1, source_paths=["a.csv"]))
    registry.record(JobRecord("ftjob-1", "cancelled", ""))
    registry.record(JobRecord("ftjob-1", "running", "", trained_tokens=7))
    stored = registry.get("ftjob-1")
    assert stored is not None
    assert (stored.status, stored.source_paths, stored.trained_tokens) == (
        "cancelled",
        ["a.csv"],
        7,
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg://u:hunter2@127.0.0.1:1/x", "Connection refused"),
        ("nonsense", "Could not parse"),
        ("mysql://u:hunter2@127.0.0.1/x", "driver for this URL is not installed"),
    ],
)
def test_an_unusable_database_url_is_one_clear_line(url: str, says: str) -> None:
    with pytest.raises(InputError) as caught:
        Registry(url)
    message = str(caught.value)
    assert message.startswith("FTPIPE_DATABASE_URL=") and says in message
    assert "hunter2" not in message


def test_evaluations_are_kept_per_job_and_model_newest_first(registry: Registry) -> None:
    def result(created_at: int, verdict: str, passed: bool = True) -> dict[str, Any]:
        return {
            "job_id": "ftjob-1",
            "tuned_model": "ft:gpt-4o-mini:acme::1",
            "created_at": created_at,
            "verdict": verdict,
            "passed": passed,
            "scores": {"accuracy": 0.75, "labels": ["négatif", "positif"]},
        }

    assert registry.latest_evaluation("ftjob-1") is None
    registry.record_evaluation(result(100, "better"))
    registry.record_evaluation(result(200, "worse", passed=False))
    registry.record_evaluation(result(150, "no clear difference"))
    assert registry.latest_evaluation("ftjob-1") == result(200, "worse", passed=False)
    assert registry.latest_evaluation("ft:gpt-4o-mini:acme::1")["verdict"] == "worse"
    assert registry.latest_evaluation("ftjob-2") is None
    assert Registry(registry.url).latest_evaluation("ftjob-1")["created_at"] == 200

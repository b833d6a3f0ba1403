"""The thread that runs real training jobs: starts queued jobs as worker processes (or as flow
runs on GPU machines: `training_executor`), follows them, stops cancelled ones, and recovers
jobs whose worker vanished (a server restart, a crash).

Several servers may share one store; a worker is started only inside a write transaction that
records its claim (pid, host, process start), so a job never gets two workers, and a claim whose
process is gone is taken over by whichever server syncs the job next.
"""

from __future__ import annotations

import logging
import secrets
import signal
import threading
import time

from ftpipe.local_api import jobs, real_jobs, workers
from ftpipe.local_api.store import Row, Store, Transaction
from ftpipe.settings import LocalApiSettings
from ftpipe.training import protocol

log = logging.getLogger("ftpipe.local_api")

TICK_S = 0.5
TERM_AFTER_S = 5.0  # a cancelled worker still running after this gets SIGTERM
KILL_AFTER_S = 30.0  # ... and SIGKILL after this


class TrainingSupervisor:
    """Starts, follows and stops the training workers of one store (one per server)."""

    def __init__(self, store: Store, local: LocalApiSettings) -> None:
        self.store = store
        self.local = local
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="ftpipe-training-supervisor", daemon=True
        )

    def start(self) -> None:
        workers.register_owner(self.token)
        self._thread.start()

    def stop(self) -> None:
        """Stop supervising; running workers go on and a later server follows them."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        workers.release_owner(self.token)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the supervisor must outlive any one bad job
                log.exception("training supervisor tick failed")
            self._stop.wait(TICK_S)

    def tick(self) -> None:
        """One round: reap, sync every active real job, then start what may start."""
        workers.reap()
        with self.store.reader() as tx:
            active = [
                row.id for row in tx.all_active_jobs() if row.internal.get("engine") == "real"
            ]
        for job_id in active:
            if self._stop.is_set():
                return
            with self.store.transaction() as tx:
                row = tx.get("job", job_id)
                if row is None:
                    continue
                if row.internal.get("stopping"):
                    _stop_worker(tx, row)
                real_jobs.sync(tx, self.store, row)
        for job_id in active:
            if self._stop.is_set():
                return
            with self.store.transaction() as tx:
                row = tx.get("job", job_id)
                if row is None or not _wants_start(row):
                    continue
                if _running(tx) >= self.local.max_parallel_jobs:
                    return
                self._launch(tx, row)

    def _launch(self, tx: Transaction, row: Row) -> None:
        """Claim the job and start its worker, in the caller's write transaction."""
        folder = real_jobs.job_dir(row)
        (folder / protocol.STATUS).unlink(missing_ok=True)
        (folder / protocol.CONTROL).unlink(missing_ok=True)
        key = f"{row.id}:{row.internal['launches']}"
        try:
            claim = workers.start(
                folder, self.token, self.local, key=key, tags=["ftpipe", "fine-tune", row.id]
            )
        except RuntimeError as error:  # the executor cannot start it (no Prefect API, ...)
            row.internal["needs_start"] = False
            real_jobs._fail(tx, row, protocol.error_object("executor_unavailable", str(error)))
            tx.update(row)
            return
        row.internal["worker"] = claim
        row.internal["needs_start"] = False
        row.internal["launches"] += 1
        row.body["status"] = "running"
        if claim.get("executor", "process") != "process":
            jobs._event(tx, row, f"Training submitted as {workers.describe(claim)}")
        tx.update(row)
        log.info("started %s for %s", workers.describe(claim), row.id)


def _wants_start(row: Row) -> bool:
    state = row.internal
    if state.get("worker") or state.get("paused") or state.get("stopping"):
        return False
    status = row.body["status"]
    return status == "queued" or (status == "running" and state.get("needs_start", False))


def _running(tx: Transaction) -> int:
    """Workers running on this store now, whichever server started them."""
    return sum(
        1
        for row in tx.all_active_jobs()
        if row.internal.get("engine") == "real"
        and (row.internal.get("worker") or row.internal.get("stopping"))
    )


def _stop_worker(tx: Transaction, row: Row) -> None:
    """A cancelled job's worker: asked by control.json, then SIGTERM, then SIGKILL."""
    stopping = row.internal["stopping"]
    if not workers.alive(stopping):
        row.internal["stopping"] = None
        tx.update(row)
        return
    waited = time.time() - stopping["since"]
    if waited > KILL_AFTER_S:
        workers.send(stopping, signal.SIGKILL)
    elif waited > TERM_AFTER_S and not stopping.get("terminated"):
        workers.send(stopping, signal.SIGTERM)
        stopping["terminated"] = True
        tx.update(row)

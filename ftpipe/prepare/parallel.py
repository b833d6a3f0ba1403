"""One large CSV prepared by several processes at once, into the very bytes one process writes.

The file is still read once, here, by the CSV reader: pyarrow's parser cuts it into batches at
record boundaries, quoted newlines and all, with the reader's line numbers, encoding handling
and long-row rejects, and that is about 5% of the work. Each batch goes to a worker process that
maps, validates, renders, counts and hashes it into a part file of its own; the results come
back in batch order and are folded as one process folds its batches, so the dataset, rejects.csv
and the report are the same bytes for any number of workers.

Why batches rather than byte ranges read by each worker: a record boundary in the middle of a
file is known only from the quote state since its start (counting quotes is not enough: a quote
inside an unquoted field is text), the line numbers of later ranges depend on every line before
them, and reading is the cheap part. The workers are spawned, not forked: a run may be in a
process with threads (Prefect's, rich's progress bar), and a daemonic process (a Dask worker)
cannot have children, so there the file is prepared in one process. Whatever the workers read
that the run's settings could change is resolved here and sent along: the suite's checks (a
suite only GX can run keeps the file in this process), and the model must be counted by
OpenAI's rule (a local model's tokenizer folder comes from the settings). As with any spawned
process, a script that calls `prepare` must keep its own work under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftpipe import tokens
from ftpipe.prepare.columnar import Check, suite_checks
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.parts import SourcePart, parts_dir
from ftpipe.prepare.sources import Source

if TYPE_CHECKING:
    from ftpipe.prepare.csv_reader import CsvBatch
    from ftpipe.prepare.mapping import ColumnPlan
    from ftpipe.prepare.pipeline import _SourceRun

MIN_BYTES = 32 * 1024 * 1024  # smaller files: starting workers costs more than they save
MAX_WORKERS = 4
IN_FLIGHT = 2  # batches queued per worker: it never waits, and memory holds a few batches


def free_cores() -> int:
    """Cores this process may use that other work does not keep busy (1-minute load)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        busy = int(os.getloadavg()[0])
    except OSError:  # no load average on this system
        busy = 0
    return max(1, (usable or 1) - busy)


def workers_for(source: Source, options: PrepareOptions) -> int:
    """How many processes prepare this source: the option when given, else one per free core
    (at most MAX_WORKERS) for a CSV file of MIN_BYTES or more; always one in a daemonic process
    and for what is not a CSV file."""
    if source.kind != "csv" or source.path is None or multiprocessing.current_process().daemon:
        return 1
    if options.workers == 1 or (options.workers is None and source.size < MIN_BYTES):
        return 1
    if not tokens.uses_openai_rule(options.model):
        return 1
    return options.workers or min(MAX_WORKERS, free_cores())


@dataclass(frozen=True)
class _Job:
    """One batch for a worker, with all it needs to prepare it alone."""

    options: PrepareOptions
    source: Source
    plan: ColumnPlan
    batch: CsvBatch
    path: str
    checks: list[Check]


def _prepare(job: _Job) -> SourcePart:
    """In a worker: the batch into its part file."""
    from ftpipe.prepare.pipeline import prepare_batch_part

    path = Path(job.path)
    return prepare_batch_part(job.options, job.source, job.plan, job.batch, path, job.checks)


def _warm_up() -> None:
    """In a new worker: import the pipeline before the first batch. Ctrl-C is the run's to
    handle: it cancels what is queued and waits for the batches under way."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from ftpipe.prepare import pipeline  # noqa: F401


def batch_part_path(work: Path, index: int, number: int) -> Path:
    return parts_dir(work) / f"{index:06d}.{number:06d}.part"


def prepare_csv(run: _SourceRun, workers: int, part: SourcePart, work: Path) -> None:
    """The source's batches prepared by `workers` processes, each batch's part absorbed into
    the source's `part` in batch order as it comes back. A suite only GX can run is run here,
    batch by batch."""
    from ftpipe.prepare.pipeline import _csv_rows, _plan_for, prepare_batches

    batches = _csv_rows(run)
    try:
        first = next(batches, None)
        if first is None:
            return
        plan = _plan_for(run, first)
        checks = suite_checks(plan.kind)
        if checks is None:
            prepare_batches(run, plan, itertools.chain([first], batches))
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_warm_up) as pool:
            try:
                chained = itertools.chain([first], batches)
                jobs = _jobs(run, plan, checks, chained, work, part.index)
                _run_jobs(run, jobs, pool, workers, part)
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        batches.close()  # the reader's read-ahead thread ends with it


def _jobs(
    run: _SourceRun,
    plan: ColumnPlan,
    checks: list[Check],
    batches: Iterator[CsvBatch],
    work: Path,
    index: int,
) -> Iterator[tuple[_Job, int]]:
    """Each batch as a job, with about how many bytes of the source it covers."""
    from ftpipe.prepare.pipeline import _batch_bytes

    for number, batch in enumerate(batches):
        path = str(batch_part_path(work, index, number))
        yield _Job(run.options, run.source, plan, batch, path, checks), _batch_bytes(batch.table)


def _run_jobs(
    run: _SourceRun,
    jobs: Iterator[tuple[_Job, int]],
    pool: ProcessPoolExecutor,
    workers: int,
    part: SourcePart,
) -> None:
    """Submit jobs as batches are read, at most IN_FLIGHT per worker ahead of the results,
    which join `part` in batch order (so memory holds a few batches' results, not all)."""
    pending: deque[tuple[Future[SourcePart], int]] = deque()
    read = 0

    def take_first() -> None:
        nonlocal read
        future, covered = pending.popleft()
        part.absorb(future.result())
        read += covered
        run.advance(read)

    for job, size in jobs:
        pending.append((pool.submit(_prepare, job), size))
        while len(pending) >= workers * IN_FLIGHT or (pending and pending[0][0].done()):
            take_first()
    while pending:
        take_first()

"""Waiting on a fine-tuning job: backoff with jitter, only new events each time, a clear end.

The caller gets every new event (oldest first) and every status change through callbacks, so
the CLI can print them and a Prefect task can log them and update a progress artifact. Each look
at the job is retried by ftpipe's one policy (`ftpipe.retry`); an endpoint still unreachable
after that is looked at again at the next poll, until the wait's timeout.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai
from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

from ftpipe import retry
from ftpipe.jobs import TERMINAL
from ftpipe.registry import JobRecord, Registry

logger = logging.getLogger("ftpipe")

POLL_ATTEMPTS = 5  # tries of one look at the job; the poll loop looks again after that


@dataclass(frozen=True)
class Backoff:
    """Delays between polls: start small, grow to a ceiling, with jitter so pollers spread."""

    initial: float = 3.0
    maximum: float = 60.0
    factor: float = 1.5
    jitter: float = 0.2

    def delays(self, rng: random.Random) -> DelayIterator:
        return DelayIterator(self, rng)


class DelayIterator:
    def __init__(self, backoff: Backoff, rng: random.Random) -> None:
        self.backoff, self.rng, self.next_delay = backoff, rng, backoff.initial

    def __next__(self) -> float:
        delay = self.next_delay
        self.next_delay = min(self.backoff.maximum, delay * self.backoff.factor)
        spread = delay * self.backoff.jitter
        return max(0.0, delay + self.rng.uniform(-spread, spread))


class WaitTimeout(TimeoutError):
    """The job was still running when the wait ended; it stays recorded for `poll_jobs`."""

    def __init__(self, job: FineTuningJob, waited: float) -> None:
        super().__init__(
            f"job {job.id} is still {job.status} after {waited:.0f} s; it keeps running and "
            "the poll_jobs flow (or `ftpipe jobs poll`) will pick it up"
        )
        self.job = job


class JobFailed(RuntimeError):
    """The job ended failed or cancelled; the message is the job's own."""

    def __init__(self, job: FineTuningJob) -> None:
        reason = job.error.message if job.error and job.error.message else job.status
        super().__init__(f"fine-tuning job {job.id} {job.status}: {reason}")
        self.job = job


def new_events(
    client: openai.OpenAI, job_id: str, last_seen: str | None, page_size: int = 100
) -> list[FineTuningJobEvent]:
    """Events newer than `last_seen`, oldest first (the API lists newest first)."""
    fresh: list[FineTuningJobEvent] = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=page_size):
        if event.id == last_seen:
            break
        fresh.append(event)
    fresh.reverse()
    return fresh


def wait_for_job(
    client: openai.OpenAI,
    job_id: str,
    *,
    on_event: Callable[[FineTuningJobEvent], None] | None = None,
    on_status: Callable[[FineTuningJob], None] | None = None,
    timeout: float | None = None,
    backoff: Backoff | None = None,
    last_event: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FineTuningJob:
    """Poll until the job ends; JobFailed if it failed or was cancelled, WaitTimeout if slow."""
    delays = (backoff or Backoff()).delays(random.Random())
    quiet, tries = retry.no_sdk_retries(client), retry.attempts_for(client, POLL_ATTEMPTS)
    started, status, job = time.monotonic(), None, None
    while True:
        expired = timeout is not None and time.monotonic() - started > timeout
        try:
            job, events = _look(quiet, job_id, last_event, tries, sleep)
        except Exception as error:
            if not retry.is_transient(error) or (job is None and expired):
                raise
            logger.warning("job %s: %s; polling again later", job_id, error)
            events = []
        for event in events:
            last_event = event.id
            if on_event:
                on_event(event)
        if job is not None and job.status != status:
            status = job.status
            if on_status:
                on_status(job)
        if job is not None and job.status in TERMINAL:
            if job.status != "succeeded":
                raise JobFailed(job)
            return job
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout and job is not None:
            raise WaitTimeout(job, waited)
        sleep(next(delays))


def _look(
    client: openai.OpenAI,
    job_id: str,
    last_event: str | None,
    attempts: int,
    sleep: Callable[[float], None],
) -> tuple[FineTuningJob, list[FineTuningJobEvent]]:
    """The job and its new events, read together so a retry never skips or repeats an event."""

    def once() -> tuple[FineTuningJob, list[FineTuningJobEvent]]:
        return client.fine_tuning.jobs.retrieve(job_id), new_events(client, job_id, last_event)

    return retry.call(once, attempts, what=f"polling {job_id}", sleep=sleep)


def refresh(client: openai.OpenAI, registry: Registry, job_id: str, endpoint: str) -> JobRecord:
    """Bring one registry entry up to date; a job the endpoint no longer knows is marked failed
    (so it stops being polled) instead of stopping the poller."""
    quiet = retry.no_sdk_retries(client)
    try:
        job = retry.call(
            lambda: quiet.fine_tuning.jobs.retrieve(job_id),
            retry.attempts_for(client),
            what=f"reading {job_id}",
        )
    except openai.NotFoundError:
        known = registry.get(job_id)
        lost = "the endpoint no longer knows this job (404)"
        registry.record(
            JobRecord(
                job_id, "failed", known.base_model if known else "", error=lost, endpoint=endpoint
            )
        )
        record = registry.get(job_id)
        assert record is not None
        return record
    return registry.update_from_job(job, endpoint)

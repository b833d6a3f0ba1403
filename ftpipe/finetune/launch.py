"""Launching a fine-tuning job exactly once per dataset and options, on any compatible endpoint.

The launch key (endpoint, dataset, model, options) names the job; its id is recorded in the
registry before anything else happens after creation. Racing runs settle through a claim in
the registry; a response lost after the job was created is recovered through the job's
metadata, looked up before every retry (`ftpipe.retry`), so retries never make a second job.
Every job the endpoint lists is checked against the metadata asked for, since some endpoints
ignore the `metadata` filter and list every job.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import openai
from openai.types.fine_tuning import FineTuningJob

from ftpipe import retry
from ftpipe.errors import InputError
from ftpipe.finetune.options import LaunchOptions
from ftpipe.registry import JobRecord, Registry

REUSABLE = frozenset({"validating_files", "queued", "running", "succeeded"})
CREATE_ATTEMPTS = 5
STALE_CLAIM_S = 600.0  # a claim of another host this old belongs to a run that died
METADATA_MARK = {"ftpipe": "1"}


@dataclass
class LaunchRequest:
    """A prepared dataset's files on the endpoint, and how to train on them."""

    dataset_id: str
    training_file: str
    validation_file: str | None
    options: LaunchOptions
    endpoint: str
    sources: list[str] = field(default_factory=list)
    description: str = ""
    force: bool = False

    def key(self) -> str:
        """One key per (endpoint, dataset, options): the identity of 'the same launch'."""
        material = json.dumps(
            [self.endpoint, self.dataset_id, self.options.model_dump(mode="json")],
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class LaunchResult:
    job: JobRecord
    reused: bool


class LaunchRefused(InputError):
    """The endpoint will not create fine-tuning jobs (OpenAI's wind-down answers 403)."""


class LaunchError(InputError):
    """The endpoint rejected the job request; the message is the endpoint's own."""


def refusal_message(error: openai.APIStatusError, endpoint: str) -> str:
    body = error.body if isinstance(error.body, dict) else {}
    detail = body.get("message") or str(error.message)
    return (
        f"{endpoint} refused to create a fine-tuning job ({error.status_code}: {detail}). "
        "OpenAI is winding down self-serve fine-tuning (no new jobs for anyone from "
        "2027-01-06). Point ftpipe at another OpenAI-compatible endpoint that fine-tunes "
        "(OPENAI_BASE_URL with its key, or AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY), or "
        "unset OPENAI_API_KEY to rehearse on the embedded local server."
    )


def _record(request: LaunchRequest, job: FineTuningJob, key: str) -> JobRecord:
    return JobRecord(
        job_id=job.id,
        status=job.status,
        base_model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        dataset_id=request.dataset_id,
        source_paths=request.sources,
        training_file=request.training_file,
        validation_file=request.validation_file,
        options=request.options.model_dump(mode="json"),
        description=request.description,
        created_at=job.created_at,
        finished_at=job.finished_at,
        trained_tokens=job.trained_tokens,
        error=job.error.message if job.error and job.error.message else None,
        endpoint=request.endpoint,
        launch_key=key,
    )


def _metadata(request: LaunchRequest, key: str, claim: str) -> dict[str, str]:
    return {
        **METADATA_MARK,
        "ftpipe_dataset": request.dataset_id,
        "ftpipe_launch_key": key,
        "ftpipe_claim": claim,
        "ftpipe_description": request.description[:500],
        "ftpipe_sources": json.dumps(request.sources)[:500],
    }


def _jobs_with(client: openai.OpenAI, key: str, value: str) -> list[FineTuningJob]:
    """The endpoint's jobs whose metadata has key=value, checked here too: an endpoint that
    ignores the filter would otherwise hand us another dataset's job."""
    jobs = client.fine_tuning.jobs.list(metadata={key: value}, limit=100)
    return [job for job in jobs if (job.metadata or {}).get(key) == value]


def adopt_known_jobs(client: openai.OpenAI, registry: Registry, request: LaunchRequest) -> None:
    """Jobs the endpoint has for this key but the registry lost (a crash, a new machine)."""
    key = request.key()
    known = {record.job_id for record in registry.by_launch_key(key)}
    quiet = retry.no_sdk_retries(client)
    found = retry.call(
        lambda: _jobs_with(quiet, "ftpipe_launch_key", key),
        retry.attempts_for(client),
        what="listing jobs",
    )
    for job in found:
        if job.id not in known:
            registry.record(_record(request, job, key))


def _reusable(
    client: openai.OpenAI, registry: Registry, key: str, endpoint: str
) -> JobRecord | None:
    """The newest job for this key that has not failed or been cancelled, status refreshed."""
    for record in registry.by_launch_key(key):
        if record.status in REUSABLE:
            try:
                job = _retrieve(client, record.job_id)
            except openai.NotFoundError:  # the endpoint forgot it: not something to reuse
                continue
            fresh = registry.update_from_job(job, endpoint)
            if fresh.status in REUSABLE:
                return fresh
    return None


def _retrieve(client: openai.OpenAI, job_id: str) -> FineTuningJob:
    """One job as the endpoint sees it now, under the retry policy."""
    quiet = retry.no_sdk_retries(client)
    return retry.call(
        lambda: quiet.fine_tuning.jobs.retrieve(job_id),
        retry.attempts_for(client),
        what=f"reading {job_id}",
    )


def _create(
    client: openai.OpenAI,
    request: LaunchRequest,
    key: str,
    claim: str,
    sleep: Callable[[float], None],
) -> FineTuningJob:
    """Create the job under the retry policy; after a failure that may hide a created job (its
    answer lost), look the job up by its claim before trying again, and after the last try."""
    quiet = retry.no_sdk_retries(client)
    unsure = False  # whether an earlier try may have created the job

    def attempt() -> FineTuningJob:
        nonlocal unsure
        if unsure:
            found = _jobs_with(quiet, "ftpipe_claim", claim)  # a failure here is retried too
            if found:
                return found[0]
            unsure = False
        try:
            return _create_once(quiet, request, key, claim)
        except Exception as error:
            unsure = retry.is_transient(error)
            raise

    try:
        attempts = retry.attempts_for(client, CREATE_ATTEMPTS)
        return retry.call(attempt, attempts, what="creating the job", sleep=sleep)
    except Exception:
        found = _last_look(quiet, claim) if unsure else None
        if found is None:
            raise
        return found


def _create_once(
    client: openai.OpenAI, request: LaunchRequest, key: str, claim: str
) -> FineTuningJob:
    """One `jobs.create`; a refusal or a rejected request becomes an error a person can read."""
    try:
        return client.fine_tuning.jobs.create(
            model=request.options.model,
            training_file=request.training_file,
            validation_file=request.validation_file or openai.omit,
            suffix=request.options.suffix or openai.omit,
            method=request.options.method(),  # type: ignore[arg-type]
            seed=request.options.seed if request.options.seed is not None else openai.omit,
            metadata=_metadata(request, key, claim),
        )
    except openai.PermissionDeniedError as error:
        raise LaunchRefused("fine-tuning", refusal_message(error, request.endpoint)) from error
    except openai.BadRequestError as error:
        problem = f"the endpoint rejected the job: {error.message}"
        raise LaunchError("fine-tuning", problem) from error


def _last_look(client: openai.OpenAI, claim: str) -> FineTuningJob | None:
    """The job of this claim if the last failed try created it after all; None when unknown."""
    try:
        found = _jobs_with(client, "ftpipe_claim", claim)
    except Exception as error:
        if not retry.is_transient(error):
            raise
        return None
    return found[0] if found else None


def launch(
    client: openai.OpenAI,
    registry: Registry,
    request: LaunchRequest,
    *,
    claim_timeout: float = 120.0,
    sleep: Callable[[float], None] = time.sleep,
) -> LaunchResult:
    """The job for this request: the existing one, or a new one created exactly once."""
    key = request.key()
    adopt_known_jobs(client, registry, request)
    if not request.force:
        existing = _reusable(client, registry, key, request.endpoint)
        if existing is not None:
            return LaunchResult(existing, reused=True)
    claim = f"{key}#{len(registry.by_launch_key(key))}"
    if not registry.claim_launch(claim, stale_after=STALE_CLAIM_S):
        job_id = registry.wait_for_launch(claim, timeout=claim_timeout)
        record = registry.get(job_id) if job_id else None
        if record is not None:
            return LaunchResult(record, reused=True)
        if not registry.claim_launch(claim, stale_after=STALE_CLAIM_S):  # released, or its run died
            raise LaunchError(
                "fine-tuning",
                f"another run was launching this dataset (claim {claim}) and did not finish; "
                "run again, or with --force",
            )
    if not request.force:  # a racing run may have launched while we counted
        adopt_known_jobs(client, registry, request)
        existing = _reusable(client, registry, key, request.endpoint)
        if existing is not None:
            registry.complete_launch(claim, existing.job_id)
            return LaunchResult(existing, reused=True)
    try:
        job = _create(client, request, key, claim, sleep)
        record = _record(request, job, key)
        registry.record(record)  # first thing after creation: the id is never lost
        registry.complete_launch(claim, job.id)
    except BaseException:
        registry.release_launch(claim)
        raise
    return LaunchResult(record, reused=False)

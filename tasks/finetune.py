"""Prefect tasks of the fine-tune lifecycle: upload, launch, wait, refresh, show the status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from ftpipe.client import endpoint_id, make_client
from ftpipe.finetune.launch import LaunchRequest, LaunchResult, launch
from ftpipe.finetune.poll import Backoff, refresh, wait_for_job
from ftpipe.finetune.upload import Uploaded, upload_training_file
from ftpipe.jobs import job_ids_path
from ftpipe.loss_curve import NoMetrics, markdown_summary, save_loss_curve
from ftpipe.registry import JobRecord, default_registry
from ftpipe.settings import get_settings
from ftpipe.tasks.common import retry_infrastructure


def endpoint() -> str:
    return endpoint_id()


@task(
    name="upload-training-file",
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=retry_infrastructure,
)
def upload_file(path: str) -> Uploaded:
    """Upload one JSONL file, or reuse the copy already on the endpoint."""
    settings = get_settings()
    uploaded = upload_training_file(
        make_client(settings),
        Path(path),
        direct_max_bytes=settings.upload_direct_max_bytes,
        part_bytes=settings.upload_part_bytes,
    )
    get_run_logger().info(
        "%s: %s as %s (%d bytes)", path, uploaded.how, uploaded.file_id, uploaded.bytes
    )
    return uploaded


@task(
    name="launch-fine-tuning-job",
    retries=2,
    retry_delay_seconds=[5, 30],
    retry_condition_fn=retry_infrastructure,
)
def launch_job(request: LaunchRequest) -> LaunchResult:
    """Create the job once (or return the existing one) and record it before anything else."""
    registry = default_registry()
    result = launch(make_client(), registry, request)
    registry.export_job_ids(job_ids_path())
    logger = get_run_logger()
    if result.reused:
        logger.info(
            "Job %s already exists for dataset %s (%s); not launching another",
            result.job.job_id,
            request.dataset_id,
            result.job.status,
        )
    else:
        logger.info(
            "Launched job %s on %s for dataset %s",
            result.job.job_id,
            request.options.model,
            request.dataset_id,
        )
    return result


@task(name="wait-for-fine-tuning-job")
def wait_job(job_id: str, timeout_s: float, backoff: Backoff | None = None) -> JobRecord:
    """Relay the job's events to the log and a progress artifact until it ends."""
    logger = get_run_logger()
    client, registry, where = make_client(), default_registry(), endpoint()
    progress_id = create_progress_artifact(
        0.0, key="fine-tuning-progress", description=f"Training steps of {job_id}"
    )

    def on_event(event: Any) -> None:
        logger.info("[%s] %s", event.level, event.message)
        data = event.data or {}
        if event.type == "metrics" and data.get("total_steps"):
            share = 100.0 * data["step"] / data["total_steps"]
            update_progress_artifact(progress_id, share, description=event.message)

    def on_status(job: Any) -> None:
        registry.update_from_job(job, where)
        logger.info("Job %s is %s", job.id, job.status)

    try:
        job = wait_for_job(
            client,
            job_id,
            on_event=on_event,
            on_status=on_status,
            timeout=timeout_s,
            backoff=backoff,
        )
    finally:
        registry.export_job_ids(job_ids_path())
    update_progress_artifact(progress_id, 100.0, description=f"{job.id} {job.status}")
    record = registry.update_from_job(job, where)
    registry.export_job_ids(job_ids_path())
    return record


@task(name="refresh-job")
def refresh_job(job_id: str) -> JobRecord:
    """Bring one registry entry up to date and log what happened since the last look."""
    client, registry = make_client(), default_registry()
    record = refresh(client, registry, job_id, endpoint())
    if record.status == "failed" and record.error and "(404)" in record.error:
        get_run_logger().warning("%s: %s", job_id, record.error)
        return record
    latest = client.fine_tuning.jobs.list_events(job_id, limit=5).data
    for event in reversed(latest):
        get_run_logger().info("%s [%s] %s", job_id, event.level, event.message)
    return record


@task(name="publish-job-status")
def publish_status(records: list[JobRecord]) -> None:
    """The jobs as a table a person can read after the run."""
    create_table_artifact(
        [
            {
                "job": r.job_id,
                "status": r.status,
                "base model": r.base_model,
                "fine-tuned model": r.fine_tuned_model or "",
                "dataset": r.dataset_id or "",
                "trained tokens": r.trained_tokens or "",
                "error": r.error or "",
            }
            for r in records
        ],
        key="fine-tuning-jobs",
        description="Fine-tuning jobs",
    )
    default_registry().export_job_ids(job_ids_path())


@task(name="publish-loss-curve")
def publish_loss_curve(job_id: str) -> str | None:
    """The job's loss per step as a PNG under FTPIPE_HOME/jobs/<id>/ and a markdown artifact
    with a small loss table; a job without step metrics is logged, not a failure."""
    client = make_client()
    job = client.fine_tuning.jobs.retrieve(job_id)
    try:
        saved = save_loss_curve(client, job)
    except NoMetrics as missing:
        get_run_logger().warning("No loss curve: %s", missing)
        return None
    create_markdown_artifact(
        markdown_summary(job_id, saved),
        key="fine-tuning-loss",
        description=f"Loss curve of {job_id}",
    )
    get_run_logger().info("Loss curve of %s: %s", job_id, saved.png)
    return str(saved.png)

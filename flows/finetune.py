"""The fine-tune flows: inputs to a tracked job, dialogue logs to a job, and the job poller."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from ftpipe.finetune.launch import LaunchOptions, LaunchRequest
from ftpipe.flows.prepare_dataset import prepare_dataset
from ftpipe.registry import default_registry
from ftpipe.settings import get_settings
from ftpipe.tasks.backend import flow_backend
from ftpipe.tasks.common import run_bounded
from ftpipe.tasks.finetune import (
    endpoint,
    launch_job,
    publish_status,
    refresh_job,
    upload_file,
    wait_job,
)


@flow(name="finetune")
def finetune(
    paths: list[str],
    csv_text: str | None = None,
    model: str = "gpt-4o-mini",
    label: Literal["positive", "negative"] | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    column_map: dict[str, str] | None = None,
    system_instruction: str | None = None,
    sentiments: list[Literal["positive", "negative", "neutral"]] | None = None,
    redact: bool = False,
    validation_share: float = 0.1,
    suffix: str | None = None,
    n_epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate_multiplier: float | None = None,
    seed: int | None = None,
    wait: bool = True,
    wait_timeout_minutes: float = 120.0,
    force: bool = False,
    description: str = "",
    out_dir: str = "data/processed",
    task_runner: Literal["threads", "dask"] = "threads",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Prepare the inputs, upload them, launch one fine-tuning job, and optionally wait for it.

    Args:
        paths: CSV files or folders, dialogue logs (.json) or chat JSONL files.
        csv_text: CSV given as text.
        model: Base model to fine-tune.
        label: Label mode: every text is answered with this label.
        text_column: Label mode: the text column.
        label_column: Label mode: the label column.
        column_map: Roles to columns, e.g. {"user": "Q", "assistant": "A"}.
        system_instruction: System message for CSV examples.
        sentiments: Dialogues: keep only replies with these sentiments.
        redact: Dialogues: redact e-mails, phones and card numbers.
        validation_share: Share held out for validation (at most 1000 examples).
        suffix: Added to the fine-tuned model's name.
        n_epochs: Epochs; empty for the API's automatic choice.
        batch_size: Batch size; empty for automatic.
        learning_rate_multiplier: Learning-rate multiplier; empty for automatic.
        seed: Training seed; empty for a random one.
        wait: Wait for the job to finish (the poll_jobs flow picks up jobs not waited for).
        wait_timeout_minutes: Stop waiting after this long; the job keeps running.
        force: Launch a new job even if this dataset and options already have one.
        description: A note kept with the job in the registry and job_ids.json.
        out_dir: Where prepared datasets are written.
        task_runner: Preparation, one task per file: threads in this process, or dask: a Dask
            cluster, a local cluster unless dask_address is given.
        dask_address: The scheduler of an existing Dask cluster (tcp://host:8786); needs
            task_runner dask.
    """
    with flow_backend(model):
        prepared = prepare_dataset(
            paths=paths,
            csv_text=csv_text,
            model=model,
            label=label,
            text_column=text_column,
            label_column=label_column,
            column_map=column_map,
            system_instruction=system_instruction,
            sentiments=sentiments,
            redact=redact,
            validation_share=validation_share,
            out_dir=out_dir,
            task_runner=task_runner,
            dask_address=dask_address,
        )
        training = upload_file(prepared["train"])
        validation = upload_file(prepared["validation"]) if prepared["validation"] else None
        options = LaunchOptions(
            model=model,
            n_epochs=n_epochs or "auto",
            batch_size=batch_size or "auto",
            learning_rate_multiplier=learning_rate_multiplier or "auto",
            suffix=suffix,
            seed=seed,
        )
        request = LaunchRequest(
            dataset_id=prepared["dataset_id"],
            training_file=training.file_id,
            validation_file=validation.file_id if validation else None,
            options=options,
            endpoint=endpoint(),
            sources=list(paths) + (["<csv text>"] if csv_text else []),
            description=description,
            force=force,
        )
        launched = launch_job(request)
        record = launched.job
        publish_status([record])
        if wait:
            record = wait_job(record.job_id, wait_timeout_minutes * 60)
            publish_status([record])
        return {
            "dataset_id": prepared["dataset_id"],
            "job_id": record.job_id,
            "reused": launched.reused,
            "status": record.status,
            "fine_tuned_model": record.fine_tuned_model,
            "cost": prepared["cost"],
        }


def default_dialogue_dir() -> str:
    return str(get_settings().home / "dialogues")


@flow(name="finetune_dialogues")
def finetune_dialogues(
    dialogues_dir: str | None = None,
    model: str = "gpt-4o-mini",
    sentiments: list[Literal["positive", "negative", "neutral"]] | None = None,
    redact: bool = True,
    suffix: str | None = "dialogues",
    n_epochs: int | None = None,
    wait: bool = False,
    force: bool = False,
    description: str = "fine-tune on saved dialogues",
) -> dict[str, Any]:
    """Saved chat dialogues (the chat task's log folder by default) to a fine-tuning job.

    Args:
        dialogues_dir: Folder of dialogue logs; default FTPIPE_HOME/dialogues.
        model: Base model to fine-tune.
        sentiments: Keep only exchanges whose reply has one of these sentiments.
        redact: Redact e-mails, phone and card numbers before training.
        suffix: Added to the fine-tuned model's name.
        n_epochs: Epochs; empty for automatic.
        wait: Wait for the job to finish.
        force: Launch even if these dialogues already have a job.
        description: A note kept with the job.
    """
    with flow_backend(model):
        if dialogues_dir is None and not any(Path(default_dialogue_dir()).rglob("*.json")):
            # The nightly run before anyone chatted is not a failure; a folder given by hand that
            # holds nothing still is, with its name in the error.
            get_run_logger().warning(
                "No saved dialogues in %s yet (the chat flow writes them there): nothing to "
                "fine-tune on",
                default_dialogue_dir(),
            )
            return {"skipped": f"no dialogues in {default_dialogue_dir()}", "job_id": None,
                    "status": "skipped"}  # fmt: skip
        return finetune(
            paths=[dialogues_dir or default_dialogue_dir()],
            model=model,
            sentiments=sentiments,
            redact=redact,
            suffix=suffix,
            n_epochs=n_epochs,
            wait=wait,
            force=force,
            description=description,
        )


@flow(name="poll_jobs")
def poll_jobs() -> list[dict[str, Any]]:
    """Refresh every unfinished job in the registry; meant to run on a schedule."""
    with flow_backend():
        registry = default_registry()
        where = endpoint()
        active = registry.active(endpoint=where)
        outcomes = run_bounded(refresh_job, [{"job_id": r.job_id} for r in active], concurrency=4)
        records = [value for ok, value in outcomes if ok]  # a failed refresh is in its task's log
        publish_status(records or registry.jobs(endpoint=where)[:20])
        return [
            {"job_id": r.job_id, "status": r.status, "fine_tuned_model": r.fine_tuned_model}
            for r in records
        ]

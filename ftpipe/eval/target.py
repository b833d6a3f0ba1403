"""What `ftpipe eval JOB_OR_MODEL` means: the tuned model, its base, the held-out data and where
the results go, found from the job on the endpoint and in the registry."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai

from ftpipe.catalog import base_model_of
from ftpipe.errors import InputError
from ftpipe.prepare.options import default_output_root
from ftpipe.settings import get_settings

if TYPE_CHECKING:
    from openai.types.fine_tuning import FineTuningJob

    from ftpipe.registry import Registry

VALIDATION_FILE = "validation.jsonl"
DATASET_MARKER = "report.json"  # every prepared dataset folder has one


@dataclass
class Target:
    """Everything the evaluation needs to know before it asks anything."""

    tuned: str
    base: str | None
    data: Path
    out_dir: Path
    job_id: str | None = None
    endpoint_scores: dict[str, float] = field(default_factory=dict)


def resolve_target(
    client: openai.OpenAI,
    name: str,
    registry: Registry,
    *,
    base: str | None = None,
    data: Path | None = None,
    out_dir: Path | None = None,
) -> Target:
    """A job id or a model name; unknown ones, unfinished jobs and missing data are one line."""
    record = registry.get(name) or next(
        (r for r in registry.jobs() if r.fine_tuned_model == name), None
    )
    job_id = record.job_id if record else name if name.startswith("ftjob-") else None
    if job_id is not None:
        return _job_target(client, job_id, base=base, data=data, out_dir=out_dir,
                           dataset_id=record.dataset_id if record else None)  # fmt: skip
    _check_model(client, name)
    if base is not None:
        _check_model(client, base)
    if data is None:
        raise InputError(
            f"model {name}", "is not a job this registry knows; give the held-out data (--data)"
        )
    default_base = base_model_of(name)
    return Target(
        tuned=name,
        base=base or (default_base if default_base != name else None),
        data=data,
        out_dir=out_dir or _out_dir_for(data, None, name),
    )


def _job_target(
    client: openai.OpenAI,
    job_id: str,
    *,
    base: str | None,
    data: Path | None,
    out_dir: Path | None,
    dataset_id: str | None,
) -> Target:
    job = _succeeded_job(client, job_id)
    if base is not None:
        _check_model(client, base)
    dataset = _dataset_folder(dataset_id)
    own_data = data is None or (
        data.name == VALIDATION_FILE and (data.parent / DATASET_MARKER).is_file()
    )
    if data is None:
        data = _validation_data(client, job, dataset)
    return Target(
        tuned=job.fine_tuned_model or "",
        base=base or job.model,
        data=data,
        out_dir=out_dir or _out_dir_for(data, dataset, job_id),
        job_id=job_id,
        # the checkpoint's figures were measured on the job's validation file, nothing else
        endpoint_scores=final_validation_metrics(client, job_id) if own_data else {},
    )


def _succeeded_job(client: openai.OpenAI, job_id: str) -> FineTuningJob:
    try:
        job = client.fine_tuning.jobs.retrieve(job_id)
    except openai.NotFoundError:
        raise InputError(f"job {job_id}", f"no such fine-tuning job on {client.base_url}") from None
    if job.status != "succeeded" or not job.fine_tuned_model:
        raise InputError(
            f"job {job_id}",
            f"has status {job.status}; only a succeeded job has a model to evaluate"
            + (" (wait with `ftpipe jobs show`)" if job.status not in ("failed", "cancelled")
               else ""),
        )  # fmt: skip
    return job


def _check_model(client: openai.OpenAI, name: str) -> None:
    try:
        client.models.retrieve(name)
    except openai.NotFoundError:
        raise InputError(
            f"model {name}", f"no such job or model on {client.base_url} (see `ftpipe jobs list`)"
        ) from None


def _dataset_folder(dataset_id: str | None) -> Path | None:
    """The prepared dataset's folder under the default output root, when it is there."""
    if not dataset_id:
        return None
    folder = default_output_root() / dataset_id
    return folder if (folder / DATASET_MARKER).is_file() else None


def _validation_data(client: openai.OpenAI, job: FineTuningJob, dataset: Path | None) -> Path:
    """The dataset's own validation.jsonl, or the job's validation file from the endpoint."""
    if dataset is not None and (dataset / VALIDATION_FILE).is_file():
        return dataset / VALIDATION_FILE
    if not job.validation_file:
        raise InputError(
            f"job {job.id}", "was trained without a validation file; give held-out data (--data)"
        )
    target = evals_folder(job.id) / VALIDATION_FILE
    try:
        content = client.files.content(job.validation_file).read()
    except openai.NotFoundError:
        raise InputError(
            f"job {job.id}",
            f"its validation file {job.validation_file} is gone from the endpoint; give --data",
        ) from None
    from ftpipe.atomic import write_bytes_atomically

    write_bytes_atomically(target, content)
    return target


def _out_dir_for(data: Path, dataset: Path | None, name: str) -> Path:
    """Next to the dataset when the data is a prepared dataset's; else FTPIPE_HOME/evals/<name>."""
    if dataset is not None:
        return dataset
    if (data.parent / DATASET_MARKER).is_file():
        return data.parent
    return evals_folder(name)


def evals_folder(name: str) -> Path:
    """A folder per job or model under the state folder; model names keep only safe characters."""
    return get_settings().home / "evals" / re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def final_validation_metrics(client: openai.OpenAI, job_id: str) -> dict[str, float]:
    """Validation loss and token accuracy of the job's last checkpoint, where the endpoint
    reports them (OpenAI's full_valid_*; an endpoint without checkpoints gives none)."""
    try:
        checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
    except openai.APIError:
        return {}
    if not checkpoints:
        return {}
    last: Any = max(checkpoints, key=lambda c: c.step_number).metrics
    found = {
        "valid_loss": last.full_valid_loss if last.full_valid_loss is not None else last.valid_loss,
        "valid_mean_token_accuracy": last.full_valid_mean_token_accuracy
        if last.full_valid_mean_token_accuracy is not None
        else last.valid_mean_token_accuracy,
    }
    return {name: float(value) for name, value in found.items() if value is not None}

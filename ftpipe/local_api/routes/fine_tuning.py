"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events, checkpoints.

The creation body is typed after OpenAI's CreateFineTuningJobRequest (`method`, its
`hyperparameters`, `integrations`), so `jobs` and `real_jobs` receive only well-formed values.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr
from pydantic_core import PydanticCustomError

from ftpipe.local_api import jobs, real_jobs
from ftpipe.local_api.engines import choose_engine
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.routes.common import StrictJsonRoute, check_limit, list_body, store_of
from ftpipe.local_api.routes.shapes import Closed, Count, Metadata, Number
from ftpipe.local_api.store import paginate

router = APIRouter(route_class=StrictJsonRoute)

SUFFIX_CHARACTERS = re.compile(r"[A-Za-z0-9._-]+")

Auto = Literal["auto"]
BatchSize = Auto | Annotated[int, Field(strict=True, ge=1, le=256)]
Epochs = Auto | Annotated[int, Field(strict=True, ge=1, le=50)]
Multiplier = Auto | Annotated[Number, Field(gt=0.0)]


class Hyperparameters(BaseModel):
    """Supervised hyperparameters; other names are kept for `_check_hyperparameter_names`,
    which refuses them by name."""

    model_config = ConfigDict(extra="allow")

    batch_size: BatchSize | None = None
    n_epochs: Epochs | None = None
    learning_rate_multiplier: Multiplier | None = None


class Supervised(Closed):
    hyperparameters: Hyperparameters | None = None


class Method(Closed):
    """FineTuneMethod: `type` is required; the other methods are refused by `jobs` by name."""

    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: Supervised | None = None
    dpo: dict[str, Any] | None = None
    reinforcement: dict[str, Any] | None = None


class Wandb(Closed):
    project: StrictStr
    name: StrictStr | None = None
    entity: StrictStr | None = None
    tags: list[StrictStr] | None = None


class Integration(Closed):
    type: Literal["wandb"]
    wandb: Wandb


def _suffix_characters(suffix: str) -> str:
    """The suffix becomes part of `ft:<base>:<org>:<suffix>:<id>`, so no ':' or spaces."""
    if not SUFFIX_CHARACTERS.fullmatch(suffix):
        raise PydanticCustomError(
            "invalid_value",
            "suffix may only hold letters, digits, '-', '_' and '.', got '{suffix}'.",
            {"suffix": suffix},
        )
    return suffix


Suffix = Annotated[
    StrictStr, Field(min_length=1, max_length=64), AfterValidator(_suffix_characters)
]


class CreateJob(Closed):
    model: StrictStr
    training_file: StrictStr
    validation_file: StrictStr | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: Suffix | None = None
    seed: Annotated[int, Field(strict=True, ge=0, le=2_147_483_647)] | None = None
    metadata: Metadata | None = None
    integrations: list[Integration] | None = None
    # ftpipe's own knobs (the SDK's extra_body), documented in ftpipe/local_api/real_jobs.py;
    # their ranges are TrainingSpec's (`real_jobs.check_knob`), their types are checked here.
    training_method: Literal["lora", "full"] | None = None
    lora_rank: Count | None = None
    lora_alpha: Count | None = None
    lora_dropout: Number | None = None
    target_modules: StrictStr | list[StrictStr] | None = None
    max_seq_length: Count | None = None
    gradient_accumulation: Count | Auto | None = None
    max_micro_batch: Count | None = None
    eval_steps: Count | None = None


def _check_hyperparameter_names(body: CreateJob) -> None:
    """Only OpenAI's three supervised hyperparameters, in either place they may be given."""
    supervised = body.method.supervised if body.method else None
    sources = (
        ("hyperparameters", body.hyperparameters),
        ("method.supervised.hyperparameters", supervised.hyperparameters if supervised else None),
    )
    for source, values in sources:
        unknown = next(iter(values.model_extra or {}), None) if values else None
        if unknown is not None:
            raise ApiError(
                400,
                f"Unknown hyperparameter '{unknown}'; supervised fine-tuning takes "
                f"{', '.join(Hyperparameters.model_fields)}.",
                param=f"{source}.{unknown}",
                code="invalid_value",
            )


REFUSAL = (
    "Fine-tuning job creation is not available for your organization: self-serve fine-tuning "
    "is being wound down. (Refused by the local server's FTPIPE_LOCAL_REFUSE_FINE_TUNING "
    "setting.)"
)


@router.post("/fine_tuning/jobs")
def create_job(body: CreateJob, request: Request) -> dict[str, Any]:
    if request.app.state.local.refuse_fine_tuning:
        raise ApiError(403, REFUSAL, code="permission_denied")
    _check_hyperparameter_names(body)
    local = request.app.state.local
    values = body.model_dump(exclude_none=True)
    if choose_engine(local) == "real":
        return real_jobs.create_job(store_of(request), values, local)
    for name in real_jobs.KNOBS:  # checked as the real engine would, then not used
        if name in values:
            real_jobs.check_knob(name, values[name])
    return jobs.create_job(store_of(request), values, local.job_speed)


@router.get("/fine_tuning/jobs")
def list_jobs(
    request: Request,
    after: str | None = None,
    limit: Annotated[int, Query()] = 20,
) -> dict[str, Any]:
    check_limit(limit)
    wanted = _metadata_filter(request)
    store = store_of(request)
    with store.transaction() as tx:
        rows = [
            row
            for row in tx.all("job")
            if all((row.body.get("metadata") or {}).get(k) == v for k, v in wanted.items())
        ]
        page = paginate(rows, after=after, limit=limit)
        for row in page.rows:
            jobs.advance(tx, store, row)
    body = list_body(page)
    body["data"] = [jobs.public(row) for row in page.rows]
    return body


def _metadata_filter(request: Request) -> dict[str, str]:
    """The `metadata[key]=value` pairs asked for; none when the server is set to ignore them."""
    if request.app.state.local.ignore_metadata_filter:
        return {}
    return {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.items()
        if key.startswith("metadata[") and key.endswith("]")
    }


@router.get("/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, request: Request) -> dict[str, Any]:
    store = store_of(request)
    with store.transaction() as tx:
        row = jobs.advance(tx, store, jobs.get_job(tx, job_id), retrieve=True)
    return jobs.public(row)


def _act(job_id: str, request: Request, action: Any) -> dict[str, Any]:
    store = store_of(request)
    with store.transaction() as tx:
        row = jobs.advance(tx, store, jobs.get_job(tx, job_id))
        action(tx, row)
    return jobs.public(row)


@router.post("/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    return _act(job_id, request, jobs.cancel)


@router.post("/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str, request: Request) -> dict[str, Any]:
    return _act(job_id, request, jobs.pause)


@router.post("/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, request: Request) -> dict[str, Any]:
    return _act(job_id, request, jobs.resume)


@router.get("/fine_tuning/jobs/{job_id}/events")
def list_events(
    job_id: str,
    request: Request,
    after: str | None = None,
    limit: Annotated[int, Query()] = 20,
) -> dict[str, Any]:
    check_limit(limit, maximum=1000)
    store = store_of(request)
    with store.transaction() as tx:
        jobs.advance(tx, store, jobs.get_job(tx, job_id))
        rows = tx.all("event", parent=job_id)
    return list_body(paginate(rows, after=after, limit=limit))


@router.get("/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(
    job_id: str,
    request: Request,
    after: str | None = None,
    limit: Annotated[int, Query()] = 10,
) -> dict[str, Any]:
    check_limit(limit)
    store = store_of(request)
    with store.transaction() as tx:
        jobs.advance(tx, store, jobs.get_job(tx, job_id))
        rows = tx.all("checkpoint", parent=job_id)
    return list_body(paginate(rows, after=after, limit=limit), with_ids=True)

"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events, checkpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ftpipe.local_api import jobs, real_jobs
from ftpipe.local_api.engines import choose_engine
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.routes.common import check_limit, list_body, store_of
from ftpipe.local_api.store import paginate

router = APIRouter()


class CreateJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = Field(default=None)
    # ftpipe's own knobs (the SDK's extra_body), documented in ftpipe/local_api/real_jobs.py
    training_method: str | None = None
    lora_rank: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None
    target_modules: str | list[str] | None = None
    max_seq_length: int | None = None
    gradient_accumulation: int | str | None = None
    max_micro_batch: int | None = None
    eval_steps: int | None = None


HP_RULES: dict[str, tuple[type | tuple[type, ...], float, float, str]] = {
    "batch_size": (int, 1, 256, "'auto' or an integer from 1 to 256"),
    "n_epochs": (int, 1, 50, "'auto' or an integer from 1 to 50"),
    "learning_rate_multiplier": ((int, float), 0, float("inf"), "'auto' or a number above 0"),
}


def _hp_ok(name: str, value: Any) -> bool:
    kind, low, high, _ = HP_RULES[name]
    if value in (None, "auto"):
        return True
    if isinstance(value, bool) or not isinstance(value, kind):
        return False
    return low < value <= high if name == "learning_rate_multiplier" else low <= value <= high


def _check_hyperparameters(request: CreateJob) -> None:
    """The ranges OpenAI enforces, for top-level and method hyperparameters alike."""
    method_hp = ((request.method or {}).get("supervised") or {}).get("hyperparameters") or {}
    sources = (("hyperparameters", request.hyperparameters or {}), ("method", method_hp))
    for source, values in sources:
        for name, value in values.items():
            if name not in HP_RULES:
                raise ApiError(
                    400,
                    f"Unknown hyperparameter '{name}'; supervised fine-tuning takes "
                    f"{', '.join(HP_RULES)}.",
                    param=f"{source}.{name}",
                    code="invalid_value",
                )
            if not _hp_ok(name, value):
                raise ApiError(
                    400,
                    f"Invalid {name} {value!r}: it must be {HP_RULES[name][3]}.",
                    param=f"{source}.{name}",
                    code="invalid_value",
                )


def _check_integrations(request: CreateJob) -> None:
    """Weights & Biases is the one integration the API knows; its shape is checked, then kept."""
    for index, item in enumerate(request.integrations or []):
        project = (item.get("wandb") or {}).get("project") if isinstance(item, dict) else None
        if item.get("type") != "wandb" or not isinstance(project, str):
            raise ApiError(
                400,
                "Each integration must be {'type': 'wandb', 'wandb': {'project': ...}}.",
                param=f"integrations.[{index}]",
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
    _check_hyperparameters(body)
    _check_integrations(body)
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

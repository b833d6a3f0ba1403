"""Fine-tuning jobs of the local server: validation, the state machine, events and checkpoints.

A job's state is derived from its progress (see `progress.py`) each time it is read, and the
events, checkpoints, result file and model that the new state implies are written once, inside
the reader's transaction, so every process sharing the store sees one history. Jobs of the real
engine (`internal["engine"] == "real"`) are synced from their training worker instead
(`real_jobs.py`); `advance`, `cancel`, `pause` and `resume` hand them over.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from ftpipe import catalog
from ftpipe.chat_format import check_jsonl_file
from ftpipe.estimate import billed_tokens_per_epoch, default_epochs
from ftpipe.jobs import TERMINAL
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.progress import RUNNING_FROM, parse_speed, training_step
from ftpipe.local_api.store import Row, Store, Transaction, new_id, now

ORGANIZATION = "local"
MAX_METRIC_EVENTS = 200
CHECKPOINTS_KEPT = 3
HP_NAMES = ("batch_size", "learning_rate_multiplier", "n_epochs")


def is_real(row: Row) -> bool:
    """A job of the real engine, followed from its training worker's files."""
    return row.internal.get("engine") == "real"


@dataclass
class Plan:
    """What validation found and what training will do; fixed when the job is created."""

    error: dict[str, Any] | None
    warnings: list[str]
    examples: int
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    total_steps: int
    trained_tokens: int
    has_validation: bool


def default_batch_size(examples: int) -> int:
    """About 0.2% of the examples, between 1 and 256, as OpenAI's 'auto' behaves."""
    return max(1, min(256, round(examples * 0.002)))


def _resolve(value: Any, default: Any) -> Any:
    return default if value in (None, "auto") else value


def _file_error(param: str, file_id: str, problem: str) -> dict[str, Any]:
    kind = "training" if param == "training_file" else "validation"
    return {
        "code": f"invalid_{kind}_file",
        "message": f"The job failed due to an invalid {kind} file ({file_id}): {problem}",
        "param": param,
    }


def make_plan(store: Store, model: str, training: str, validation: str | None, hp: dict) -> Plan:
    """Validate the files as OpenAI does and size the training run."""
    limit = (
        catalog.openai_model(model) or catalog.openai_model("gpt-4o-mini")
    ).training_token_limit
    check = check_jsonl_file(store.file_path(training), model)
    warnings = [
        f"Line {item.line}: example has {item.tokens} tokens, over the {limit}-token limit; "
        "it will be truncated."
        for item in check.too_long
    ]
    # OpenAI truncates over-long examples (with a warning) rather than failing the job.
    problem = replace(check, too_long=[]).first_error()
    error = _file_error("training_file", training, problem) if problem else None
    if error is None and validation:
        valid_check = check_jsonl_file(store.file_path(validation), model)
        problem = replace(valid_check, too_long=[], min_examples=1).first_error()
        error = _file_error("validation_file", validation, problem) if problem else None
    examples = check.examples
    n_epochs = int(_resolve(hp.get("n_epochs"), default_epochs(examples)))
    batch_size = int(_resolve(hp.get("batch_size"), default_batch_size(examples)))
    lr = float(_resolve(hp.get("learning_rate_multiplier"), 1.8))
    billed = billed_tokens_per_epoch(check.token_counts, limit)
    steps = max(1, math.ceil(examples / batch_size)) * n_epochs
    return Plan(
        error=error,
        warnings=warnings,
        examples=examples,
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate_multiplier=lr,
        total_steps=steps,
        trained_tokens=billed * n_epochs,
        has_validation=bool(validation),
    )


def _hyperparameters(request: dict) -> dict[str, Any]:
    method = request.get("method") or {}
    if method.get("type") not in (None, "supervised"):
        raise ApiError(
            400,
            f"Fine-tuning method '{method.get('type')}' is not supported by the local server; "
            "use 'supervised'.",
            param="method.type",
            code="invalid_value",
        )
    from_method = (method.get("supervised") or {}).get("hyperparameters") or {}
    return {**(request.get("hyperparameters") or {}), **from_method}


def _check_file(tx: Transaction, file_id: str | None, param: str) -> None:
    if file_id is None:
        return
    row = tx.get("file", file_id) if file_id else None
    if row is None:
        raise ApiError(400, f"invalid {param}: {file_id}", param=param, code="invalid_file_id")
    if row.body["purpose"] != "fine-tune":
        raise ApiError(
            400,
            f"File {file_id} has purpose '{row.body['purpose']}'; fine-tuning needs a file "
            "uploaded with purpose 'fine-tune'.",
            param=param,
            code="invalid_file_purpose",
        )


def _check_request(request: dict) -> None:
    suffix = request.get("suffix")
    if suffix is not None and not 1 <= len(suffix) <= 64:
        raise ApiError(400, "suffix must be 1 to 64 characters long.", param="suffix")
    metadata = request.get("metadata") or {}
    if len(metadata) > 16 or any(len(k) > 64 or len(str(v)) > 512 for k, v in metadata.items()):
        raise ApiError(
            400,
            "metadata takes at most 16 pairs, keys up to 64 characters and values up to 512.",
            param="metadata",
        )
    seed = request.get("seed")
    if seed is not None and not 0 <= seed <= 2_147_483_647:
        raise ApiError(400, "seed must be between 0 and 2147483647.", param="seed")


def resolve_base_model(tx: Transaction, model: str) -> str:
    """The dated snapshot a job reports as its model; fine-tuned models may be trained further."""
    if model.startswith("ft:"):
        if tx.get("model", model) is None:
            raise _model_not_available(model)
        return model
    info = catalog.openai_model(model)
    if info is None or not info.fine_tunable:
        raise _model_not_available(model)
    return info.snapshot


def _model_not_available(model: str) -> ApiError:
    return ApiError(
        400,
        f"Model {model} is not available for fine-tuning or does not exist.",
        param="model",
        code="model_not_available",
    )


def create_job(store: Store, request: dict, speed: str) -> dict[str, Any]:
    """Check the request, validate its files, and store the new job in `validating_files`."""
    _check_request(request)
    hp = _hyperparameters(request)
    with store.reader() as tx:
        model = resolve_base_model(tx, request["model"])
        _check_file(tx, request["training_file"], "training_file")
        _check_file(tx, request.get("validation_file"), "validation_file")
    plan = make_plan(store, model, request["training_file"], request.get("validation_file"), hp)
    created = now()
    seed = request.get("seed")
    seed = random.randrange(2_147_483_647) if seed is None else seed
    parsed_speed = parse_speed(speed)
    finish = created + int(parsed_speed.amount) if parsed_speed.mode == "seconds" else None
    body = job_body(new_id("ftjob-"), request, model, hp, seed, created, finish)
    internal = {
        "plan": asdict(plan),
        "speed": speed,
        "retrieves": 0,
        "started": time.time(),
        "paused_at": None,
        "paused_seconds": 0.0,
        "step": 0,
        "checkpoint_steps": [],
    }
    with store.transaction() as tx:
        row = tx.insert("job", body, internal=internal)
        _event(tx, row, f"Created fine-tuning job: {body['id']}")
        _event(tx, row, f"Validating training file: {body['training_file']}")
        if body["validation_file"]:
            _event(tx, row, f"Validating validation file: {body['validation_file']}")
    return public(row)


def job_body(
    job_id: str,
    request: dict,
    model: str,
    hp: dict,
    seed: int,
    created: int,
    estimated_finish: int | None,
) -> dict[str, Any]:
    """A new job as the API shows it, in `validating_files`; both engines start jobs so."""
    shown = {name: hp.get(name, "auto") for name in HP_NAMES}
    return {
        "id": job_id,
        "object": "fine_tuning.job",
        "created_at": created,
        "error": None,
        "fine_tuned_model": None,
        "finished_at": None,
        "hyperparameters": shown,
        "model": model,
        "organization_id": ORGANIZATION,
        "result_files": [],
        "status": "validating_files",
        "trained_tokens": None,
        "training_file": request["training_file"],
        "validation_file": request.get("validation_file"),
        "integrations": request.get("integrations"),
        "seed": seed,
        "estimated_finish": estimated_finish,
        "method": {"type": "supervised", "supervised": {"hyperparameters": shown}},
        "metadata": request.get("metadata"),
        "suffix": request.get("suffix"),
    }


def public(row: Row) -> dict[str, Any]:
    """The job as the API shows it (`suffix` is bookkeeping, not part of OpenAI's job object)."""
    return {key: value for key, value in row.body.items() if key != "suffix"}


def get_job(tx: Transaction, job_id: str) -> Row:
    row = tx.get("job", job_id)
    if row is None:
        raise ApiError(
            404,
            f"Could not find fine-tuning job {job_id}.",
            param="fine_tuning_job_id",
            code="fine_tune_not_found",
        )
    return row


def advance(tx: Transaction, store: Store, row: Row, *, retrieve: bool = False) -> Row:
    """Move a job to the state its progress implies, writing what each step produces."""
    if is_real(row):
        from ftpipe.local_api import real_jobs

        return real_jobs.sync(tx, store, row)
    if row.body["status"] in TERMINAL:
        return row
    state = row.internal
    paused = state["paused_at"] is not None
    if retrieve and not paused:
        state["retrieves"] += 1
    active = (state["paused_at"] or time.time()) - state["started"] - state["paused_seconds"]
    progress = parse_speed(state["speed"]).progress(state["retrieves"], active)
    if progress > 0:
        _leave_validation(tx, row)
    if row.body["status"] == "failed":
        tx.update(row)
        return row
    if progress >= RUNNING_FROM:
        _start_running(tx, row)
        _train_until(tx, store, row, training_step(progress, state["plan"]["total_steps"]))
    if progress >= 1.0:
        _succeed(tx, store, row)
    tx.update(row)
    return row


def _leave_validation(tx: Transaction, row: Row) -> None:
    if row.body["status"] != "validating_files":
        return
    plan = row.internal["plan"]
    if plan["error"]:
        row.body.update(status="failed", error=plan["error"], finished_at=now())
        _event(tx, row, plan["error"]["message"], level="error")
        return
    for warning in plan["warnings"]:
        _event(tx, row, warning, level="warn")
    resolved = {
        "batch_size": plan["batch_size"],
        "learning_rate_multiplier": plan["learning_rate_multiplier"],
        "n_epochs": plan["n_epochs"],
    }
    row.body["hyperparameters"] = resolved
    row.body["method"] = {"type": "supervised", "supervised": {"hyperparameters": resolved}}
    row.body["status"] = "queued"
    _event(tx, row, "Files validated, moving job to queued state")


def _start_running(tx: Transaction, row: Row) -> None:
    if row.body["status"] == "queued":
        row.body["status"] = "running"
        _event(tx, row, "Fine-tuning job started")


def _metrics(row: Row, step: int) -> dict[str, float]:
    """A deterministic, plausible loss curve seeded by the job's seed."""
    plan = row.internal["plan"]
    noise = random.Random(f"{row.body['seed']}:{step}").uniform(-0.03, 0.03)
    loss = max(0.01, 0.05 + 2.0 * math.exp(-4.0 * step / plan["total_steps"]) + noise)
    metrics = {
        "step": step,
        "train_loss": round(loss, 4),
        "train_mean_token_accuracy": round(min(1.0, max(0.0, 1.0 - loss / 2.5)), 4),
    }
    if plan["has_validation"]:
        metrics["valid_loss"] = round(loss * 1.1, 4)
        metrics["valid_mean_token_accuracy"] = round(min(1.0, max(0.0, 1.0 - loss / 2.2)), 4)
    return metrics


def _reported_steps(total: int) -> set[int]:
    """Steps that get a metrics event: all of them, or evenly spaced ones for long jobs."""
    if total <= MAX_METRIC_EVENTS:
        return set(range(1, total + 1))
    return {max(1, round(total * k / MAX_METRIC_EVENTS)) for k in range(1, MAX_METRIC_EVENTS + 1)}


def _checkpoint_steps(plan: dict) -> list[int]:
    """End-of-epoch steps of the last three epochs, as OpenAI keeps them."""
    per_epoch = plan["total_steps"] // plan["n_epochs"]
    first = max(1, plan["n_epochs"] - CHECKPOINTS_KEPT + 1)
    return [per_epoch * epoch for epoch in range(first, plan["n_epochs"] + 1)]


def _train_until(tx: Transaction, store: Store, row: Row, target: int) -> None:
    """Write the metrics events and checkpoints of the steps done since the last read."""
    state = row.internal
    plan = state["plan"]
    reported = _reported_steps(plan["total_steps"])
    checkpoints = set(_checkpoint_steps(plan))
    for step in sorted(s for s in reported | checkpoints if state["step"] < s <= target):
        metrics = _metrics(row, step)
        if step in reported:
            message = f"Step {step}/{plan['total_steps']}: training loss={metrics['train_loss']}"
            data = {**metrics, "total_steps": plan["total_steps"]}
            _event(tx, row, message, kind="metrics", data=data)
        if step in checkpoints:
            _checkpoint(tx, store, row, step, metrics)
    state["step"] = max(state["step"], target)


def model_name(row: Row) -> str:
    """`ft:<base>:local:<suffix>:<id>`, the shape OpenAI gives fine-tuned models."""
    base = catalog.base_model_of(row.body["model"])
    short = row.body["id"].removeprefix("ftjob-")[:8]
    return f"ft:{base}:{ORGANIZATION}:{row.body.get('suffix') or ''}:{short}"


def _checkpoint(
    tx: Transaction, store: Store, row: Row, step: int, metrics: dict[str, float]
) -> None:
    checkpoint_model = f"{model_name(row)}:ckpt-step-{step}"
    created = now()
    tx.insert(
        "checkpoint",
        {
            "id": new_id("ftckpt_"),
            "object": "fine_tuning.job.checkpoint",
            "created_at": created,
            "fine_tuned_model_checkpoint": checkpoint_model,
            "fine_tuning_job_id": row.id,
            "metrics": metrics,
            "step_number": step,
        },
        parent=row.id,
    )
    _add_model(tx, store, checkpoint_model, row)
    row.internal["checkpoint_steps"].append(step)
    _event(tx, row, f"Checkpoint created at step {step}")


def _add_model(tx: Transaction, store: Store, name: str, row: Row) -> None:
    """Register a model; it keeps its own copy of the training data, as a trained model would."""
    data = store.model_data_path(row.id)
    if not data.exists():
        shutil.copyfile(store.file_path(row.body["training_file"]), data)
    if tx.get("model", name) is None:
        body = {"id": name, "object": "model", "created": now(), "owned_by": ORGANIZATION}
        tx.insert("model", body, internal={"job": row.id})


def _succeed(tx: Transaction, store: Store, row: Row) -> None:
    name = model_name(row)
    _add_model(tx, store, name, row)
    results = _write_results_file(tx, store, row)
    row.body.update(
        status="succeeded",
        fine_tuned_model=name,
        finished_at=now(),
        trained_tokens=row.internal["plan"]["trained_tokens"],
        result_files=[results],
    )
    _event(tx, row, f"New fine-tuned model created: {name}")
    _event(tx, row, "The job has successfully completed")


def _write_results_file(tx: Transaction, store: Store, row: Row) -> str:
    """The step metrics as CSV, stored as a `fine-tune-results` file like OpenAI's."""
    plan = row.internal["plan"]
    columns = ["step", "train_loss", "train_mean_token_accuracy"]
    if plan["has_validation"]:
        columns += ["valid_loss", "valid_mean_token_accuracy"]
    lines = [",".join(columns)]
    for step in sorted(_reported_steps(plan["total_steps"])):
        metrics = _metrics(row, step)
        lines.append(",".join(str(metrics[column]) for column in columns))
    return store_results_file(tx, store, ("\n".join(lines) + "\n").encode())


def store_results_file(tx: Transaction, store: Store, content: bytes) -> str:
    """The step metrics CSV as a `fine-tune-results` file, as OpenAI keeps it; its id."""
    file_id = new_id("file-")
    store.file_path(file_id).write_bytes(content)
    tx.insert(
        "file",
        {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": now(),
            "filename": "step_metrics.csv",
            "purpose": "fine-tune-results",
            "status": "processed",
        },
    )
    return file_id


def cancel(tx: Transaction, row: Row) -> None:
    if is_real(row) and row.body["status"] not in TERMINAL:
        from ftpipe.local_api import real_jobs

        return real_jobs.cancel(tx, row)
    if row.body["status"] in TERMINAL:
        raise ApiError(
            400,
            f"Job {row.id} has already {row.body['status']}; only a job that is still "
            "validating, queued or running can be cancelled.",
            param="fine_tuning_job_id",
        )
    row.body["status"] = "cancelled"
    _event(tx, row, "Fine-tuning job cancelled")
    tx.update(row)


def pause(tx: Transaction, row: Row) -> None:
    """Freeze a running job (its status stays `running`; the spec has no `paused` status)."""
    if is_real(row):
        from ftpipe.local_api import real_jobs

        return real_jobs.pause(tx, row)
    if row.body["status"] != "running" or row.internal["paused_at"] is not None:
        raise ApiError(
            400,
            f"Job {row.id} is {row.body['status']}"
            + (" and already paused" if row.internal["paused_at"] else "")
            + "; only a running job can be paused.",
            param="fine_tuning_job_id",
        )
    row.internal["paused_at"] = time.time()
    _event(tx, row, "Fine-tuning job paused")
    tx.update(row)


def resume(tx: Transaction, row: Row) -> None:
    if is_real(row):
        from ftpipe.local_api import real_jobs

        return real_jobs.resume(tx, row)
    if row.body["status"] != "running" or row.internal["paused_at"] is None:
        raise ApiError(
            400,
            f"Job {row.id} is {row.body['status']} and not paused; only a paused job can be "
            "resumed.",
            param="fine_tuning_job_id",
        )
    row.internal["paused_seconds"] += time.time() - row.internal["paused_at"]
    row.internal["paused_at"] = None
    _event(tx, row, "Fine-tuning job resumed")
    tx.update(row)


def _event(
    tx: Transaction,
    row: Row,
    message: str,
    *,
    level: str = "info",
    kind: str = "message",
    data: dict[str, Any] | None = None,
) -> None:
    body = {
        "id": new_id("ftevent-"),
        "object": "fine_tuning.job.event",
        "created_at": now(),
        "level": level,
        "message": message,
        "type": kind,
        "data": data or {},
    }
    tx.insert("event", body, parent=row.id)

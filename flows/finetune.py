"""The fine-tune flows: inputs to a tracked job, dialogue logs to a job, and the job poller."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, create_model

from ftpipe.catalog import check_default_model
from ftpipe.dialogue_log import has_dialogues
from ftpipe.errors import InputError
from ftpipe.estimate import cost_for
from ftpipe.eval.options import EvalOptions
from ftpipe.eval.run import enforce_gate
from ftpipe.finetune.launch import LaunchRequest
from ftpipe.finetune.options import Epochs, LaunchOptions, Suffix
from ftpipe.flows.prepare_dataset import plain_parameter_errors, prepare_dataset
from ftpipe.prepare.options import ModelName, PrepareOptions
from ftpipe.prepare.pipeline import PrepareFailed
from ftpipe.registry import default_registry
from ftpipe.settings import get_settings
from ftpipe.tasks.backend import flow_backend, run_model
from ftpipe.tasks.common import run_bounded
from ftpipe.tasks.evaluate import evaluate_task
from ftpipe.tasks.finetune import (
    endpoint,
    launch_job,
    publish_loss_curve,
    publish_status,
    refresh_job,
    upload_file,
    wait_job,
)
from ftpipe.tasks.prepare import publish_report

TrainingOptions: type[BaseModel] = create_model(
    "TrainingOptions",
    __doc__="How the job trains: LaunchOptions less the model, which the dataset options name.",
    __module__=__name__,
    **{
        name: (info.annotation, info)
        for name, info in LaunchOptions.model_fields.items()
        if name != "model"
    },  # type: ignore[call-overload]
)


def launch_options(options: PrepareOptions, training: BaseModel) -> LaunchOptions:
    """One model for both halves: the job trains the model the dataset was checked against."""
    return LaunchOptions(model=options.model, **training.model_dump())


def cost_with_epochs(cost: dict[str, Any], model: str, n_epochs: int | str) -> dict[str, Any]:
    """The estimate prepare made with the guide's default epochs, redone for chosen epochs."""
    if not isinstance(n_epochs, int):
        return cost
    return asdict(cost_for(cost["examples"], cost["tokens_per_epoch"], model, n_epochs))


@plain_parameter_errors
@flow(name="finetune")
def finetune(
    paths: list[str],
    options: PrepareOptions = PrepareOptions(),
    training: TrainingOptions = TrainingOptions(),  # type: ignore[valid-type]
    csv_text: str | None = None,
    wait: bool = True,
    wait_timeout_minutes: float = 120.0,
    force: bool = False,
    description: str = "",
    out_dir: str = "data/processed",
    task_runner: Literal["threads", "dask"] = "threads",
    dask_address: str | None = None,
    evaluate: bool = True,
    evaluation: EvalOptions = EvalOptions(),
) -> dict[str, Any]:
    """Prepare the inputs, upload them, launch one fine-tuning job, and optionally wait for it
    and evaluate the new model against its base on the held-out split.

    Args:
        paths: CSV files or folders, dialogue logs (.json) or chat JSONL files.
        options: How the inputs become examples, as for prepare_dataset; its model is the base
            model to fine-tune.
        training: Epochs, batch size, learning-rate multiplier ('auto' lets the endpoint
            choose), the model-name suffix (at most 64 characters) and the training seed.
        csv_text: CSV given as text.
        wait: Wait for the job to finish (the poll_jobs flow picks up jobs not waited for).
        wait_timeout_minutes: Stop waiting after this long; the job keeps running.
        force: Launch a new job even if this dataset and options already have one.
        description: A note kept with the job in the registry and job_ids.json.
        out_dir: Where prepared datasets are written.
        task_runner: Preparation, one task per file: threads in this process, or dask: a Dask
            cluster, a local cluster unless dask_address is given.
        dask_address: The scheduler of an existing Dask cluster (tcp://host:8786); needs
            task_runner dask.
        evaluate: After a successful wait, compare the fine-tuned model with its base on the
            validation split and publish the verdict.
        evaluation: Metrics, an optional judge, and the min_improvement gate that fails this
            run when the tuned model does not beat its base by that much.
    """
    with flow_backend(options.model if "model" in options.model_fields_set else None) as settings:
        if "model" not in options.model_fields_set:  # the default follows this run's backend
            model = check_default_model(run_model(None, settings))
            options = options.model_copy(update={"model": model})
        chosen = launch_options(options, training)
        if evaluation.min_improvement and not (wait and evaluate):
            raise InputError(
                "evaluation.min_improvement", "needs wait and evaluate: the gate judges the result"
            )
        prepared = _prepare(paths, options, chosen, csv_text, out_dir, task_runner, dask_address)
        if evaluation.min_improvement and not (evaluation.data or prepared["validation"]):
            raise InputError(  # before anything is uploaded or trained
                "evaluation.min_improvement",
                "needs held-out examples, but this dataset has no validation split",
            )
        training_file = upload_file(prepared["train"])
        validation = upload_file(prepared["validation"]) if prepared["validation"] else None
        request = LaunchRequest(
            dataset_id=prepared["dataset_id"],
            training_file=training_file.file_id,
            validation_file=validation.file_id if validation else None,
            options=chosen,
            endpoint=endpoint(),
            sources=list(paths) + (["<csv text>"] if csv_text else []),
            description=description,
            force=force,
        )
        launched = launch_job(request)
        record, verdict = launched.job, None
        publish_status([record])
        if wait:
            record = wait_job(record.job_id, wait_timeout_minutes * 60)
            publish_status([record])
            if record.status == "succeeded":
                publish_loss_curve(record.job_id)
                if evaluate:
                    verdict = _evaluate(record.job_id, prepared, evaluation)
        return {
            "dataset_id": prepared["dataset_id"],
            "job_id": record.job_id,
            "reused": launched.reused,
            "status": record.status,
            "fine_tuned_model": record.fine_tuned_model,
            "cost": prepared["cost"],
            "evaluation": verdict,
            "skipped": prepared["report"].get("skipped_inputs", []),
        }


def _evaluate(
    job_id: str, prepared: dict[str, Any], evaluation: EvalOptions
) -> dict[str, Any] | None:
    """The evaluate task on this dataset's validation split; the gate fails the run after the
    result is published and recorded, so a worse model is reported, never adopted quietly."""
    data = evaluation.data or prepared["validation"]
    if data is None:
        if evaluation.min_improvement:
            raise InputError(
                "evaluation.min_improvement",
                "needs held-out examples, but this dataset has no validation split",
            )
        get_run_logger().warning("No validation split: the evaluation is skipped")
        return None
    result = evaluate_task(
        job_id, evaluation.model_copy(update={"data": data}), out_dir=prepared["out_dir"]
    )
    verdict = {"verdict": result.verdict, "passed": result.passed, "summary": result.summary()}
    enforce_gate(result)
    return verdict


def _prepare(
    paths: list[str],
    options: PrepareOptions,
    chosen: LaunchOptions,
    csv_text: str | None,
    out_dir: str,
    task_runner: Literal["threads", "dask"],
    dask_address: str | None,
) -> dict[str, Any]:
    """The prepare_dataset sub-flow, its report and cost (for the chosen epochs) published on
    this run's page too, where the README sends people to read them."""
    try:
        prepared = prepare_dataset(
            paths=paths,
            options=options,
            csv_text=csv_text,
            out_dir=out_dir,
            task_runner=task_runner,
            dask_address=dask_address,
        )
    except PrepareFailed as failed:
        publish_report(failed.report)
        raise
    cost = cost_with_epochs(prepared["cost"], options.model, chosen.n_epochs)
    publish_report({**prepared["report"], "cost": cost})
    return {**prepared, "cost": cost}


def default_dialogue_dir() -> str:
    return str(get_settings().home / "dialogues")


@plain_parameter_errors
@flow(name="finetune_dialogues")
def finetune_dialogues(
    dialogues_dir: str | None = None,
    model: ModelName | None = None,
    sentiments: list[Literal["positive", "negative", "neutral"]] | None = None,
    redact: bool = True,
    suffix: Suffix | None = "dialogues",
    n_epochs: Epochs | None = None,
    wait: bool = False,
    force: bool = False,
    description: str = "fine-tune on saved dialogues",
    evaluate: bool = True,
    min_improvement: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Saved chat dialogues (the chat task's log folder by default) to a fine-tuning job.

    Args:
        dialogues_dir: Folder of dialogue logs; default FTPIPE_HOME/dialogues.
        model: Base model to fine-tune (default: the backend's default model).
        sentiments: Keep only exchanges whose reply has one of these sentiments.
        redact: Redact e-mails, phone and card numbers before training.
        suffix: Added to the fine-tuned model's name.
        n_epochs: Epochs; empty for automatic.
        wait: Wait for the job to finish.
        force: Launch even if these dialogues already have a job.
        description: A note kept with the job.
        evaluate: With wait, compare the new model with its base on the held-out dialogues.
        min_improvement: With wait, fail the run (the model is reported, not adopted) unless
            tuned minus base reaches this per metric, e.g. {"primary": 0.0}.
    """
    with flow_backend(model) as settings:
        model = model or check_default_model(settings.default_model)
        if dialogues_dir is None and not has_dialogues(Path(default_dialogue_dir())):
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
            options=PrepareOptions(model=model, sentiments=sentiments, redact=redact),
            training=TrainingOptions(
                suffix=suffix, n_epochs="auto" if n_epochs is None else n_epochs
            ),
            wait=wait,
            force=force,
            description=description,
            evaluate=evaluate,
            evaluation=EvalOptions(min_improvement=min_improvement or {}),
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

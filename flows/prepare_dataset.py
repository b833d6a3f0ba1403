"""The `prepare_dataset` flow: CSV files, folders, CSV text or dialogue logs in, chat JSONL out."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from prefect import Flow, flow
from prefect.exceptions import ParameterTypeError

from ftpipe.catalog import check_default_model
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import PrepareFailed, check_paths
from ftpipe.tasks.prepare import (
    make_task_runner,
    merge_parts,
    plan_dataset,
    prepare_sources,
    publish_report,
)

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
FlowT = Flow[Any, Any]


def plain_parameter_errors(checked: FlowT) -> FlowT:
    """Prefect states invalid parameters over several lines; the run fails instead with one
    line naming each bad parameter and its problem, still before any task (schema unchanged)."""
    validate = checked.validate_parameters

    def validate_plainly(parameters: dict[str, Any]) -> dict[str, Any]:
        try:
            return validate(parameters)
        except ParameterTypeError as error:
            raise ParameterTypeError(_one_line(str(error))) from None

    checked.validate_parameters = validate_plainly  # type: ignore[method-assign]
    return checked


def _one_line(message: str) -> str:
    """Prefect's "invalid parameters:" and one "- a.b: Value error, x" line each, as "invalid
    parameter a.b: x"; a message of another shape is only joined into one line."""
    items = [line.strip().removeprefix("- ") for line in message.splitlines()[1:] if line.strip()]
    if not items:
        return " ".join(message.split())
    items = [item.replace(": Value error, ", ": ", 1) for item in items]
    return f"invalid parameter{'s' if len(items) > 1 else ''} " + "; ".join(items)


def check_before_reading(paths: list[str], options: PrepareOptions, out_dir: str) -> None:
    """What a run can check without reading any input (the default model, the paths, the
    output folder), so that it fails before its first task, in one line."""
    if "model" not in options.model_fields_set:
        check_default_model(options.model)
    check_paths(paths, Path(out_dir))


@plain_parameter_errors
@flow(name="prepare_dataset")
def prepare_dataset(
    paths: list[str],
    options: PrepareOptions = PrepareOptions(),
    csv_text: str | None = None,
    out_dir: str = "data/processed",
    task_runner: Literal["threads", "dask"] = "threads",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Validate and convert the inputs into train/validation JSONL with a readable report.

    Each input file is prepared by its own task; the results are merged in input order, so the
    outputs are the same bytes whichever task runner prepared the files.

    Args:
        paths: CSV files, folders of CSVs or dialogue logs (.json), or chat JSONL files.
        options: How the inputs become examples: model, label mode, columns, system message,
            sentiments, redaction, truncation, the validation split and the rejects limit.
        csv_text: CSV given as text, in addition to (or instead of) the paths.
        out_dir: Where `<dataset-id>/` with the outputs is written. With a Dask cluster on
            other machines, give a path on storage every worker sees (as for the inputs).
        task_runner: threads: one task per file on threads of this process; dask: one task per
            file on a Dask cluster, a local cluster unless dask_address is given.
        dask_address: The scheduler of an existing Dask cluster (tcp://host:8786); needs
            task_runner dask.
    """
    runner = make_task_runner(task_runner, dask_address)  # a wrong choice fails before reading
    check_before_reading(paths, options, out_dir)
    plan = plan_dataset(paths, options, csv_text, out_dir)
    parts = prepare_sources(plan, runner)
    try:
        result = merge_parts(plan, parts)
    except PrepareFailed as failed:  # the report says what went wrong; show it, then fail
        publish_report(failed.report)
        raise
    publish_report(result.report)
    return {
        "dataset_id": result.dataset_id,
        "out_dir": str(result.out_dir),
        "train": str(result.train_path),
        "validation": str(result.validation_path) if result.validation_path else None,
        "counts": result.report["counts"],
        "cost": result.report["cost"],
        "report": result.report,
    }


class _NoTracebackFor(logging.Filter):
    """Errors with a plain message of their own are logged once, without Prefect's traceback."""

    def __init__(self, kinds: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, self.kinds):
            record.msg, record.args = f"{record.getMessage().splitlines()[0]} {error}", ()
            record.exc_info, record.exc_text = None, None
        return True


@contextmanager
def plain_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """While flows run in this process (CLI, facade), their logs state these errors in one line."""
    quiet = _NoTracebackFor(kinds)
    for name in RUN_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
    try:
        yield
    finally:
        for name in RUN_LOGGERS:
            logging.getLogger(name).removeFilter(quiet)

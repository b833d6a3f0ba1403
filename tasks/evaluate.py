"""Prefect task of the evaluation: ask, score, record, and show it on the run's page (a summary
with the chart, a table of the worst examples, a progress bar while the models answer)."""

from __future__ import annotations

import csv
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from ftpipe.eval.by_name import evaluate_by_name
from ftpipe.eval.options import EvalOptions
from ftpipe.eval.report import ANSWERS_FILE, chart_data_url, chart_png, markdown, worst_rows
from ftpipe.eval.result import EvalResult
from ftpipe.tasks.common import retry_infrastructure


class EvalProgress:
    """A progress artifact moved in steps of at least 5%, not once per request."""

    def __init__(self, name: str) -> None:
        self.id = create_progress_artifact(
            0.0, key="evaluation-progress", description=f"Evaluating {name}"
        )
        self.shown = 0.0

    def __call__(self, done: int, total: int) -> None:
        share = 100.0 * done / total if total else 100.0
        if share - self.shown >= 5.0 or (share == 100.0 and self.shown < 100.0):
            self.shown = share
            update_progress_artifact(self.id, share)


@task(name="evaluate-model", retries=1, retry_condition_fn=retry_infrastructure)
def evaluate_task(
    job_or_model: str, options: EvalOptions, out_dir: str | None = None
) -> EvalResult:
    """Evaluate a finished job's model (or any model) against its base on held-out data."""
    logger = get_run_logger()
    result = evaluate_by_name(
        job_or_model,
        options,
        out_dir=Path(out_dir) if out_dir else None,
        progress=EvalProgress(job_or_model),
    )
    logger.info(
        "Evaluated %s against %s on %s (%s): %s",
        result.tuned_model,
        result.base_model or "no base",
        result.data,
        result.endpoint,
        result.summary(),
    )
    publish_evaluation(result)
    return result


def publish_evaluation(result: EvalResult) -> None:
    """The summary with the chart inline (the UI cannot reach the worker's files) and the
    examples the tuned model did worst on."""
    create_markdown_artifact(
        markdown(result, chart=chart_data_url(chart_png(result))),
        key="evaluation",
        description=f"{result.tuned_model}: {result.summary()}",
    )
    rows = _answer_rows(result)
    worst = worst_rows(result, rows)
    if worst:
        create_table_artifact(
            worst,
            key="evaluation-worst-examples",
            description=f"Held-out examples {result.tuned_model} did worst on",
        )


def _answer_rows(result: EvalResult) -> list[dict[str, object]]:
    """eval_answers.csv as written, scores back as numbers for ranking."""
    if result.out_dir is None:
        return []
    path = Path(result.out_dir) / ANSWERS_FILE
    with path.open(newline="", encoding="utf-8") as handle:
        rows: list[dict[str, object]] = list(csv.DictReader(handle))
    for row in rows:
        row["line"] = int(str(row["line"]))
        for key in list(row):
            if key.endswith(f"_{result.primary}"):
                row[key] = float(str(row[key]))
    return rows

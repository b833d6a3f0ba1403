"""Prefect tasks around dataset preparation: run the core step, publish what a person reads."""

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

from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import PrepareResult, prepare
from ftpipe.prepare.report import markdown

PROGRESS_STEP = 0.05  # update the progress artifact every 5%


@task(name="prepare-dataset-files", retries=0)
def prepare_files(
    paths: list[str],
    options: PrepareOptions,
    csv_text: str | None = None,
    out_root: str | None = None,
) -> PrepareResult:
    """Run the core preparation with a progress artifact; data errors are not retried."""
    logger = get_run_logger()
    progress_id = create_progress_artifact(
        0.0, key="dataset-preparation", description="Bytes of input read"
    )
    shown = [0.0]

    def on_progress(source: str, done: int, total: int) -> None:
        share = 100.0 * done / total if total else 100.0
        if share - shown[0] >= PROGRESS_STEP * 100 or done >= total:
            shown[0] = share
            update_progress_artifact(progress_id, share, description=f"Reading {source}")

    result = prepare(
        paths,
        options,
        csv_text=csv_text,
        out_root=Path(out_root) if out_root else None,
        progress=on_progress,
    )
    counts = result.report["counts"]
    logger.info(
        "Dataset %s: %d examples (%d train, %d validation), %d rows rejected, in %s",
        result.dataset_id,
        counts["examples"],
        counts["train"],
        counts["validation"],
        counts["rejected"],
        result.out_dir,
    )
    return result


@task(name="publish-dataset-report")
def publish_report(report: dict[str, Any]) -> None:
    """The report, the rule outcomes and the cost estimate as artifacts of the run."""
    create_markdown_artifact(
        markdown(report), key="dataset-report", description=f"Dataset {report['dataset_id']}"
    )
    create_table_artifact(
        [
            {
                "check": rule["check"],
                "rule": rule["rule"],
                "column": rule["column"] or "",
                "failed rows": rule["failed_rows"],
            }
            for rule in report["rules"]
        ],
        key="dataset-rules",
        description="Data rules (Great Expectations suites and OpenAI chat-format rules)",
    )
    cost = report["cost"]
    create_table_artifact(
        [
            {"what": "training examples", "value": cost["examples"]},
            {"what": "epochs", "value": cost["epochs"]},
            {"what": "billed tokens", "value": cost["billed_tokens"]},
            {"what": "USD per 1M tokens", "value": cost["price_per_1m"]},
            {"what": "estimated USD", "value": cost["usd"]},
        ],
        key="dataset-cost-estimate",
        description=f"Training cost estimate for {cost['model']}",
    )

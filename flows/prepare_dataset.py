"""The `prepare_dataset` flow: CSV files, folders, CSV text or dialogue logs in, chat JSONL out."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import PrepareFailed
from ftpipe.tasks.prepare import (
    make_task_runner,
    merge_parts,
    plan_dataset,
    prepare_sources,
    publish_report,
)


@flow(name="prepare_dataset")
def prepare_dataset(
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
    truncate: bool = False,
    validation_share: float = 0.1,
    seed: int = 42,
    max_rejects: int | None = None,
    out_dir: str = "data/processed",
    task_runner: Literal["threads", "dask"] = "threads",
    dask_address: str | None = None,
) -> dict[str, Any]:
    """Validate and convert the inputs into train/validation JSONL with a readable report.

    Each input file is prepared by its own task; the results are merged in input order, so the
    outputs are the same bytes whichever task runner prepared the files.

    Args:
        paths: CSV files, folders of CSVs or dialogue logs (.json), or chat JSONL files.
        csv_text: CSV given as text, in addition to (or instead of) the paths.
        model: The model to fine-tune; sets the tokenizer and the per-example token limit.
        label: Label mode: every text becomes an example answered with this label.
        text_column: Label mode: the column holding the text.
        label_column: Label mode: the column holding each row's label.
        column_map: Roles to columns, e.g. {"user": "Q", "assistant": "A"}.
        system_instruction: A system message for every CSV example.
        sentiments: Dialogues: keep only exchanges whose reply has one of these sentiments.
        redact: Dialogues: replace e-mail addresses, phone and card numbers.
        truncate: Truncate examples over the token limit instead of rejecting them.
        validation_share: Share of examples held out for validation (at most 1000).
        seed: Seed of the deterministic train/validation split.
        max_rejects: Fail when more rows are rejected (default: 10% of the input rows).
        out_dir: Where `<dataset-id>/` with the outputs is written. With a Dask cluster on
            other machines, give a path on storage every worker sees (as for the inputs).
        task_runner: threads: one task per file on threads of this process; dask: one task per
            file on a Dask cluster, a local cluster unless dask_address is given.
        dask_address: The scheduler of an existing Dask cluster (tcp://host:8786); needs
            task_runner dask.
    """
    options = PrepareOptions(
        model=model,
        label=label,
        text_column=text_column,
        label_column=label_column,
        column_map=column_map,
        system_instruction=system_instruction,
        sentiments=sentiments,
        redact=redact,
        truncate=truncate,
        validation_share=validation_share,
        seed=seed,
        max_rejects=max_rejects,
    )
    runner = make_task_runner(task_runner, dask_address)  # a wrong choice fails before reading
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
    }

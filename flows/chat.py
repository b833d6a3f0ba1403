"""The `chat` flow: answer a list or a CSV column of messages concurrently, logging each one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from ftpipe.errors import InputError
from ftpipe.prepare.csv_reader import read_csv_batches
from ftpipe.tasks.backend import flow_backend, run_model
from ftpipe.tasks.chat import answer
from ftpipe.tasks.common import run_bounded


def messages_from_csv(path: str, column: str) -> list[str]:
    """The non-empty cells of one column, read as text by the same reader as `prepare`
    (delimiter, BOM and encoding detected); a missing column is a clear error."""
    messages: list[str] = []
    for batch in read_csv_batches(Path(path)):
        if column not in batch.columns:
            raise InputError(path, f"has no column {column!r}; columns: {batch.columns}")
        messages += [cell for cell in batch.table.column(column).to_pylist() if cell.strip()]
    return messages


@flow(name="chat")
def chat(
    messages: list[str] | None = None,
    csv_path: str | None = None,
    column: str = "message",
    system_instruction: str | None = None,
    model: str | None = None,
    concurrency: int = 16,
    attempts: int = 5,
    log_dialogues: bool = True,
    publish_replies: bool = False,
) -> list[dict[str, Any]]:
    """Answer many messages at once; each exchange goes to the dialogue log.

    Args:
        messages: Messages to answer.
        csv_path: A CSV file whose `column` holds more messages.
        column: The CSV column with the messages.
        system_instruction: System message for every exchange.
        model: The chat model (default: the backend's default model, FTPIPE_DEFAULT_MODEL).
        concurrency: How many requests run at the same time (at least 1).
        attempts: Tries per message on 429/5xx/connection errors (retry-after honoured).
        log_dialogues: Append every exchange to the dialogue log (FTPIPE_HOME/dialogues).
        publish_replies: Also publish every message and reply as a table artifact (off by
            default: conversations may hold personal data that the Prefect UI would keep).
    """
    with flow_backend(model) as settings:
        model = run_model(model, settings)
        if concurrency < 1:
            raise InputError("concurrency", f"must be at least 1, got {concurrency}")
        texts = list(messages or []) + (messages_from_csv(csv_path, column) if csv_path else [])
        if not texts:
            raise InputError("messages", "nothing to answer: give messages or a CSV path")
        parameters = [
            {
                "text": text,
                "model": model,
                "system_instruction": system_instruction,
                "attempts": attempts,
                "log_dialogue": log_dialogues,
            }
            for text in texts
        ]
        rows = [
            value
            if ok
            else {"message": text, "text": "", "error": f"{type(value).__name__}: {value}"}
            for (ok, value), text in zip(
                run_bounded(answer, parameters, concurrency), texts, strict=True
            )
        ]
        failed = sum(1 for row in rows if row.get("error"))
        get_run_logger().info("%d messages answered, %d failed", len(rows) - failed, failed)
        source = f" from {Path(csv_path).name}" if csv_path else ""
        create_markdown_artifact(
            f"**{len(rows) - failed}** of {len(rows)} messages{source} answered by `{model}`, "
            f"**{failed}** failed.",
            key="chat-summary",
            description="Chat run summary (no message contents)",
        )
        if publish_replies:
            _publish_replies(rows, f"{len(rows)} messages ({failed} failed){source}")
        return rows


def _publish_replies(rows: list[dict[str, Any]], description: str) -> None:
    """Every message with its reply as a table, only when the run asked for it."""
    create_table_artifact(
        [
            {
                "message": r["message"],
                "reply": r.get("text", ""),
                "sentiment": r.get("sentiment"),
                "error": r.get("error", ""),
            }
            for r in rows
        ],
        key="chat-replies",
        description=description,
    )

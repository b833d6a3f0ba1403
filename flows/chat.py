"""The `chat` flow: answer a list or a CSV column of messages concurrently, logging each one.

Messages go to Prefect in chunks (one task run per `chunk_size` messages, not per message) and
share one pool of `concurrency` threads; every message still gets its own row, log line and
retries.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
)
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.futures import PrefectConcurrentFuture
from prefect.task_runners import ThreadPoolTaskRunner

from ftpipe.errors import InputError
from ftpipe.prepare.csv_reader import read_csv_batches
from ftpipe.tasks.backend import flow_backend, run_model
from ftpipe.tasks.chat import (
    CHUNK_SIZE,
    Lanes,
    answer_chunk,
    chunk_tags,
    failed_row,
    shared_lanes,
)
from ftpipe.tasks.common import outcome

CHUNKS_IN_FLIGHT = 4  # chunk task runs at once: enough that the lanes never wait for one
PROGRESS_UPDATES = 20  # at most this many updates of the progress artifact
PROGRESS_POLL_S = 0.5


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
    chunk_size: int = CHUNK_SIZE,
) -> list[dict[str, Any]]:
    """Answer many messages at once; each exchange goes to the dialogue log.

    Args:
        messages: Messages to answer.
        csv_path: A CSV file whose `column` holds more messages.
        column: The CSV column with the messages.
        system_instruction: System message for every exchange.
        model: The chat model (default: the backend's default model, FTPIPE_DEFAULT_MODEL).
        concurrency: How many requests run at the same time (at least 1). Across runs, a
            Prefect concurrency limit on the tag `chat` bounds how many chunks run at once.
        attempts: Tries per message on 429/5xx/connection errors (retry-after honoured).
        log_dialogues: Append every exchange to the dialogue log (FTPIPE_HOME/dialogues).
        publish_replies: Also publish every message and reply as a table artifact (off by
            default: conversations may hold personal data that the Prefect UI would keep).
        chunk_size: Messages per Prefect task run (at least 1); a batch of more than one chunk
            also shows a progress artifact.
    """
    with flow_backend(model) as settings:
        model = run_model(model, settings)
        _check_at_least_one("concurrency", concurrency)
        _check_at_least_one("chunk_size", chunk_size)
        texts = list(messages or []) + (messages_from_csv(csv_path, column) if csv_path else [])
        if not texts:
            raise InputError("messages", "nothing to answer: give messages or a CSV path")
        asked = {
            "model": model,
            "system_instruction": system_instruction,
            "attempts": attempts,
            "log_dialogue": log_dialogues,
            "concurrency": concurrency,
        }
        rows = answer_all(texts, chunk_size, asked)
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


def _check_at_least_one(name: str, value: int) -> None:
    """A bound below one would answer nothing."""
    if value < 1:
        raise InputError(name, f"must be at least 1, got {value}")


def answer_all(texts: list[str], chunk_size: int, asked: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per message in input order, from a few chunk task runs at a time on lanes shared
    by all (`asked["concurrency"]` of them); a chunk whose task run failed as a whole gives each
    of its messages an error row."""
    starts = range(0, len(texts), chunk_size)
    chunks = [texts[start : start + chunk_size] for start in starts]
    progress = Progress.start(len(texts)) if len(chunks) > 1 else None
    width = min(CHUNKS_IN_FLIGHT, len(chunks))
    task = answer_chunk.with_options(tags=chunk_tags())
    with (
        shared_lanes(asked["concurrency"]) as lanes,
        ThreadPoolTaskRunner(max_workers=width) as runner,
    ):
        futures = [
            runner.submit(task, {"texts": chunk, "first": start + 1, **asked})
            for chunk, start in zip(chunks, starts, strict=True)
        ]
        if progress is not None:
            progress.follow(futures, lanes)
        outcomes = [outcome(future) for future in futures]
    return [
        row
        for (ok, value), chunk in zip(outcomes, chunks, strict=True)
        for row in (value if ok else [failed_row(text, value) for text in chunk])
    ]


@dataclass
class Progress:
    """The `chat-progress` artifact of a batch of several chunks, updated at most
    PROGRESS_UPDATES times (each update is an API call)."""

    artifact_id: UUID
    total: int
    shown: int = 0  # steps of 1/PROGRESS_UPDATES shown so far

    @classmethod
    def start(cls, total: int) -> Progress:
        description = f"Share of the {total} messages answered (no message contents)"
        return cls(
            create_progress_artifact(0.0, key="chat-progress", description=description), total
        )

    def follow(self, futures: list[PrefectConcurrentFuture[Any]], lanes: Lanes) -> None:
        """Show the lanes' finished messages until every chunk has ended, through one client
        (a client per update costs more CPU than the update)."""
        pending = {future.wrapped_future for future in futures}
        with get_client(sync_client=True) as client:
            while pending:
                _, pending = concurrent.futures.wait(pending, timeout=PROGRESS_POLL_S)
                self.show(client, lanes.finished)

    def show(self, client: SyncPrefectClient, finished: int) -> None:
        step = finished * PROGRESS_UPDATES // self.total
        if step > self.shown:
            self.shown = step
            update = ArtifactUpdate(data=100.0 * finished / self.total)
            client.update_artifact(artifact_id=self.artifact_id, artifact=update)


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

"""Prefect tasks around chat exchanges: one message (`answer`), or a chunk of messages
(`answer_chunk`) answered on a bounded pool of threads, each one logged, retried and reported
on its own.

A task run costs 25-30 ms of CPU in Prefect's bookkeeping, more than an exchange itself; a chunk
pays it once for many messages, so bulk chat runs close to a plain thread pool's speed.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from typing import Any, TypeVar

import openai
from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from ftpipe import chat, retry, sentiment
from ftpipe.client import make_client
from ftpipe.dialogue_log import DialogueLog, default_log_path
from ftpipe.tasks.common import is_infrastructure_failure, retry_infrastructure

T = TypeVar("T")
Row = dict[str, Any]
Ask = Callable[[str], Row]

CHAT_TAG = "chat"  # `prefect concurrency-limit create chat N` bounds chat task runs across runs
CHUNK_SIZE = 100  # messages per task run: Prefect's cost per run becomes noise
# Tries of one message on an infrastructure failure (the machine's disk or database), as the
# one-message task's Prefect retries gave; API failures are the core's to retry.
INFRASTRUCTURE_ATTEMPTS = 3


@task(
    name="answer-message",
    tags=[CHAT_TAG],
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=retry_infrastructure,
)
def answer(
    text: str,
    model: str,
    system_instruction: str | None = None,
    attempts: int = 5,
    log_dialogue: bool = True,
) -> Row:
    """One reply, tried at most `attempts` times in all (the core's retry policy; Prefect retries
    only infrastructure failures), logged for dynamic training."""
    log = DialogueLog(default_log_path()) if log_dialogue else None
    return reply_row(make_client(), text, model, system_instruction, attempts, log)


def chunk_run_name(parameters: dict[str, Any]) -> str:
    """Which of the run's messages a chunk holds, for the UI's list of task runs."""
    first = parameters.get("first", 1)
    return f"answer messages {first}-{first + len(parameters['texts']) - 1}"


# A chunk runs no Prefect retries: a retried chunk would ask its answered messages again. Each
# message is retried on its own instead, and a tag limit of N bounds N chunks across runs.
@task(name="answer-messages", task_run_name=chunk_run_name, tags=[CHAT_TAG])
def answer_chunk(
    texts: list[str],
    model: str,
    system_instruction: str | None = None,
    attempts: int = 5,
    log_dialogue: bool = True,
    concurrency: int = 16,
    first: int = 1,
) -> list[Row]:
    """Every message's row in input order: its reply, or its error (one failure never sinks the
    others). Messages are logged by their number in the run (`first` is the chunk's first),
    never by content."""
    log = DialogueLog(default_log_path()) if log_dialogue else None
    ask = partial(
        reply_row,
        make_client(),
        model=model,
        system_instruction=system_instruction,
        attempts=attempts,
        log=log,
    )
    logger = get_run_logger()
    with _lanes_for(concurrency) as lanes:
        futures = [
            lanes.submit(partial(_message_row, ask, text, number, logger))
            for number, text in enumerate(texts, start=first)
        ]
        return [future.result() for future in futures]


def chunk_tags() -> list[str]:
    """The chat tag while a concurrency limit on it exists, else none: a tag costs every task run
    a write to take a slot, which a SQLite Prefect server busy with its own writes answers 503,
    retried 2 s later while the batch waits. One read per flow run tells which."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(f"tag:{CHAT_TAG}")
        except ObjectNotFound:
            return []
    return [CHAT_TAG]


def reply_row(
    client: openai.OpenAI,
    text: str,
    model: str,
    system_instruction: str | None,
    attempts: int,
    log: DialogueLog | None,
) -> Row:
    """One exchange as a result row: the message with the core's reply, labelled and logged."""
    reply = chat.ask(
        client,
        text,
        model=model,
        system_instruction=system_instruction,
        attempts=attempts,
        sentiment=sentiment.analyse,
        log=log,
    )
    return {"message": text, **asdict(reply)}


def failed_row(text: str, error: BaseException | str) -> Row:
    """The row of a message that got no reply, saying why."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return {"message": text, "text": "", "error": reason}


def _message_row(ask: Ask, text: str, number: int, logger: logging.LoggerAdapter[Any]) -> Row:
    """One message's row, an error included; its outcome goes to the task run's log."""
    policy = retry.retrying(
        INFRASTRUCTURE_ATTEMPTS, what=f"message {number}", retry_on=is_infrastructure_failure
    )
    try:
        row = policy(ask, text)
    except Exception as error:  # reported in its row; the other messages go on
        logger.warning("message %d failed: %s: %s", number, type(error).__name__, error)
        return failed_row(text, error)
    logger.info("message %d answered (%s)", number, row.get("sentiment") or "no sentiment")
    return row


class Lanes:
    """A bounded pool of threads for messages, counting those it finished (for progress)."""

    def __init__(self, concurrency: int) -> None:
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="ftpipe-chat")
        self._lock = threading.Lock()
        self.finished = 0

    def submit(self, work: Callable[[], T]) -> Future[T]:
        """Run `work` on a lane in a copy of the caller's context: its task run (where its logs
        go) and its settings overrides."""
        return self._pool.submit(contextvars.copy_context().run, self._counted, work)

    def _counted(self, work: Callable[[], T]) -> T:
        try:
            return work()
        finally:
            with self._lock:
                self.finished += 1

    def close(self) -> None:
        """Wait for the messages on lanes; those still queued after a failure are dropped."""
        self._pool.shutdown(wait=True, cancel_futures=True)


_shared: contextvars.ContextVar[Lanes | None] = contextvars.ContextVar(
    "ftpipe_chat_lanes", default=None
)


@contextmanager
def shared_lanes(concurrency: int) -> Iterator[Lanes]:
    """One pool for every chunk task started inside the block (Prefect copies the context into
    its task threads): `concurrency` bounds the requests of all chunks together, and the next
    chunk's messages fill the lanes a finishing chunk frees."""
    lanes = Lanes(concurrency)
    token = _shared.set(lanes)
    try:
        yield lanes
    finally:
        _shared.reset(token)
        lanes.close()


@contextmanager
def _lanes_for(concurrency: int) -> Iterator[Lanes]:
    """The run's shared lanes, or lanes of the chunk's own when it runs outside `shared_lanes`."""
    lanes = _shared.get()
    if lanes is not None:
        yield lanes
        return
    with shared_lanes(concurrency) as own:
        yield own

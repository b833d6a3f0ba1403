"""Prefect task around one chat exchange: ask, log the dialogue, report the sentiment."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task

from ftpipe import chat, sentiment
from ftpipe.client import make_client
from ftpipe.dialogue_log import DialogueLog, default_log_path
from ftpipe.tasks.common import retry_infrastructure


@task(
    name="answer-message",
    tags=["chat"],  # `prefect concurrency-limit create chat N` bounds these across runs
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
) -> dict[str, Any]:
    """One reply, tried at most `attempts` times in all (the core's retry policy; Prefect retries
    only infrastructure failures), logged for dynamic training."""
    reply = chat.ask(
        make_client(),
        text,
        model=model,
        system_instruction=system_instruction,
        attempts=attempts,
        sentiment=sentiment.analyse,
        log=DialogueLog(default_log_path()) if log_dialogue else None,
    )
    return {"message": text, **asdict(reply)}

"""Prefect task around image description: one image per task run; the core retries the API."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import get_run_logger, task

from ftpipe.client import make_client
from ftpipe.tasks.common import retry_infrastructure
from ftpipe.vision import describe_image


@task(
    name="describe-image",
    task_run_name="describe {path}",
    tags=["vision"],  # `prefect concurrency-limit create vision N` bounds these across runs
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=retry_infrastructure,
)
def describe_one(path: str, prompt: str | None, model: str) -> dict[str, Any]:
    """Describe one image with the configured backend; returns the Description as a dict."""
    description = describe_image(make_client(), path, prompt, model=model)
    get_run_logger().info(
        "%s: %d prompt + %d completion tokens",
        path,
        description.prompt_tokens,
        description.completion_tokens,
    )
    return asdict(description)

"""Evaluate a job or model by name on the configured endpoint and keep the result in the
registry: the one entry the CLI, the Prefect task and `OpenAIModel.evaluate` share."""

from __future__ import annotations

import logging
from pathlib import Path

import openai

from ftpipe.client import endpoint_id, make_client
from ftpipe.eval.options import EvalOptions
from ftpipe.eval.result import EvalResult
from ftpipe.eval.run import EvalRequest, Progress, evaluate
from ftpipe.eval.target import resolve_target
from ftpipe.registry import Registry, default_registry
from ftpipe.settings import get_settings

log = logging.getLogger(__name__)


def evaluate_by_name(
    name: str,
    options: EvalOptions | None = None,
    *,
    out_dir: Path | None = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
) -> EvalResult:
    """Resolve `name` (a job id or model), evaluate it against its base, record the result.
    The gate's verdict is in the result; `enforce_gate` turns a failure into an error."""
    options = options or EvalOptions()
    settings = get_settings()
    client = make_client(settings)
    registry = registry or default_registry()
    target = resolve_target(
        client,
        name,
        registry,
        base=options.base,
        data=Path(options.data) if options.data else None,
        out_dir=out_dir,
    )
    request = EvalRequest(
        tuned=target.tuned,
        base=target.base,
        data=target.data,
        job_id=target.job_id,
        metrics=list(options.metrics) if options.metrics else None,
        judge=options.judge,
        min_improvement=options.min_improvement,
        concurrency=options.concurrency,
        limit=options.limit,
        out_dir=target.out_dir,
        endpoint=endpoint_id(settings),
    )
    log.info(
        "Evaluating %s against %s on %s at %s",
        request.tuned,
        request.base or "no base",
        request.data,
        client.base_url,
    )
    result = evaluate(
        request,
        client,
        judge_client=judge_client(options),
        endpoint_scores={} if options.limit else target.endpoint_scores,
        attempts=settings.max_retries + 1,
        progress=progress,
    )
    registry.record_evaluation(result.model_dump(mode="json"))
    log.info("Evaluation of %s: %s; outputs in %s", request.tuned, result.summary(), result.out_dir)
    return result


def judge_client(options: EvalOptions) -> openai.OpenAI | None:
    """A client for a judge on another endpoint; None means the evaluated endpoint judges."""
    if not options.judge_base_url:
        return None
    key = get_settings().judge_api_key
    return openai.OpenAI(
        base_url=options.judge_base_url,
        api_key=key.get_secret_value() if key else "ftpipe-local",
        max_retries=0,  # ftpipe's own retry policy applies
        timeout=get_settings().timeout_s,
    )

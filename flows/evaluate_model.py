"""The evaluation flow: does a fine-tuned model beat its base on data it never saw?"""

from __future__ import annotations

from typing import Any

from prefect import flow

from ftpipe.eval.options import EvalOptions
from ftpipe.eval.run import enforce_gate
from ftpipe.tasks.backend import flow_backend
from ftpipe.tasks.evaluate import evaluate_task


@flow(name="evaluate_model")
def evaluate_model(job_or_model: str, options: EvalOptions = EvalOptions()) -> dict[str, Any]:
    """Ask the tuned model and its base every held-out example, score both, publish the verdict.

    Args:
        job_or_model: A succeeded fine-tuning job's id, or a model name (then give
            options.data).
        options: Base model, data, metrics, an optional judge, and the --min-improvement gate:
            the run fails when the tuned model does not beat its base by that much.
    """
    with flow_backend():
        result = evaluate_task(job_or_model, options)
        enforce_gate(result)
        return result.model_dump(mode="json")

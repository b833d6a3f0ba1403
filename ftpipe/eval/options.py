"""The knobs of an evaluation: one pydantic model for the CLI, the flow and the facade."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator

from ftpipe.eval.gate import check_gate_metrics
from ftpipe.eval.result import Metric


class EvalOptions(BaseModel):
    """How to evaluate a job or model; every field has a default that fits a finished job."""

    base: str | None = Field(
        None, description="The model to compare with (default: the job's base model)."
    )
    data: str | None = Field(
        None,
        description="Chat JSONL of held-out examples (default: the job's validation split).",
    )
    metrics: list[Metric] | None = Field(
        None, description="Report only these metrics (default: every one that fits the data)."
    )
    judge: str | None = Field(
        None, description="A judge model for a pairwise tuned-vs-base comparison (off by default)."
    )
    judge_base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint of the judge (default: the same endpoint); its "
        "key comes from FTPIPE_JUDGE_API_KEY.",
    )
    min_improvement: dict[str, float] = Field(
        default_factory=dict,
        description="Fail unless tuned minus base reaches this per metric, e.g. "
        "{'accuracy': 0.05}; 'primary' names the main metric.",
    )
    concurrency: int = Field(8, ge=1, le=64, description="Requests in flight at once.")
    limit: int | None = Field(None, ge=1, description="Evaluate on the first N examples only.")

    @field_validator("min_improvement")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        check_gate_metrics(value)
        return value

"""The evaluation's result as data: what eval.json holds and the registry keeps per job."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Verdict = Literal["better", "worse", "no clear difference", "no base"]
Metric = Literal[
    "exact_match",
    "normalized_match",
    "token_f1",
    "accuracy",
    "macro_f1",
    "valid_loss",
    "valid_mean_token_accuracy",
]
# The metrics computed from the answers (the validation metrics come from the endpoint).
ANSWER_METRICS: tuple[str, ...] = (
    "exact_match",
    "normalized_match",
    "token_f1",
    "accuracy",
    "macro_f1",
)
LABEL_METRICS = ("accuracy", "macro_f1")
ENDPOINT_METRICS = ("valid_loss", "valid_mean_token_accuracy")
LOWER_IS_BETTER = frozenset({"valid_loss"})


class Score(BaseModel):
    """One metric of one model, with how many examples it rests on and its 95% interval."""

    value: float
    count: int
    low: float | None = None
    high: float | None = None
    interval: Literal["wilson", "bootstrap", "none"] = "none"
    source: str = "answers"


class ModelScores(BaseModel):
    """Everything measured for one model."""

    model: str
    role: Literal["tuned", "base"]
    scores: dict[str, Score]
    confusion: list[list[int]] | None = None  # rows: reference label, columns: predicted


SIGNIFICANCE = 0.05


class Difference(BaseModel):
    """Tuned minus base on one metric: the paired bootstrap's 95% interval, and the exact sign
    test's p-value over the examples where the two differ (None for corpus-level metrics)."""

    metric: str
    tuned: float
    base: float
    difference: float
    low: float
    high: float
    p_value: float | None = None
    wins: int | None = None  # examples where tuned scored higher than base
    losses: int | None = None

    def _decided(self, sign: int) -> bool:
        """Every test agrees on the direction: the mean, the bootstrap interval, and (where
        there is one) the exact sign test with more wins than losses. The bootstrap alone is
        too sure on few examples (4 of 6 right against 0 of 6 is p = 0.125, not proof), and
        the sign test alone ignores how big each difference is."""
        interval = self.low > 0 if sign > 0 else self.high < 0
        if sign * self.difference <= 0 or not interval:
            return False
        if self.p_value is None:
            return True
        ahead = (
            (self.wins or 0) > (self.losses or 0)
            if sign > 0
            else (self.losses or 0) > (self.wins or 0)
        )
        return ahead and self.p_value < SIGNIFICANCE

    @property
    def better_than_noise(self) -> bool:
        return self._decided(+1)

    @property
    def worse_than_noise(self) -> bool:
        return self._decided(-1)


class JudgeResult(BaseModel):
    """Pairwise LLM-as-judge: tuned vs base, each pair asked in both orders."""

    judge: str
    wins: int
    ties: int
    losses: int
    unparsed: int
    win_rate: Score  # (wins + ties / 2) / judged


class GateCheck(BaseModel):
    """One --min-improvement: the difference the user asked for and the one measured."""

    metric: str
    required: float
    difference: float
    passed: bool


class EvalResult(BaseModel):
    """A whole evaluation; `passed` is False only when a gate check failed."""

    job_id: str | None = None
    tuned_model: str
    base_model: str | None
    data: str
    examples: int
    kind: Literal["labels", "free_text"]
    labels: list[str] | None = None
    primary: str
    endpoint: str
    created_at: int
    models: list[ModelScores]
    differences: list[Difference] = Field(default_factory=list)
    judge: JudgeResult | None = None
    gate: list[GateCheck] = Field(default_factory=list)
    verdict: Verdict
    passed: bool = True
    out_dir: str | None = None

    def scores_of(self, role: str) -> ModelScores | None:
        return next((m for m in self.models if m.role == role), None)

    def difference(self, metric: str) -> Difference | None:
        return next((d for d in self.differences if d.metric == metric), None)

    def summary(self) -> str:
        """One line for logs, the CLI and the registry table."""
        tuned = self.scores_of("tuned")
        base = self.scores_of("base")
        primary = f"{self.primary} {_value(tuned, self.primary)}"
        if base is not None:
            primary += f" vs base {_value(base, self.primary)}"
        gate = "" if not self.gate else ("; gate passed" if self.passed else "; gate FAILED")
        return f"{self.verdict} ({primary} on {self.examples} held-out examples){gate}"


def _value(scores: ModelScores | None, metric: str) -> str:
    score = scores.scores.get(metric) if scores else None
    return "n/a" if score is None else f"{score.value:.3f}"

"""One evaluation, start to end: read the held-out examples, ask every model, score, judge,
gate, write the outputs. Any OpenAI-compatible endpoint: OpenAI, Azure or the local server."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import openai
from pydantic import BaseModel, Field

from ftpipe.chat import ask
from ftpipe.errors import InputError
from ftpipe.eval import gate as gates
from ftpipe.eval.answers import answer_all
from ftpipe.eval.examples import EvalExample, load_examples
from ftpipe.eval.judge import AskJudge, judge_messages, judge_pairs
from ftpipe.eval.result import (
    ENDPOINT_METRICS,
    LOWER_IS_BETTER,
    Difference,
    EvalResult,
    ModelScores,
    Score,
    Verdict,
)
from ftpipe.eval.scoring import Scorer

Progress = Callable[[int, int], None]  # (done, total) requests


class GateFailed(Exception):
    """The tuned model did not beat its base by the required margin; the result is still kept."""

    def __init__(self, result: EvalResult) -> None:
        failed = [c for c in result.gate if not c.passed]
        shown = ", ".join(
            f"{c.metric} improved by {c.difference:+.3f}, needed {c.required:+.3f}" for c in failed
        )
        super().__init__(f"{result.tuned_model} did not pass the evaluation gate: {shown}")
        self.result = result

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.result,))


class EvalRequest(BaseModel):
    """What to evaluate, on what, and how strictly."""

    tuned: str = Field(description="The model to judge (usually a fine-tuned model).")
    base: str | None = Field(None, description="The model it came from, to compare against.")
    data: Path = Field(description="Chat JSONL of held-out examples.")
    job_id: str | None = Field(None, description="The fine-tuning job that made `tuned`.")
    metrics: list[str] | None = Field(
        None, description="Only these metrics (default: all that fit)."
    )
    judge: str | None = Field(None, description="A judge model for pairwise comparison.")
    min_improvement: dict[str, float] = Field(default_factory=dict)
    concurrency: int = Field(8, ge=1, le=64)
    limit: int | None = Field(None, ge=1, description="Use only the first N examples.")
    out_dir: Path | None = Field(None, description="Where eval.json and the rest are written.")
    endpoint: str = ""


def evaluate(
    request: EvalRequest,
    client: openai.OpenAI,
    *,
    judge_client: openai.OpenAI | None = None,
    endpoint_scores: Mapping[str, float] | None = None,
    attempts: int = 3,
    progress: Progress | None = None,
) -> EvalResult:
    """Ask, score and compare; everything is checked before the first request, and the files
    are written only once every answer is in."""
    gates.check_gate_metrics(request.min_improvement)
    examples = load_examples(request.data, limit=request.limit)
    chosen = [m for m in request.metrics or [] if m not in ENDPOINT_METRICS] or None
    scorer = Scorer([e.reference for e in examples], chosen)
    gate = gates.resolve(request.min_improvement, scorer.primary)
    _check_plan(request, scorer, gate)
    models = [request.tuned] + ([request.base] if request.base else [])
    total = len(examples) * (len(models) + (2 if request.judge else 0))
    tick = _counter(total, progress)
    ask_judge = None
    if request.judge and request.base:
        ask_judge = _judge_asker(request.judge, judge_client or client, attempts)
        # one question first: a wrong judge name, key or endpoint fails before any model is asked
        ask_judge(judge_messages(examples[0], examples[0].reference, examples[0].reference))
    answers = {
        model: answer_all(
            client, model, examples, concurrency=request.concurrency, attempts=attempts,
            on_answer=lambda _model: tick(1),
        )
        for model in dict.fromkeys(models)
    }  # fmt: skip
    result = _result(request, examples, scorer, answers, endpoint_scores or {}, gate)
    if ask_judge is not None:
        result.judge, outcomes = _judge(request, ask_judge, examples, answers, tick)
    else:
        outcomes = None
    if request.out_dir is not None:
        from ftpipe.eval.report import write_outputs

        result.out_dir = str(request.out_dir)
        write_outputs(result, examples, answers, scorer, outcomes, request.out_dir)
    return result


def enforce_gate(result: EvalResult) -> None:
    """Raise GateFailed when a --min-improvement was not met."""
    if not result.passed:
        raise GateFailed(result)


def _check_plan(request: EvalRequest, scorer: Scorer, gate: Mapping[str, float]) -> None:
    if request.base is not None and request.base == request.tuned:
        raise InputError("--base", f"{request.base} is the model being evaluated; name another")
    if gate and not request.base:
        raise InputError("--min-improvement", "needs a base model to improve on (--base)")
    if request.judge and not request.base:
        raise InputError("--judge", "compares the model with its base; give --base")
    for metric in gate:
        if metric not in scorer.metrics:
            raise InputError(
                f"--min-improvement {metric}",
                f"not measured on this data (it measures {', '.join(scorer.metrics)})",
            )
    if request.out_dir is not None:  # last: a refused plan leaves no folder behind
        _check_out_dir(request.out_dir)


def _check_out_dir(out_dir: Path) -> None:
    """The output folder exists (or is made) and is writable before any model is asked."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out {out_dir}", f"cannot be a folder ({error.strerror})") from None
    if not os.access(out_dir, os.W_OK):
        raise InputError(f"--out {out_dir}", "is not writable")


def _counter(total: int, progress: Progress | None) -> Callable[[int], None]:
    done = 0

    def tick(count: int) -> None:
        nonlocal done
        done += count  # from worker threads: += on an int is atomic enough for a progress bar
        if progress is not None:
            progress(min(done, total), total)

    tick(0)
    return tick


def _result(
    request: EvalRequest,
    examples: list[EvalExample],
    scorer: Scorer,
    answers: Mapping[str, list[str]],
    endpoint_scores: Mapping[str, float],
    gate: Mapping[str, float],
) -> EvalResult:
    tuned = scorer.model_scores(request.tuned, "tuned", answers[request.tuned])
    tuned.scores.update(_endpoint_scores(endpoint_scores, request.metrics, len(examples)))
    models: list[ModelScores] = [tuned]
    differences: list[Difference] = []
    if request.base:
        models.append(scorer.model_scores(request.base, "base", answers[request.base]))
        differences = scorer.differences(answers[request.tuned], answers[request.base])
    checks = gates.check(gate, differences)
    return EvalResult(
        job_id=request.job_id,
        tuned_model=request.tuned,
        base_model=request.base,
        data=str(request.data),
        examples=len(examples),
        kind=scorer.kind,  # type: ignore[arg-type]
        labels=scorer.labels,
        primary=scorer.primary,
        endpoint=request.endpoint,
        created_at=int(time.time()),
        models=models,
        differences=differences,
        gate=checks,
        verdict=_verdict(differences, scorer.primary, request.base),
        passed=all(c.passed for c in checks),
    )


def _endpoint_scores(
    reported: Mapping[str, float], chosen: list[str] | None, count: int
) -> dict[str, Score]:
    """The validation loss and token accuracy the endpoint computed while training."""
    return {
        name: Score(value=value, count=count, source="endpoint (final checkpoint)")
        for name, value in reported.items()
        if name in ENDPOINT_METRICS and (not chosen or name in chosen)
    }


def _verdict(differences: list[Difference], primary: str, base: str | None) -> Verdict:
    """Better or worse only when the main metric's interval excludes no difference at all."""
    if not base:
        return "no base"
    main = next(d for d in differences if d.metric == primary)
    better, worse = main.better_than_noise, main.worse_than_noise
    if primary in LOWER_IS_BETTER:
        better, worse = worse, better
    return "better" if better else "worse" if worse else "no clear difference"


def _judge_asker(judge: str, client: openai.OpenAI, attempts: int) -> AskJudge:
    """One judge question through the core's retry policy; an API error is one line naming
    the judge and its endpoint."""

    def ask_judge(messages: list[dict]) -> str:
        try:
            reply = ask(
                client, messages, model=judge, temperature=0, max_tokens=16, attempts=attempts
            )
        except openai.APIError as error:
            raise InputError(f"judge {judge} at {client.base_url}", _first_line(error)) from None
        return reply.text

    return ask_judge


def _judge(
    request: EvalRequest,
    ask_judge: AskJudge,
    examples: list[EvalExample],
    answers: Mapping[str, list[str]],
    tick: Callable[[int], None],
) -> tuple[object, list]:
    def counted(messages: list[dict]) -> str:
        reply = ask_judge(messages)
        tick(1)
        return reply

    return judge_pairs(
        counted, request.judge or "", examples, answers[request.tuned], answers[request.base or ""],
        concurrency=request.concurrency,
    )  # fmt: skip


def _first_line(error: openai.APIError) -> str:
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__

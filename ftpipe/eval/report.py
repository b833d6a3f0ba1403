"""The evaluation's files: eval.json (the result), eval.md (for people), eval_answers.csv (every
model's answer to every example) and eval.png (the metrics per model, drawn off-screen)."""

from __future__ import annotations

import base64
import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

from ftpipe.atomic import write_bytes_atomically, write_text_atomically
from ftpipe.eval.examples import EvalExample
from ftpipe.eval.result import ENDPOINT_METRICS, EvalResult, Score
from ftpipe.eval.scoring import Scorer

RESULT_FILE = "eval.json"
MARKDOWN_FILE = "eval.md"
ANSWERS_FILE = "eval_answers.csv"
CHART_FILE = "eval.png"


def write_outputs(
    result: EvalResult,
    examples: Sequence[EvalExample],
    answers: Mapping[str, list[str]],
    scorer: Scorer,
    outcomes: Sequence[str] | None,
    out_dir: Path,
) -> None:
    """All four files, each replaced atomically; eval.json last, so it never describes answers
    or a chart that were not written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULT_FILE).unlink(missing_ok=True)  # an older result never sits beside new files
    rows = answer_rows(result, examples, answers, scorer, outcomes)
    write_text_atomically(out_dir / ANSWERS_FILE, _csv(rows))
    write_bytes_atomically(out_dir / CHART_FILE, chart_png(result))
    write_text_atomically(out_dir / MARKDOWN_FILE, markdown(result, chart=CHART_FILE))
    write_text_atomically(out_dir / RESULT_FILE, result.model_dump_json(indent=2) + "\n")


def answer_rows(
    result: EvalResult,
    examples: Sequence[EvalExample],
    answers: Mapping[str, list[str]],
    scorer: Scorer,
    outcomes: Sequence[str] | None,
) -> list[dict[str, object]]:
    """One row per example: the question, the trained reply, each model's answer and score."""
    rows: list[dict[str, object]] = [
        {"line": e.line, "question": e.question, "reference": e.reference} for e in examples
    ]
    for scores in result.models:
        values = scorer.per_example(result.primary, answers[scores.model])
        for row, answer, value in zip(rows, answers[scores.model], values, strict=True):
            row[f"{scores.role}_answer"] = answer
            row[f"{scores.role}_{result.primary}"] = round(value, 4)
    for row, outcome in zip(rows, outcomes or [], strict=False):
        row["judge"] = outcome
    return rows


def worst_rows(result: EvalResult, rows: Sequence[dict[str, object]], count: int = 10) -> list:
    """The examples the tuned model did worst on (ties broken by where the base did best)."""
    key = f"tuned_{result.primary}"
    base = f"base_{result.primary}"
    ranked = sorted(rows, key=lambda r: (r[key], -float(r.get(base, 0) or 0), r["line"]))
    return [row for row in ranked if float(row[key]) < 1.0][:count]  # type: ignore[arg-type]


def _csv(rows: Sequence[dict[str, object]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _cell(score: Score | None) -> str:
    if score is None:
        return ""
    if score.low is None or score.high is None:
        return f"{score.value:.3f}"
    return f"{score.value:.3f} [{score.low:.2f}, {score.high:.2f}]"


def metric_rows(result: EvalResult) -> list[list[str]]:
    """metric, base, tuned, difference: the table the CLI, eval.md and the artifact show."""
    tuned, base = result.scores_of("tuned"), result.scores_of("base")
    names = list(tuned.scores) if tuned else []
    table = []
    for name in names:
        difference = result.difference(name)
        table.append([
            name,
            _cell(base.scores.get(name)) if base else "",
            _cell(tuned.scores.get(name) if tuned else None),
            "" if difference is None
            else f"{difference.difference:+.3f} [{difference.low:+.2f}, {difference.high:+.2f}]",
        ])  # fmt: skip
    return table


def verdict_line(result: EvalResult) -> str:
    """The sentence a person acts on."""
    if result.base_model is None:
        return f"{result.tuned_model} scored alone (no base model to compare with)."
    main = result.difference(result.primary)
    change = f"{main.difference:+.3f} {result.primary}" if main else result.primary
    words = {
        "better": "beats its base",
        "worse": "is worse than its base",
        "no clear difference": "is not clearly different from its base",
    }[result.verdict]
    evidence = "" if main is None or main.p_value is None else f"; sign test p={main.p_value:.3g}"
    line = (
        f"{result.tuned_model} {words} {result.base_model} on {result.examples} held-out "
        f"examples ({change}{evidence})."
    )
    for check in result.gate:
        line += (
            f" Gate {check.metric} >= {check.required:+.3f}: "
            f"{'passed' if check.passed else 'FAILED'} ({check.difference:+.3f})."
        )
    return line


def markdown(result: EvalResult, *, chart: str | None = None) -> str:
    """eval.md and the Prefect artifact: verdict, metric table, judge, confusion matrices."""
    lines = [
        f"# Evaluation of `{result.tuned_model}`",
        "",
        f"**Verdict: {result.verdict}.** {verdict_line(result)}",
        "",
        f"Data: `{result.data}` ({result.examples} examples, {result.kind.replace('_', ' ')}"
        + (f": {', '.join(result.labels)}" if result.labels else "")
        + f"). Endpoint: {result.endpoint or 'n/a'}."
        + (f" Job: `{result.job_id}`." if result.job_id else ""),
        "",
        "| metric | base | tuned | tuned - base |",
        "|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in metric_rows(result)]
    lines += [
        "",
        "Values with their 95% interval (Wilson for proportions, bootstrap otherwise; the "
        "difference is a paired bootstrap over the same examples). The verdict needs the exact "
        "sign test over the examples where the two models differ at p < 0.05."
        + (" Validation loss and token accuracy are the endpoint's own figures from the "
           "job's final checkpoint." if _has_endpoint_metrics(result) else ""),
    ]  # fmt: skip
    if result.judge:
        j = result.judge
        lines += [
            "",
            f"Judge `{j.judge}` (each pair asked in both orders): {j.wins} wins, {j.ties} ties, "
            f"{j.losses} losses, {j.unparsed} unparsed; win rate {_cell(j.win_rate)}.",
        ]
    for scores in result.models:
        if scores.confusion and result.labels:
            lines += ["", *confusion_table(scores.model, result.labels, scores.confusion)]
    if chart:
        lines += ["", f"![metrics per model]({chart})"]
    return "\n".join(lines) + "\n"


def _has_endpoint_metrics(result: EvalResult) -> bool:
    tuned = result.scores_of("tuned")
    return bool(tuned and any(name in tuned.scores for name in ENDPOINT_METRICS))


def confusion_table(model: str, labels: Sequence[str], confusion: list[list[int]]) -> list[str]:
    """Rows: the trained label; columns: what the model answered."""
    axis = list(labels)
    if len(confusion) > len(axis):
        axis.append("(other)")
    lines = [
        f"Confusion matrix of `{model}` (rows: expected, columns: answered)",
        "",
        "| expected \\ answered | " + " | ".join(axis) + " |",
        "|---|" + "---|" * len(axis),
    ]
    for label, row in zip(axis, confusion, strict=False):
        if label == "(other)" and not any(row):
            continue
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    return lines


def chart_png(result: EvalResult) -> bytes:
    """Grouped bars per metric (scores between 0 and 1), one colour per model, with intervals."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    names = [
        name
        for name in (result.scores_of("tuned") or result.models[0]).scores
        if name not in ENDPOINT_METRICS or name == "valid_mean_token_accuracy"
    ]
    figure = Figure(figsize=(1.6 + 1.3 * len(names), 3.6), dpi=110)
    axes = figure.subplots()
    width = 0.8 / max(len(result.models), 1)
    for offset, scores in enumerate(result.models):
        xs, heights, below, above = [], [], [], []
        for i, name in enumerate(names):
            score = scores.scores.get(name)
            if score is None:
                continue
            xs.append(i + (offset - (len(result.models) - 1) / 2) * width)
            heights.append(score.value)
            below.append(score.value - score.low if score.low is not None else 0.0)
            above.append(score.high - score.value if score.high is not None else 0.0)
        axes.bar(xs, heights, width, yerr=[below, above], capsize=3,
                 label=f"{scores.role}: {scores.model}")  # fmt: skip
    axes.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    axes.set_ylim(0, 1.05)
    axes.set_title(f"{result.verdict} · {result.examples} held-out examples", fontsize=9)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def chart_data_url(png: bytes) -> str:
    """The chart inline, for a Markdown artifact that cannot reach the worker's files."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

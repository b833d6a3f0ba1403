"""`ftpipe eval`: a fine-tuned model against its base on held-out examples, with a progress bar,
a table of scores and a verdict; `ftpipe train --wait` ends with the same."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ftpipe.cli import Flag, OptionGroup, console, errors, fail, model_options, plain
from ftpipe.errors import InputError
from ftpipe.eval.gate import parse_gate
from ftpipe.eval.options import EvalOptions

if TYPE_CHECKING:
    from ftpipe.eval.result import EvalResult


def _gate(values: list[str]) -> dict[str, float]:
    """`--min-improvement accuracy=0.05` (repeatable; a bare number is the main metric)."""
    try:
        return parse_gate(values) if values else {}
    except InputError as error:
        raise typer.BadParameter(error.problem, param_hint="--min-improvement") from None


def gate_option(values: list[str], *, wait: bool) -> dict[str, float]:
    """`train --min-improvement`, checked before any work: it needs the wait and the evaluation."""
    if values and not wait:
        raise typer.BadParameter("needs --wait (and --evaluate)", param_hint="--min-improvement")
    return _gate(values)


EVAL_OPTIONS = OptionGroup(
    argument="options",
    model=EvalOptions,
    prefix="eval_",
    panel="Evaluation options",
    flags={
        "metrics": Flag(
            "--metric",
            kind=list[str] | None,
            help="Report only this metric (repeatable): exact_match, normalized_match, "
            "token_f1, accuracy, macro_f1, valid_loss, valid_mean_token_accuracy.",
        ),
        "min_improvement": Flag(
            kind=list[str] | None,
            parse=_gate,
            help="Fail (exit 1) unless tuned minus base reaches this: METRIC=NUMBER, or a "
            "NUMBER for the main metric (repeatable).",
        ),
    },
)


def eval_command(
    options: EvalOptions,
    job_or_model: Annotated[
        str, typer.Argument(help="A succeeded fine-tuning job's id, or a model (with --data).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Where eval.json, eval.md, eval_answers.csv and eval.png go (default: the "
            "dataset's folder, else FTPIPE_HOME/evals/<job>)."
        ),
    ] = None,
) -> None:
    """Does the model beat its base on data it never saw? Scores with 95% intervals, a verdict,
    and the result kept with the job (`ftpipe jobs show`)."""
    result = run_evaluation(job_or_model, options, out_dir=out, command="eval")
    print_evaluation(result)
    exit_on_gate(result, "eval")


def run_evaluation(
    name: str, options: EvalOptions, *, out_dir: Path | None = None, command: str
) -> EvalResult:
    """The evaluation with one progress bar; failures are one line and a non-zero exit."""
    import openai
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ftpipe.eval.by_name import evaluate_by_name

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, console=errors, transient=True) as bar:
        task = bar.add_task(f"evaluating {name}", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            return evaluate_by_name(name, options, out_dir=out_dir, progress=on_progress)
        except (InputError, openai.APIError) as error:
            bar.stop()
            fail(f"ftpipe {command}: {plain(error)}")


def print_evaluation(result: EvalResult) -> None:
    """The score table (base, tuned, difference with intervals) and the verdict."""
    from rich.table import Table

    from ftpipe.eval.report import metric_rows, verdict_line

    table = Table(title=f"held-out evaluation ({result.examples} examples)", title_justify="left")
    table.add_column("metric", no_wrap=True)
    for column in ("base", "tuned", "tuned - base"):
        table.add_column(column)
    for row in metric_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print(f"verdict: {result.verdict}. {verdict_line(result)}")
    if result.judge:
        j = result.judge
        console.print(
            f"judge {j.judge}: {j.wins} wins, {j.ties} ties, {j.losses} losses "
            f"(win rate {j.win_rate.value:.3f})"
        )
    console.print(f"outputs in {result.out_dir}")


def exit_on_gate(result: EvalResult, command: str) -> None:
    """A failed --min-improvement is exit status 1, after the table was shown."""
    from ftpipe.eval.run import GateFailed

    if not result.passed:
        fail(f"ftpipe {command}: {GateFailed(result)}")


eval_command.__name__ = "eval"  # option errors read "ftpipe eval: ..."
eval_command = model_options(EVAL_OPTIONS)(eval_command)


def evaluate_after_training(job_id: str, dataset_dir: Path, gate: dict[str, float]) -> None:
    """What `train --wait` ends with: the new model against its base on the dataset's own
    validation split, the table, the verdict, and the gate's exit status."""
    validation = dataset_dir / "validation.jsonl"
    if not validation.is_file():
        if gate:
            fail("ftpipe train: --min-improvement needs held-out examples, but this dataset "
                 "has no validation split (--validation-share)")  # fmt: skip
        console.print("not evaluated: the dataset has no validation split (--validation-share)")
        return
    options = EvalOptions(data=str(validation), min_improvement=gate)
    result = run_evaluation(job_id, options, out_dir=dataset_dir, command="train")
    print_evaluation(result)
    exit_on_gate(result, "train")

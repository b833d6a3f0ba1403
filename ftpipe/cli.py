"""The `ftpipe` command line: quick commands that run without a Prefect server."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import openai
import typer
from rich.console import Console

from ftpipe.settings import get_settings

app = typer.Typer(
    help="Fine-tuning pipelines for OpenAI-compatible chat models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(soft_wrap=True)
SAMPLE_CHAT = Path("data/samples/ferry_support.jsonl")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """Set up logging once for every command."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("ftpipe").setLevel(logging.DEBUG if verbose else logging.INFO)


@app.command("local-api")
def local_api(
    host: Annotated[str, typer.Option(help="Loopback address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0 picks a free one).")] = 8765,
) -> None:
    """Serve the local OpenAI-compatible API in the foreground (state in FTPIPE_HOME)."""
    from ftpipe.local_api.server import serve_forever

    try:
        serve_forever(get_settings(), host, port)
    except (ValueError, OSError) as error:
        console.print(f"[red]ftpipe local-api: {error}[/red]")
        raise typer.Exit(2) from error


@app.command()
def quickstart(
    training_file: Annotated[
        Path, typer.Argument(help="A chat-format JSONL training file.", exists=True, dir_okay=False)
    ] = SAMPLE_CHAT,
    model: Annotated[str | None, typer.Option(help="Base model to fine-tune.")] = None,
) -> None:
    """Upload a training file, fine-tune, and ask the new model, on the configured endpoint."""
    from ftpipe import walkthrough
    from ftpipe.client import describe_backend, make_client

    settings = get_settings()
    console.print(f"Endpoint: {describe_backend(settings)}")
    try:
        walkthrough.run(
            make_client(settings),
            training_file,
            model or settings.default_model,
            echo=console.print,
            poll_seconds=0.2,
        )
    except (RuntimeError, openai.APIError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error


def _column_map(values: list[str] | None) -> dict[str, str] | None:
    """`--column user=Q --column assistant=A` as a role-to-column mapping."""
    if not values:
        return None
    pairs = [value.partition("=") for value in values]
    bad = [
        value
        for value, (_, sep, column) in zip(values, pairs, strict=True)
        if not sep or not column
    ]
    if bad:
        raise typer.BadParameter(f"expected ROLE=COLUMN, got {bad[0]!r}", param_hint="--column")
    return {role.strip(): column.strip() for role, _, column in pairs}


@app.command()
def prepare(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="CSV files or folders, dialogue logs (.json) or chat JSONL files."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output root; the dataset goes to OUT/<id>/.")] = Path(
        "data/processed"
    ),
    model: Annotated[str | None, typer.Option(help="Target model (tokenizer, limits).")] = None,
    label: Annotated[
        str | None, typer.Option(help="Label mode: answer every text with positive|negative.")
    ] = None,
    text_column: Annotated[str | None, typer.Option(help="Label mode: the text column.")] = None,
    label_column: Annotated[str | None, typer.Option(help="Label mode: the label column.")] = None,
    column: Annotated[
        list[str] | None, typer.Option(help="Explicit mapping ROLE=COLUMN (repeatable).")
    ] = None,
    system: Annotated[str | None, typer.Option(help="System message for CSV examples.")] = None,
    csv_text: Annotated[str | None, typer.Option(help="CSV given as text.")] = None,
    sentiment: Annotated[
        list[str] | None, typer.Option(help="Dialogues: keep replies with this sentiment.")
    ] = None,
    redact: Annotated[bool, typer.Option(help="Dialogues: redact e-mails, phones, cards.")] = False,
    truncate: Annotated[bool, typer.Option(help="Truncate over-long examples.")] = False,
    validation_share: Annotated[float, typer.Option(help="Held-out share (max 1000).")] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 42,
    max_rejects: Annotated[
        int | None, typer.Option(help="Fail above this many rejected rows (default 10%).")
    ] = None,
) -> None:
    """Validate CSV files or saved dialogues and write train/validation JSONL with a report."""
    from pydantic import ValidationError
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from ftpipe.errors import InputError
    from ftpipe.prepare.options import PrepareOptions
    from ftpipe.prepare.pipeline import prepare as run_prepare

    try:
        options = PrepareOptions(
            model=model or get_settings().default_model,
            label=label,  # type: ignore[arg-type]
            text_column=text_column,
            label_column=label_column,
            column_map=_column_map(column),
            system_instruction=system,
            sentiments=sentiment,  # type: ignore[arg-type]
            redact=redact,
            truncate=truncate,
            validation_share=validation_share,
            seed=seed,
            max_rejects=max_rejects,
        )
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        console.print(f"[red]ftpipe prepare: invalid option {field}: {first['msg']}[/red]")
        raise typer.Exit(2) from error
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("preparing", total=None)

        def on_progress(source: str, done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, description=Path(source).name)

        try:
            result = run_prepare(
                paths or [], options, csv_text=csv_text, out_root=out, progress=on_progress
            )
        except InputError as error:
            bar.stop()
            console.print(f"[red]ftpipe prepare: {error}[/red]")
            raise typer.Exit(1) from error
    counts = result.report["counts"]
    cost = result.report["cost"]
    console.print(
        f"dataset {result.dataset_id}: {counts['examples']} examples ({counts['train']} train, "
        f"{counts['validation']} validation), {counts['rejected']} rows rejected, "
        f"{counts['duplicates_dropped']} duplicates dropped"
    )
    console.print(
        f"estimated training cost on {cost['model']}: {cost['tokens_per_epoch']:,} tokens x "
        f"{cost['epochs']} epochs = {cost['billed_tokens']:,} billed tokens"
        + (f" = ${cost['usd']:.4f}" if cost["usd"] is not None else "")
    )
    console.print(f"outputs in {result.out_dir}")

"""The `ftpipe` command line: quick commands that run without a Prefect server."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import openai
import typer
from rich.console import Console

from ftpipe.settings import get_settings

if TYPE_CHECKING:
    from ftpipe.prepare.options import PrepareOptions

app = typer.Typer(
    help="Fine-tuning pipelines for OpenAI-compatible chat models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console(soft_wrap=True, markup=False, highlight=False)  # paths may hold "[...]"
TaskRunnerName = Literal["threads", "dask"]
DASK_ADDRESS_HELP = "Scheduler of an existing Dask cluster (tcp://host:8786); implies dask."


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
        console.print(f"ftpipe local-api: {error}", style="red")
        raise typer.Exit(2) from error


@app.command()
def quickstart(
    training_file: Annotated[
        Path | None,
        typer.Argument(
            help="A chat-format JSONL training file (default: the shipped ferry_support.jsonl).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Base model to fine-tune.")] = None,
) -> None:
    """Upload a training file, fine-tune, and ask the new model, on the configured endpoint."""
    from ftpipe import resources, walkthrough
    from ftpipe.client import describe_backend, make_client

    settings = get_settings()
    console.print(f"Endpoint: {describe_backend(settings)}")
    try:
        walkthrough.run(
            make_client(settings),
            training_file or resources.sample("ferry_support.jsonl"),
            model or settings.default_model,
            echo=console.print,
            poll_seconds=0.2,
        )
    except (RuntimeError, openai.APIError) as error:
        console.print(f"{error}", style="red")
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
    task_runner: Annotated[
        TaskRunnerName | None,
        typer.Option(
            help="Run the prepare_dataset flow, one task per file: on threads, or on Dask "
            "(a local cluster unless --dask-address). Default: no flow, this process."
        ),
    ] = None,
    dask_address: Annotated[str | None, typer.Option(help=DASK_ADDRESS_HELP)] = None,
) -> None:
    """Validate CSV files or saved dialogues and write train/validation JSONL with a report."""
    from pydantic import ValidationError

    from ftpipe.errors import InputError
    from ftpipe.prepare.options import PrepareOptions

    runner = _runner_choice(task_runner, dask_address)
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
        console.print(f"ftpipe prepare: invalid option {field}: {first['msg']}", style="red")
        raise typer.Exit(2) from error
    try:
        if runner is None:
            prepared = _prepare_here(paths or [], options, csv_text, out)
        else:
            prepared = _prepare_in_flow(paths or [], options, csv_text, out, runner, dask_address)
    except InputError as error:
        console.print(f"ftpipe prepare: {error}", style="red")
        raise typer.Exit(1) from error
    _print_prepared(*prepared)


Prepared = tuple[str, dict[str, Any], dict[str, Any], str]  # id, counts, cost, output folder


def _runner_choice(
    task_runner: TaskRunnerName | None, dask_address: str | None
) -> TaskRunnerName | None:
    """--dask-address means Dask; asking for threads as well is a mistake."""
    if dask_address and task_runner == "threads":
        raise typer.BadParameter("needs --task-runner dask", param_hint="--dask-address")
    return "dask" if dask_address else task_runner


def _prepare_here(
    paths: list[Path], options: PrepareOptions, csv_text: str | None, out: Path
) -> Prepared:
    """The core in this process, with a progress bar: no Prefect server needed."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from ftpipe.prepare.pipeline import prepare as run_prepare

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
                paths, options, csv_text=csv_text, out_root=out, progress=on_progress
            )
        except BaseException:
            bar.stop()
            raise
    report = result.report
    return result.dataset_id, report["counts"], report["cost"], str(result.out_dir)


def _prepare_in_flow(
    paths: list[Path],
    options: PrepareOptions,
    csv_text: str | None,
    out: Path,
    task_runner: TaskRunnerName,
    dask_address: str | None,
) -> Prepared:
    """The prepare_dataset flow, one task per file on threads or Dask."""
    _quiet_dask()
    from ftpipe.errors import InputError
    from ftpipe.flows.prepare_dataset import prepare_dataset

    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_NoTracebackFor((InputError,)))
    result = prepare_dataset(
        paths=[str(path) for path in paths],
        csv_text=csv_text,
        out_dir=str(out),
        task_runner=task_runner,
        dask_address=dask_address,
        **options.model_dump(),
    )
    return result["dataset_id"], result["counts"], result["cost"], result["out_dir"]


def _quiet_dask() -> None:
    """Dask logs every scheduler and worker event at INFO; local workers inherit this too."""
    import os

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def _print_prepared(
    dataset_id: str, counts: dict[str, Any], cost: dict[str, Any], out_dir: str
) -> None:
    console.print(
        f"dataset {dataset_id}: {counts['examples']} examples ({counts['train']} train, "
        f"{counts['validation']} validation), {counts['rejected']} rows rejected, "
        f"{counts['duplicates_dropped']} duplicates dropped"
    )
    console.print(
        f"estimated training cost on {cost['model']}: {cost['tokens_per_epoch']:,} tokens x "
        f"{cost['epochs']} epochs = {cost['billed_tokens']:,} billed tokens"
        + (f" = ${cost['usd']:.4f}" if cost["usd"] is not None else "")
    )
    console.print(f"outputs in {out_dir}")


class _NoTracebackFor(logging.Filter):
    """Errors with a plain message of their own are printed once, without Prefect's traceback."""

    def __init__(self, kinds: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.kinds = kinds

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, self.kinds):
            record.msg, record.args = f"{record.getMessage().splitlines()[0]} {error}", ()
            record.exc_info, record.exc_text = None, None
        return True


@app.command()
def train(
    paths: Annotated[list[Path], typer.Argument(help="CSV files/folders, dialogue logs, JSONL.")],
    model: Annotated[str | None, typer.Option(help="Base model to fine-tune.")] = None,
    suffix: Annotated[str | None, typer.Option(help="Added to the model's name.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: automatic).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job and print the model.")] = False,
    force: Annotated[bool, typer.Option(help="Launch even if this dataset has a job.")] = False,
    label: Annotated[str | None, typer.Option(help="Label mode: positive|negative.")] = None,
    text_column: Annotated[str | None, typer.Option(help="Label mode: text column.")] = None,
    description: Annotated[str, typer.Option(help="A note kept with the job.")] = "",
    task_runner: Annotated[
        TaskRunnerName | None,
        typer.Option(help="Prepare one task per file on threads (default) or on Dask."),
    ] = None,
    dask_address: Annotated[str | None, typer.Option(help=DASK_ADDRESS_HELP)] = None,
) -> None:
    """Run the `finetune` flow: prepare, upload, launch (once), and optionally wait."""
    from ftpipe.errors import InputError
    from ftpipe.finetune.poll import JobFailed, WaitTimeout
    from ftpipe.flows.finetune import finetune

    runner = _runner_choice(task_runner, dask_address) or "threads"
    _quiet_dask()
    plain = (InputError, JobFailed, WaitTimeout)
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_NoTracebackFor(plain))

    try:
        result = finetune(
            paths=[str(path) for path in paths],
            model=model or get_settings().default_model,
            label=label,  # type: ignore[arg-type]
            text_column=text_column,
            suffix=suffix,
            n_epochs=epochs,
            wait=wait,
            force=force,
            description=description,
            task_runner=runner,
            dask_address=dask_address,
        )
    except (InputError, JobFailed, WaitTimeout, openai.APIError) as error:
        console.print(f"ftpipe train: {error}", style="red")
        raise typer.Exit(1) from error
    note = (
        " (already launched for this dataset; --force makes a new one)" if result["reused"] else ""
    )
    console.print(f"job {result['job_id']}: {result['status']}{note}")
    if result["fine_tuned_model"]:
        console.print(f"fine-tuned model: {result['fine_tuned_model']}")


jobs_app = typer.Typer(
    help="Fine-tuning jobs in the registry and on the endpoint.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")


def _job_row(record: object) -> dict[str, object]:
    from dataclasses import asdict

    return asdict(record)  # type: ignore[call-overload]


@jobs_app.command("list")
def jobs_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every job ftpipe ever launched, newest first."""
    import json

    from rich.table import Table

    from ftpipe.registry import default_registry

    records = default_registry().jobs()
    if as_json:
        print(json.dumps([_job_row(r) for r in records], indent=2))
        return
    table = Table("job", "status", "base model", "fine-tuned model", "dataset", "created")
    for r in records:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r.created_at)) if r.created_at else ""
        table.add_row(
            r.job_id, r.status, r.base_model, r.fine_tuned_model or "", r.dataset_id or "", created
        )
    console.print(table)


def _retrieve(job_id: str) -> object:
    from ftpipe.client import endpoint_id, make_client
    from ftpipe.registry import default_registry

    client = make_client()
    try:
        job = client.fine_tuning.jobs.retrieve(job_id)
    except openai.NotFoundError as error:
        console.print(
            f"ftpipe jobs: no fine-tuning job {job_id!r} on {client.base_url}", style="red"
        )
        raise typer.Exit(1) from error
    return default_registry().update_from_job(job, endpoint_id())


@jobs_app.command("show")
def jobs_show(job_id: str) -> None:
    """A job's current state (refreshed from the endpoint)."""
    import json

    print(json.dumps(_job_row(_retrieve(job_id)), indent=2))


@jobs_app.command("events")
def jobs_events(
    job_id: str, limit: Annotated[int, typer.Option(help="How many of the newest events.")] = 50
) -> None:
    """A job's newest events, oldest first."""
    from ftpipe.client import make_client

    _retrieve(job_id)
    events = make_client().fine_tuning.jobs.list_events(job_id, limit=limit).data
    for event in reversed(events):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.created_at))
        console.print(f"{stamp} {event.level:5} {event.message}")


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job that has not finished."""
    from ftpipe.client import endpoint_id, make_client
    from ftpipe.registry import default_registry

    _retrieve(job_id)
    client = make_client()
    try:
        job = client.fine_tuning.jobs.cancel(job_id)
    except openai.BadRequestError as error:
        console.print(f"ftpipe jobs cancel: {error.message}", style="red")
        raise typer.Exit(1) from error
    default_registry().update_from_job(job, endpoint_id())
    console.print(f"job {job.id}: {job.status}")


@jobs_app.command("poll")
def jobs_poll() -> None:
    """Refresh every unfinished job of the current endpoint in the registry."""
    from ftpipe.client import endpoint_id, make_client
    from ftpipe.finetune.poll import refresh
    from ftpipe.registry import default_registry

    client, registry = make_client(), default_registry()
    where = endpoint_id()
    active = registry.active(endpoint=where)
    for record in active:
        fresh = refresh(client, registry, record.job_id, where)
        console.print(f"job {fresh.job_id}: {fresh.status} {fresh.fine_tuned_model or ''}")
    registry.export_job_ids(get_settings().home / "job_ids.json")
    if not active:
        console.print("no unfinished jobs")


@app.command()
def ask(
    text: Annotated[str, typer.Argument(help="What to ask.")],
    model: Annotated[str | None, typer.Option(help="Model (default FTPIPE_DEFAULT_MODEL).")] = None,
    system: Annotated[str | None, typer.Option(help="System instruction.")] = None,
    attempts: Annotated[int, typer.Option(help="Tries on 429/5xx/connection errors.")] = 3,
    log: Annotated[bool, typer.Option(help="Append the exchange to the dialogue log.")] = True,
) -> None:
    """Ask a model; the reply is printed and (by default) saved to the dialogue log."""
    from ftpipe import chat, sentiment
    from ftpipe.client import make_client
    from ftpipe.dialogue_log import DialogueLog, default_log_path

    try:
        reply = chat.ask(
            make_client(),
            text,
            model=model or get_settings().default_model,
            system_instruction=system,
            attempts=attempts,
            sentiment=sentiment.analyse,
            log=DialogueLog(default_log_path()) if log else None,
        )
    except openai.APIError as error:
        console.print(f"ftpipe ask: {error}", style="red")
        raise typer.Exit(1) from error
    print(reply.text)


@app.command("describe-image")
def describe_image(
    path: Annotated[Path, typer.Argument(help="A PNG, JPEG, WEBP or GIF file.")],
    prompt: Annotated[str | None, typer.Option(help="What to ask about the image.")] = None,
    model: Annotated[str | None, typer.Option(help="Vision-capable model.")] = None,
    raw_http: Annotated[bool, typer.Option(help="Plain HTTP instead of the SDK.")] = False,
) -> None:
    """Describe a local image (downscaled first when it is over 20 MB or 2048 px)."""
    from ftpipe import vision
    from ftpipe.client import make_client
    from ftpipe.errors import InputError

    client, chosen = make_client(), model or get_settings().default_model
    try:
        if raw_http:
            base_url, key = vision.endpoint_and_key(client)
            description = vision.describe_image_by_requests(
                base_url, key, path, prompt, model=chosen
            )
        else:
            description = vision.describe_image(client, path, prompt, model=chosen)
    except (InputError, vision.EndpointError, openai.APIError) as error:
        console.print(f"ftpipe describe-image: {error}", style="red")
        raise typer.Exit(1) from error
    print(description.text)


@app.command()
def models() -> None:
    """Models the endpoint serves."""
    from ftpipe.client import make_client

    for model in make_client().models.list():
        print(model.id)


@app.command("assistants")
def assistants_command() -> None:
    """Assistants from data/assistants.json merged with the endpoint's own."""
    from ftpipe.assistants import list_assistants
    from ftpipe.client import make_client

    for assistant in list_assistants(make_client()):
        print(f"{assistant.id}\t{assistant.model}\t{assistant.name}\t({assistant.source})")


@app.command("sentiment")
def sentiment_command(
    text: Annotated[str, typer.Argument(help="Text to classify.")],
    use_model: Annotated[
        bool, typer.Option("--model", help="Ask the model (any language).")
    ] = False,
) -> None:
    """positive, negative or neutral (offline VADER by default)."""
    from ftpipe import sentiment

    print(sentiment.analyser("model" if use_model else "vader")(text))


@app.command()
def demo() -> None:
    """Run the original module's main on the configured endpoint, printing each step."""
    from ftpipe.errors import InputError
    from ftpipe.openai_model import main as run_demo

    try:
        run_demo(echo=console.print)
    except (InputError, openai.APIError) as error:
        console.print(f"ftpipe demo: {error}", style="red")
        raise typer.Exit(1) from error


@app.command()
def serve(
    file: Annotated[
        Path | None,
        typer.Option(help="Deployments file (default: the project's deployments/prefect.yaml)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Most flow runs at the same time (default: no limit).")
    ] = None,
) -> None:
    """Serve every deployment (schedules, UI-started runs) from this process until Ctrl-C."""
    from ftpipe.flows.serve import serve_all
    from ftpipe.resources import deployments_file

    serve_all(file or deployments_file(), limit=limit, echo=console.print)


def run() -> None:
    """The console script: errors that carry a plain message are shown as one line, exit 1."""
    from ftpipe.errors import InputError

    try:
        app(prog_name="ftpipe")
    except (InputError, openai.OpenAIError) as error:
        console.print(f"ftpipe: {error}", style="red")
        raise SystemExit(1) from error

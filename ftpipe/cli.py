"""The `ftpipe` command line: quick commands that run without a Prefect server."""

from __future__ import annotations

import functools
import inspect
import logging
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar, Union, get_args

import typer
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticUndefined
from rich.console import Console

from ftpipe import no_telemetry
from ftpipe.finetune.options import LaunchOptions
from ftpipe.prepare.options import PrepareOptions
from ftpipe.settings import get_settings

if TYPE_CHECKING:
    from ftpipe.registry import JobRecord

app = typer.Typer(
    help="Fine-tuning pipelines for OpenAI-compatible chat models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
# Printed as written: paths may hold "[...]" and model ids ":x:" (rich markup and emoji codes).
console = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)
errors = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)
TaskRunnerName = Literal["threads", "dask"]
DASK_ADDRESS_HELP = "Scheduler of an existing Dask cluster (tcp://host:8786); implies dask."
WAIT_TIMEOUT_S = 120 * 60  # as the finetune flow's wait_timeout_minutes
Command = TypeVar("Command", bound=Callable[..., Any])


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """Set up logging once for every command."""
    no_telemetry()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("ftpipe").setLevel(logging.DEBUG if verbose else logging.INFO)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and an exit status: what a user sees instead of a traceback."""
    errors.print(message, style="red")
    raise typer.Exit(code)


def plain(error: BaseException) -> str:
    """An API error as the endpoint's own words on one line, not the SDK's dict dump."""
    import openai

    if isinstance(error, openai.APIStatusError):
        body = error.body if isinstance(error.body, dict) else {}
        detail = body.get("error", body) if isinstance(body.get("error"), dict) else body
        message = detail.get("message") if isinstance(detail, dict) else None
        return f"{error.status_code} from {error.request.url}: {message or error.message}"
    if isinstance(error, openai.APIConnectionError):
        return f"cannot reach {error.request.url}: {error.message}"
    return " ".join(str(error).split())


# --- options generated from the pydantic models that the flows take --------------------------


@dataclass(frozen=True)
class Flag:
    """How one model field is spelled on the command line, where the default will not do."""

    name: str | None = None  # default: --field-name
    kind: Any = None  # the CLI type, where the field's own is not one typer reads
    parse: Callable[[Any], Any] | None = None  # CLI value -> field value
    help: str | None = None  # default: the field's description
    fallback: Callable[[], Any] | None = None  # the value when the option is not given


@dataclass(frozen=True)
class OptionGroup:
    """A pydantic model whose fields become a command's options; the command gets the model."""

    argument: str  # the command's parameter that receives the built model
    model: type[BaseModel]
    prefix: str  # Python names of the options, so two groups' `seed`s never clash
    panel: str
    flags: dict[str, Flag] = field(default_factory=dict)
    exclude: frozenset[str] = frozenset()  # fields another group already gives

    def fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.model_fields.items() if k not in self.exclude}

    def flag(self, name: str) -> Flag:
        return self.flags.get(name, Flag())

    def option_name(self, name: str) -> str:
        return self.flag(name).name or "--" + name.replace("_", "-")

    def parameters(self) -> list[inspect.Parameter]:
        """One keyword option per field: its type, default and description from the model."""
        return [
            inspect.Parameter(
                f"{self.prefix}{name}",
                inspect.Parameter.KEYWORD_ONLY,
                default=_cli_default(info.default, self.flag(name)),
                annotation=Annotated[
                    kind,
                    typer.Option(
                        self.option_name(name),
                        help=self.flag(name).help or info.description,
                        rich_help_panel=self.panel,
                        show_default=info.default not in (None, PydanticUndefined),
                    ),
                ],
            )
            for name, info in self.fields().items()
            for kind in [self.flag(name).kind or _cli_type(info.annotation)]
        ]

    def build(self, values: dict[str, Any], command: str) -> BaseModel:
        """Take this group's options out of `values` and validate them into the model."""
        from ftpipe.errors import InputError

        given: dict[str, Any] = {}
        for name in self.fields():
            value, flag = values.pop(f"{self.prefix}{name}"), self.flag(name)
            try:
                if value is None and flag.fallback:
                    value = flag.fallback()  # a default from a setting names the setting
            except InputError as error:
                fail(f"ftpipe {command}: {error}", 2)
            if value is not None:
                given[name] = flag.parse(value) if flag.parse else value
        try:
            return self.model(**given)
        except ValidationError as error:
            first = error.errors()[0]
            where = str(first["loc"][0]) if first["loc"] else ""
            flag = self.option_name(where) if where in self.fields() else where
            fail(f"ftpipe {command}: invalid option {flag}: {first['msg']}", 2)


def _cli_type(annotation: Any) -> Any:
    """The field's type as typer reads it: X | None is an optional X, and a union typer has no
    parser for (int | 'auto') is read as text that the model then validates. Constraints
    (Annotated) are left to the model too, so they fail as one line like every other check."""
    if getattr(annotation, "__origin__", None) is Union or isinstance(annotation, types.UnionType):
        members = [_bare(arg) for arg in get_args(annotation) if arg is not type(None)]
        if len(members) == 1:
            return members[0] | None
        return str | None if len(members) < len(get_args(annotation)) else str
    return _bare(annotation)


def _bare(annotation: Any) -> Any:
    """The type under Annotated[...] metadata, which typer would otherwise validate itself."""
    from typing import get_origin

    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _cli_default(default: Any, flag: Flag) -> Any:
    """The model's default, shown in --help; None where the command fills it in later."""
    if default is PydanticUndefined or flag.fallback:
        return None
    return default


def model_options(*groups: OptionGroup) -> Callable[[Command], Command]:
    """Give a command the options of each group's model, and call it with the models built."""

    def decorate(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True)
        built = {group.argument for group in groups}
        kept = [p for p in own.parameters.values() if p.name not in built]
        parameters = kept + [p for group in groups for p in group.parameters()]

        @functools.wraps(command)
        def wrapper(**values: Any) -> Any:
            _check_settings(command.__name__)
            for group in groups:
                values[group.argument] = group.build(values, command.__name__)
            return command(**values)

        wrapper.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper  # type: ignore[return-value]

    return decorate


def _check_settings(command: str) -> None:
    """Settings that cannot work (a bad value, FTPIPE_HOME a file) stop the command before its
    options are built or any input is read: one line naming the variable, exit 2."""
    from ftpipe.errors import InputError

    try:
        get_settings().checked_home()
    except InputError as error:
        fail(f"ftpipe {command}: {error}", 2)


def _default_model() -> str:
    """FTPIPE_DEFAULT_MODEL (or the backend's default) when --model is not given; a typo in
    the variable is named as the variable, not as an option the user never typed."""
    from ftpipe.catalog import check_default_model

    return check_default_model(get_settings().default_model)


def _check_paths(command: str, paths: list[Path], out: Path, csv_text: str | None) -> None:
    """The named inputs and --out, checked before anything is read: a missing path, a pipe, a
    broken link or an --out that is a file is one line naming it, exit 2."""
    from ftpipe.prepare.pipeline import input_problem
    from ftpipe.settings import unusable_folder

    if not paths and csv_text is None:
        fail(f"ftpipe {command}: no input given: pass files, folders or --csv-text", 2)
    for path in paths:
        problem = input_problem(path)
        if problem:
            fail(f"ftpipe {command}: {path}: {problem}", 2)
    problem = unusable_folder(out)
    if problem:
        fail(f"ftpipe {command}: --out {out}: {problem}", 2)


def _column_map(values: list[str]) -> dict[str, str] | None:
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


PREPARE_OPTIONS = OptionGroup(
    argument="options",
    model=PrepareOptions,
    prefix="",
    panel="Dataset options",
    flags={
        "model": Flag(fallback=_default_model),
        "column_map": Flag(
            "--column",
            kind=list[str] | None,
            parse=_column_map,
            help="Explicit mapping ROLE=COLUMN (repeatable), e.g. --column user=Q "
            "--column assistant=A; overrides the recognised column pairs.",
        ),
        "system_instruction": Flag("--system"),
        "sentiments": Flag(
            "--sentiment",
            kind=list[str] | None,  # typer reads no list of choices; the model checks them
            help="Dialogues: keep replies with this sentiment: positive, negative or neutral "
            "(repeatable).",
        ),
    },
)
TRAINING_OPTIONS = OptionGroup(
    argument="training",
    model=LaunchOptions,
    prefix="training_",
    panel="Training options",
    flags={
        "n_epochs": Flag("--epochs"),
        "seed": Flag("--training-seed", help="Training seed (default: the endpoint picks one)."),
    },
    exclude=frozenset({"model"}),  # the base model is the dataset options' --model
)


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
        fail(f"ftpipe local-api: {error}", 2)


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
    import openai

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
        fail(plain(error))


def _plain_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message says it all: one line, never Prefect's traceback in the run logs."""
    import openai

    from ftpipe.errors import InputError
    from ftpipe.finetune.poll import JobFailed, WaitTimeout

    return (InputError, JobFailed, WaitTimeout, openai.APIError)


@app.command()
@model_options(PREPARE_OPTIONS)
def prepare(
    options: PrepareOptions,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="CSV files or folders, dialogue logs (.json) or chat JSONL files."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output root; the dataset goes to OUT/<id>/.")] = Path(
        "data/processed"
    ),
    csv_text: Annotated[str | None, typer.Option(help="CSV given as text.")] = None,
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
    runner = _runner_choice(task_runner, dask_address)
    _check_paths("prepare", paths or [], out, csv_text)
    try:
        if runner is None:
            prepared = _prepare_here(paths or [], options, csv_text, out)
        else:
            prepared = _prepare_in_flow(paths or [], options, csv_text, out, runner, dask_address)
    except _plain_errors() as error:
        fail(f"ftpipe prepare: {plain(error)}")
    _print_prepared(*prepared)


# id, counts, cost, output folder, inputs skipped ({path, reason})
Prepared = tuple[str, dict[str, Any], dict[str, Any], str, list[dict[str, str]]]


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
    from ftpipe.prepare import gx_process

    gx_process.start_early()  # before the imports below: GX's import overlaps them
    try:
        return _prepare_with_bar(paths, options, csv_text, out)
    finally:
        gx_process.discard_early()


def _prepare_with_bar(
    paths: list[Path], options: PrepareOptions, csv_text: str | None, out: Path
) -> Prepared:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    from ftpipe.prepare.pipeline import prepare as run_prepare

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=errors, transient=True) as bar:
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
    skipped = report.get("skipped_inputs", [])
    return result.dataset_id, report["counts"], report["cost"], str(result.out_dir), skipped


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
    from ftpipe.flows.prefect_api import local_prefect
    from ftpipe.flows.prepare_dataset import plain_errors, prepare_dataset

    with local_prefect(), plain_errors(*_plain_errors()):
        result = prepare_dataset(
            paths=[str(path) for path in paths],
            options=options,
            csv_text=csv_text,
            out_dir=str(out),
            task_runner=task_runner,
            dask_address=dask_address,
        )
    skipped = result["report"].get("skipped_inputs", [])
    return result["dataset_id"], result["counts"], result["cost"], result["out_dir"], skipped


def _quiet_dask() -> None:
    """Dask logs every scheduler and worker event at INFO; local workers inherit this too."""
    import os

    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


def _print_prepared(
    dataset_id: str,
    counts: dict[str, Any],
    cost: dict[str, Any],
    out_dir: str,
    skipped: list[dict[str, str]],
) -> None:
    console.print(
        f"dataset {dataset_id}: {counts['examples']} examples ({counts['train']} train, "
        f"{counts['validation']} validation), {counts['rejected']} rows rejected, "
        f"{counts['duplicates_dropped']} duplicates dropped"
    )
    _print_skipped(skipped)
    _print_cost(cost)
    console.print(f"outputs in {out_dir}")


def _print_skipped(skipped: list[dict[str, str]]) -> None:
    """Inputs found in the folders but not read, each with why (also in report.md)."""
    for entry in skipped:
        console.print(f"skipped {entry['path']}: {entry['reason']}")


def _print_cost(cost: dict[str, Any]) -> None:
    console.print(
        f"estimated training cost on {cost['model']}: {cost['tokens_per_epoch']:,} tokens x "
        f"{cost['epochs']} epochs = {cost['billed_tokens']:,} billed tokens"
        + (f" = ${cost['usd']:.4f}" if cost["usd"] is not None else "")
    )


@app.command()
@model_options(PREPARE_OPTIONS, TRAINING_OPTIONS)
def train(
    options: PrepareOptions,
    training: LaunchOptions,
    paths: Annotated[
        list[Path] | None, typer.Argument(help="CSV files/folders, dialogue logs, JSONL.")
    ] = None,
    csv_text: Annotated[str | None, typer.Option(help="CSV given as text.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job and print the model.")] = False,
    force: Annotated[bool, typer.Option(help="Launch even if this dataset has a job.")] = False,
    description: Annotated[str, typer.Option(help="A note kept with the job.")] = "",
    out: Annotated[Path, typer.Option(help="Output root; the dataset goes to OUT/<id>/.")] = Path(
        "data/processed"
    ),
    task_runner: Annotated[
        TaskRunnerName | None,
        typer.Option(help="Prepare one task per file on threads (default) or on Dask."),
    ] = None,
    dask_address: Annotated[str | None, typer.Option(help=DASK_ADDRESS_HELP)] = None,
    evaluate: Annotated[
        bool,
        typer.Option(
            help="With --wait: compare the new model with its base on the validation split "
            "(as `ftpipe eval`)."
        ),
    ] = True,
    min_improvement: Annotated[
        list[str] | None,
        typer.Option(
            help="With --wait: exit 1 unless tuned minus base reaches this, METRIC=NUMBER or "
            "a NUMBER for the main metric (repeatable)."
        ),
    ] = None,
) -> None:
    """Run the `finetune` flow: prepare, upload, launch (once), and optionally wait and
    evaluate the new model against its base."""
    from ftpipe.cli_eval import evaluate_after_training, gate_option
    from ftpipe.flows.finetune import finetune
    from ftpipe.flows.prefect_api import local_prefect
    from ftpipe.flows.prepare_dataset import plain_errors

    gate = gate_option(min_improvement or [], wait=wait and evaluate)
    runner = _runner_choice(task_runner, dask_address) or "threads"
    _check_paths("train", paths or [], out, csv_text)
    _check_registry()
    _quiet_dask()
    try:
        with local_prefect(), plain_errors(*_plain_errors()):
            result = finetune(
                paths=[str(path) for path in paths or []],
                options=options,
                training=training.model_dump(exclude={"model"}),
                csv_text=csv_text,
                wait=False,  # waited for below, with a progress bar instead of a log per step
                force=force,
                description=description,
                out_dir=str(out),
                task_runner=runner,
                dask_address=dask_address,
            )
    except _plain_errors() as error:
        fail(f"ftpipe train: {plain(error)}")
    _print_skipped(result.get("skipped", []))
    _print_cost(result["cost"])
    note = (
        " (already launched for this dataset; --force makes a new one)" if result["reused"] else ""
    )
    if not wait:
        console.print(f"job {result['job_id']}: {result['status']}{note}")
        _print_how_to_follow(result["job_id"], result["status"])
        return
    if gate and not (out / result["dataset_id"] / "validation.jsonl").is_file():
        fail("ftpipe train: --min-improvement needs held-out examples, but this dataset has no "
             "validation split (--validation-share)", 2)  # fmt: skip
    record = _follow(result["job_id"])
    console.print(f"job {record.job_id}: {record.status}{note}")
    if record.fine_tuned_model:
        console.print(f"fine-tuned model: {record.fine_tuned_model}")
    if evaluate and record.status == "succeeded":
        evaluate_after_training(record.job_id, out / result["dataset_id"], gate)


def _check_registry() -> None:
    """The job registry opens before any input is read: a database URL that cannot work (a
    SQLite file whose folder is a file, no server) is one line naming it, exit 2."""
    from ftpipe.errors import InputError
    from ftpipe.registry import default_registry

    try:
        default_registry().close()
    except InputError as error:
        fail(f"ftpipe train: {error}", 2)


def _print_how_to_follow(job_id: str, status: str) -> None:
    """A job launched without --wait keeps running; say where to look next."""
    from ftpipe.jobs import TERMINAL

    if status in TERMINAL:
        console.print(f"see it with `ftpipe jobs show {job_id}`")
        return
    console.print(
        f"follow it with `ftpipe jobs show {job_id}` (or `ftpipe jobs events {job_id}`); "
        "`ftpipe jobs poll` refreshes every unfinished job"
    )


def _follow(job_id: str) -> JobRecord:
    """Wait for the job with one progress bar (steps and live loss from its metrics events),
    recording each status change in the registry as the flow's wait task does."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ftpipe.client import endpoint_id, make_client
    from ftpipe.finetune.poll import wait_for_job
    from ftpipe.jobs import job_ids_path
    from ftpipe.registry import default_registry

    client, registry, where = make_client(), default_registry(), endpoint_id()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns.append(TextColumn("{task.fields[loss]}"))
    with Progress(*columns, console=errors) as bar:
        steps = bar.add_task(f"{job_id} waiting", total=None, loss="")

        def on_event(event: Any) -> None:
            data = event.data or {}
            if event.type == "metrics" and data.get("total_steps"):
                loss = data.get("train_loss")
                shown = f"loss {loss:.4f}" if isinstance(loss, int | float) else ""
                bar.update(steps, completed=data["step"], total=data["total_steps"], loss=shown)

        def on_status(job: Any) -> None:
            registry.update_from_job(job, where)
            bar.update(steps, description=f"{job.id} {job.status}")

        try:
            job = wait_for_job(
                client, job_id, on_event=on_event, on_status=on_status, timeout=WAIT_TIMEOUT_S
            )
        except _plain_errors() as error:
            bar.stop()
            registry.export_job_ids(job_ids_path())
            fail(f"ftpipe train: {plain(error)}")
    record = registry.update_from_job(job, where)
    registry.export_job_ids(job_ids_path())
    return record


jobs_app = typer.Typer(
    help="Fine-tuning jobs in the registry and on the endpoint.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")
TIME_FIELDS = ("created_at", "finished_at")


def iso_time(stamp: int | None) -> str | None:
    """A Unix time as an ISO 8601 UTC date a person reads (the registry keeps the number)."""
    if not stamp:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _job_row(record: object) -> dict[str, object]:
    from dataclasses import asdict

    row: dict[str, object] = asdict(record)  # type: ignore[call-overload]
    return row | {name: iso_time(row.get(name)) for name in TIME_FIELDS}  # type: ignore[arg-type]


@jobs_app.command("list")
def jobs_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every job ftpipe ever launched, newest first."""
    import json

    from ftpipe.registry import default_registry

    records = default_registry().jobs()
    if as_json:
        print(json.dumps([_job_row(r) for r in records], indent=2))
        return
    rows = [_list_row(r) for r in records]
    table = _jobs_table(rows)
    unbounded = console.options.update_width(1_000_000)
    if console.measure(table, options=unbounded).maximum <= console.width:
        console.print(table)
        return
    for row in rows:  # too narrow for the table: one block per job, every id whole
        console.print(f"{row['job']}  {row['status']}")
        for label, value in list(row.items())[2:]:
            if value:
                console.print(f"  {label}: {value}")


def _list_row(record: JobRecord) -> dict[str, str]:
    created = iso_time(record.created_at) or ""
    return {
        "job": record.job_id,
        "status": record.status,
        "base model": record.base_model,
        "fine-tuned model": record.fine_tuned_model or "",
        "dataset": record.dataset_id or "",
        "created": created.replace("T", " ")[:16],
    }


def _jobs_table(rows: list[dict[str, str]]) -> Any:
    from rich.table import Table

    table = Table(*(rows[0] if rows else ["job", "status"]))
    for row in rows:
        table.add_row(*row.values())
    return table


def _retrieve(job_id: str) -> object:
    import openai

    from ftpipe.client import endpoint_id, make_client
    from ftpipe.registry import default_registry

    client = make_client()
    try:
        job = client.fine_tuning.jobs.retrieve(job_id)
    except openai.NotFoundError:
        fail(f"ftpipe jobs: no fine-tuning job {job_id!r} on {client.base_url}")
    return default_registry().update_from_job(job, endpoint_id())


@jobs_app.command("show")
def jobs_show(
    job_id: str,
    plot: Annotated[
        bool,
        typer.Option(help="Write the loss curve of a finished job (step_metrics.csv, loss.png)."),
    ] = True,
) -> None:
    """A job's current state (refreshed from the endpoint), its times as ISO dates in UTC; for a
    finished job also its loss curve, under FTPIPE_HOME/jobs/<job id>/ (path on stderr)."""
    import json

    print(json.dumps(_job_row(_retrieve(job_id)) | _evaluation_of(job_id), indent=2))
    if plot:
        _write_loss_curve(job_id)


def _evaluation_of(job_id: str) -> dict[str, object]:
    """The job's newest evaluation (`ftpipe eval`), as the verdict and the figures behind it."""
    from ftpipe.eval.result import EvalResult
    from ftpipe.registry import default_registry

    stored = default_registry().latest_evaluation(job_id)
    if stored is None:
        return {"evaluation": None}
    result = EvalResult.model_validate(stored)
    tuned, base = result.scores_of("tuned"), result.scores_of("base")
    return {
        "evaluation": {
            "verdict": result.verdict,
            "passed": result.passed,
            "summary": result.summary(),
            "evaluated_at": iso_time(result.created_at),
            "examples": result.examples,
            "tuned": {k: v.value for k, v in tuned.scores.items()} if tuned else {},
            "base": {k: v.value for k, v in base.scores.items()} if base else {},
            "outputs": result.out_dir,
        }
    }


def _write_loss_curve(job_id: str) -> None:
    """Fetch the job's step metrics and plot them; a job without them says so and is fine."""
    import openai

    from ftpipe.client import make_client
    from ftpipe.loss_curve import NoMetrics, save_loss_curve

    client = make_client()
    job = client.fine_tuning.jobs.retrieve(job_id)
    if not job.result_files:
        if job.status == "succeeded":
            errors.print(f"job {job_id} has no step metrics (result file) to plot")
        return
    try:
        saved = save_loss_curve(client, job)
    except (NoMetrics, openai.APIError) as error:
        errors.print(f"no loss curve for {job_id}: {plain(error)}")
        return
    errors.print(f"loss curve: {saved.png} (step metrics: {saved.metrics})")


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
    import openai

    from ftpipe.client import endpoint_id, make_client
    from ftpipe.registry import default_registry

    _retrieve(job_id)
    client = make_client()
    try:
        job = client.fine_tuning.jobs.cancel(job_id)
    except openai.BadRequestError as error:
        fail(f"ftpipe jobs cancel: {error.message}")
    default_registry().update_from_job(job, endpoint_id())
    console.print(f"job {job.id}: {job.status}")


@jobs_app.command("poll")
def jobs_poll() -> None:
    """Refresh every unfinished job of the current endpoint in the registry."""
    from ftpipe.client import endpoint_id, make_client
    from ftpipe.finetune.poll import refresh
    from ftpipe.jobs import job_ids_path
    from ftpipe.registry import default_registry

    client, registry = make_client(), default_registry()
    where = endpoint_id()
    active = registry.active(endpoint=where)
    for record in active:
        fresh = refresh(client, registry, record.job_id, where)
        console.print(f"job {fresh.job_id}: {fresh.status} {fresh.fine_tuned_model or ''}")
    registry.export_job_ids(job_ids_path())
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
    import openai

    from ftpipe import chat, sentiment
    from ftpipe.client import make_client
    from ftpipe.dialogue_log import DialogueLog, default_log_path
    from ftpipe.errors import InputError

    try:
        chat.check_request(text, attempts)  # before a client (and maybe a local server) starts
    except InputError as error:
        fail(f"ftpipe ask: {error.problem}", code=2)
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
        fail(f"ftpipe ask: {plain(error)}")
    print(reply.text)


@app.command("describe-image")
def describe_image(
    path: Annotated[Path, typer.Argument(help="A PNG, JPEG, WEBP or GIF file.")],
    prompt: Annotated[str | None, typer.Option(help="What to ask about the image.")] = None,
    model: Annotated[str | None, typer.Option(help="Vision-capable model.")] = None,
    raw_http: Annotated[bool, typer.Option(help="Plain HTTP instead of the SDK.")] = False,
) -> None:
    """Describe a local image (downscaled first when it is over 20 MB or 2048 px)."""
    import openai

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
        fail(f"ftpipe describe-image: {plain(error)}")
    print(description.text)


STAND_IN_OWNER = "ftpipe-stand-in"  # what the local server's stand-in engine puts in owned_by
models_app = typer.Typer(help="Models: those the endpoint serves, and local base models.")
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """Models the endpoint serves (one id a line); stand-ins are named as such on stderr."""
    if ctx.invoked_subcommand is not None:
        return
    from ftpipe.client import make_client

    stand_ins = []
    for model in make_client().models.list():
        print(model.id)
        if model.owned_by == STAND_IN_OWNER:
            stand_ins.append(model.id)
    if stand_ins:
        errors.print(
            f"stand-in (no real model answers or trains): {', '.join(stand_ins)}; the local "
            "server runs its stand-in engine (FTPIPE_LOCAL_ENGINE=stand-in, or the train extra "
            "is not installed)"
        )


@models_app.command("pull")
def models_pull(
    source: Annotated[
        str,
        typer.Argument(help="A Hugging Face id (org/name) to download, or a local model folder."),
    ],
    name: Annotated[
        str | None, typer.Option(help="The id to use for a local folder (default: its name).")
    ] = None,
) -> None:
    """Make a base model available to the local server: the one way ftpipe downloads one."""
    from ftpipe import model_pull

    try:
        model_id, folder = model_pull.pull(source, name=name, echo=errors.print)
    except model_pull.PullError as error:
        fail(f"ftpipe models pull: {error}")
    console.print(f"model {model_id} ready in {folder}; use it with --model {model_id}")


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
    import openai

    from ftpipe.errors import InputError
    from ftpipe.openai_model import FacadeError
    from ftpipe.openai_model import main as run_demo

    try:
        run_demo(echo=console.print)
    except (InputError, FacadeError, openai.APIError) as error:
        fail(f"ftpipe demo: {plain(error)}")


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


prefect_app = typer.Typer(
    help="The long-lived local Prefect server that ad-hoc runs report to (when no "
    "PREFECT_API_URL is set).",
    no_args_is_help=True,
)
app.add_typer(prefect_app, name="prefect")


@prefect_app.command("status")
def prefect_status() -> None:
    """Where ad-hoc runs report: the configured API, or ftpipe's local server if it runs."""
    from ftpipe.flows.prefect_api import configured_api_url, find_server, prefect_home

    configured = configured_api_url()
    if configured:
        console.print(f"PREFECT_API_URL is set: ad-hoc runs report to {configured}")
        return
    server = find_server()
    if server is None:
        console.print(f"no local Prefect server runs for {prefect_home()} (the next run starts it)")
        raise typer.Exit(3)
    console.print(f"local Prefect server: API {server.url}, UI {server.ui_url}, pid {server.pid}")


@prefect_app.command("start")
def prefect_start() -> None:
    """Start the local Prefect server now (or find the running one)."""
    from ftpipe.errors import InputError
    from ftpipe.flows.prefect_api import ensure_server

    try:
        server = ensure_server()
    except InputError as error:
        fail(f"ftpipe prefect start: {error}")
    console.print(f"local Prefect server: API {server.url}, UI {server.ui_url}")


@prefect_app.command("stop")
def prefect_stop() -> None:
    """Stop the local Prefect server and everything it started."""
    from ftpipe.flows.prefect_api import prefect_home, stop_server

    server = stop_server()
    if server is None:
        console.print(f"no local Prefect server was announced in {prefect_home()}")
        return
    console.print(f"stopped the local Prefect server at {server.url} (pid {server.pid})")


dialogues_app = typer.Typer(help="The dialogue log that chat writes.", no_args_is_help=True)
app.add_typer(dialogues_app, name="dialogues")


@dialogues_app.command("export")
def dialogues_export(
    target: Annotated[Path, typer.Argument(help="The JSON file to write (a list of turns).")],
) -> None:
    """Write the dialogue log in the earlier JSON-list format."""
    from ftpipe.dialogue_log import DialogueLog, default_log_path
    from ftpipe.errors import InputError

    try:
        turns = DialogueLog(default_log_path()).export_json(target)
    except InputError as error:
        fail(f"ftpipe dialogues export: {error}")
    console.print(f"{turns} turns written to {target}")


def run() -> None:
    """The console script: errors that carry a plain message are one line on stderr, exit 1."""
    try:
        app(prog_name="ftpipe")
    except Exception as error:
        import openai  # here, not at the top: `ftpipe prepare` never needs the SDK

        from ftpipe.errors import InputError

        if not isinstance(error, InputError | openai.OpenAIError):
            raise
        errors.print(f"ftpipe: {plain(error)}", style="red")
        raise SystemExit(1) from None


# `ftpipe eval` lives in its own module; it uses the helpers above, so it is registered last.
from ftpipe.cli_eval import eval_command  # noqa: E402

app.command("eval")(eval_command)

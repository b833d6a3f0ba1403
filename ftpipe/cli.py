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

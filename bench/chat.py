"""Benchmark of the `chat` flow against the original one-message-at-a-time `ask` loop.

Usage: python bench/chat.py [--messages N] [--concurrency N] [--latency-ms MS] [--keep]

A local OpenAI-compatible server runs as its own process (`python -m ftpipe local-api`) with
every answer delayed by `--latency-ms`, standing in for a real endpoint's round trip. The same
messages are answered three times, each run with its own dialogue log:

* sequential - a plain loop calling `ftpipe.chat.ask` per message, as the original `ask` did;
* concurrent - the `chat` flow at `--concurrency`;
* 429 run    - the `chat` flow again, with the server answering 10% of requests 429.

The last line reads `chat: speedup=<sequential s / concurrent s> failed=<failed rows in the 429
run>`. Targets are printed with PASS/MISS; a miss never fails the process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

MODEL = "gpt-4o-mini"
TARGET_SPEEDUP = 10.0
TARGET_FAILED = 0
FAULTS_429 = {"rate_429": 0.1, "retry_after_s": 0.05}
WARM_UP_MESSAGES = 4
SERVER_START_S = 60.0
TOPICS = ("ferry", "ticket", "bicycle", "cabin", "refund", "timetable", "parking", "dog")


@dataclass(frozen=True)
class Server:
    """The server process, where it listens, and the key it demands."""

    process: subprocess.Popen[bytes]
    url: str
    key: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"


@dataclass(frozen=True)
class Run:
    """One timed pass over the messages."""

    name: str
    seconds: float
    cpu_seconds: float  # this process's CPU time: steadier than wall time on a busy machine
    failed: int
    retries: int


# --- the server ------------------------------------------------------------------------------


def _server_env(home: Path, key: str, latency_ms: int) -> dict[str, str]:
    """The caller's environment without endpoint or fault settings, plus the server's own: a
    stray OPENAI_API_KEY or .env must not change what is measured."""
    prefixes = ("FTPIPE_", "OPENAI_", "AZURE_OPENAI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {
        "FTPIPE_ENV_FILE": os.devnull,
        "FTPIPE_HOME": str(home),
        "FTPIPE_LOCAL_API_KEY": key,
        "FTPIPE_FAULT_LATENCY_MS": str(latency_ms),
    }


def _announced_url(home: Path, process: subprocess.Popen[bytes]) -> str:
    """The URL the server wrote to its discovery file, once it answers its health check; port 0
    lets the OS pick a free port, so there is no race with other programs choosing one."""
    marker = home / "local_api" / "server.json"
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the local server exited with status {process.returncode}")
        try:
            url = str(json.loads(marker.read_text())["url"])
            if httpx.get(f"{url}/_ftpipe/health", timeout=2.0).is_success:
                return url
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the local server did not start within {SERVER_START_S:g} s")


@contextmanager
def local_server(home: Path, latency_ms: int, log_path: Path) -> Iterator[Server]:
    """`python -m ftpipe local-api` in its own process, so its event loop does not compete with
    the client's threads for this interpreter's GIL; stopped (SIGTERM) on exit."""
    key = f"bench-{secrets.token_hex(8)}"
    command = [sys.executable, "-m", "ftpipe", "local-api", "--port", "0"]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=_server_env(home, key, latency_ms), stdout=log, stderr=log
        )
        try:
            yield Server(process, _announced_url(home, process), key)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def set_faults(server: Server, faults: dict[str, float]) -> None:
    """Change the server's fault injection at run time, as an operator would."""
    response = httpx.post(
        f"{server.url}/_ftpipe/faults",
        json=faults,
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=10.0,
    )
    response.raise_for_status()


def use_server(server: Server, client_home: Path) -> None:
    """Point this process's clients at the server (OPENAI_BASE_URL and its key); the dialogue
    logs go to a home of their own."""
    for name in [n for n in os.environ if n.startswith(("FTPIPE_", "OPENAI_", "AZURE_OPENAI_"))]:
        del os.environ[name]
    os.environ |= {
        "FTPIPE_ENV_FILE": os.devnull,
        "FTPIPE_HOME": str(client_home),
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": server.key,
    }


# --- the runs --------------------------------------------------------------------------------


def make_messages(count: int) -> list[str]:
    """Distinct questions, so no cache anywhere could answer one from another."""
    return [
        f"Question {index}: what should I know about the {TOPICS[index % len(TOPICS)]} "
        f"on sailing number {index}?"
        for index in range(count)
    ]


class RetryCounter(logging.Handler):
    """Counts the retries `ftpipe.chat` logs, to show the 429s were met and waited out."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying in" in record.getMessage():
            self.count += 1


@contextmanager
def counting_retries() -> Iterator[RetryCounter]:
    """Attach a RetryCounter to the `ftpipe` logger for the duration of one run."""
    logger, counter = logging.getLogger("ftpipe"), RetryCounter()
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the retry lines are counted, not printed
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)
        logger.propagate = propagate


def with_log(home: Path, name: str) -> None:
    """Each run writes its own dialogue log (FTPIPE_HOME/dialogues), so none pays for a
    longer file left by the one before."""
    os.environ["FTPIPE_HOME"] = str(home / name)


def sequential(messages: list[str]) -> int:
    """The original loop: one client, one `ask` after another, each exchange logged."""
    from ftpipe import chat, sentiment
    from ftpipe.client import make_client
    from ftpipe.dialogue_log import DialogueLog, default_log_path

    client, log, failed = make_client(), DialogueLog(default_log_path()), 0
    for text in messages:
        try:
            chat.ask(client, text, model=MODEL, sentiment=sentiment.analyse, log=log, attempts=5)
        except Exception:  # counted like the flow's failed rows, not raised
            failed += 1
    return failed


def concurrent(messages: list[str], concurrency: int) -> int:
    """The `chat` flow; its failed rows carry an `error`."""
    from ftpipe.flows.chat import chat

    rows = chat(messages=messages, model=MODEL, concurrency=concurrency)
    return sum(1 for row in rows if row.get("error"))


def timed(name: str, home: Path, work: Callable[[], int]) -> Run:
    """Wall and CPU time of `work` (which returns its failure count), retries counted."""
    with_log(home, name)
    with counting_retries() as counter:
        started, cpu = time.perf_counter(), time.process_time()
        failed = work()
        run = Run(
            name,
            time.perf_counter() - started,
            time.process_time() - cpu,
            failed,
            counter.count,
        )
    print(
        f"{name:<12} {run.seconds:8.2f} s  cpu {run.cpu_seconds:6.2f} s  failed {failed:3d}  "
        f"retries {run.retries:3d}",
        flush=True,
    )
    return run


def warm_up(home: Path, concurrency: int) -> None:
    """Imports, the first connection and Prefect's first flow run are one-off costs a
    long-running service pays once; neither timed run should carry them."""
    messages = make_messages(WARM_UP_MESSAGES)
    with_log(home, "warm-up")
    sequential(messages)
    concurrent(messages, concurrency)


# --- report ----------------------------------------------------------------------------------


def load() -> str:
    """Other programs on the machine stretch the wall times; the load average shows how much."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) + f" on {os.cpu_count()} cores"


def _target(name: str, value: float, ok: bool, op: str, goal: float) -> str:
    return f"target {name:<8} {op:>2} {goal:<5g} got {value:8.2f}  {'PASS' if ok else 'MISS'}"


def report(seq: Run, conc: Run, faulty: Run, count: int) -> None:
    """Throughput of each run, the targets, and the machine-readable last line."""
    speedup = seq.seconds / conc.seconds if conc.seconds > 0 else float("inf")
    for run in (seq, conc, faulty):
        print(f"{run.name:<12} {count / run.seconds:8.1f} messages/s")
    print(_target("speedup", speedup, speedup >= TARGET_SPEEDUP, ">=", TARGET_SPEEDUP))
    print(_target("failed", faulty.failed, faulty.failed <= TARGET_FAILED, "<=", TARGET_FAILED))
    print(f"chat: speedup={speedup:.2f} failed={faulty.failed}")


# --- main ------------------------------------------------------------------------------------


def quiet_prefect() -> None:
    """Prefect logs every task run at INFO; for hundreds of them that is noise (and time)."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def benchmark(args: argparse.Namespace, work: Path) -> None:
    """Start the server and a temporary Prefect server, then the three timed runs."""
    quiet_prefect()
    from prefect.testing.utilities import prefect_test_harness

    messages = make_messages(args.messages)
    with local_server(work / "server", args.latency_ms, work / "server.log") as server:
        use_server(server, work / "client")
        print(f"server {server.base_url}, latency {args.latency_ms} ms; {len(messages)} messages")
        print(f"load before: {load()}")
        with prefect_test_harness(server_startup_timeout=120):
            warm_up(work, args.concurrency)
            seq = timed("sequential", work, lambda: sequential(messages))
            conc = timed("concurrent", work, lambda: concurrent(messages, args.concurrency))
            set_faults(server, FAULTS_429)
            print(f"server faults now {FAULTS_429}")
            faulty = timed("429 run", work, lambda: concurrent(messages, args.concurrency))
            print(f"load after: {load()}")
    report(seq, conc, faulty, len(messages))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="Messages per run.")
    parser.add_argument("--concurrency", type=int, default=16, help="The flow's concurrency.")
    parser.add_argument("--latency-ms", type=int, default=200, help="Server delay per answer.")
    parser.add_argument("--keep", action="store_true", help="Keep the logs and dialogue files.")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.concurrency < 1 or args.latency_ms < 0:
        parser.error("--messages and --concurrency must be positive, --latency-ms not negative")
    return args


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ftpipe-bench-chat-"))
    try:
        benchmark(args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

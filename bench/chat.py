"""Benchmark of the `chat` flow against a plain thread pool and a one-at-a-time loop over the
same core function, `ftpipe.chat.ask`.

Usage: python bench/chat.py [--messages N] [--concurrency N] [--latency-ms MS] [--repeat N]
       [--retry-after-s S] [--keep]

A local OpenAI-compatible server runs as its own process (`python -m ftpipe local-api`) with
every answer delayed by `--latency-ms`, standing in for a real endpoint's round trip. The same
messages are answered by, each run with its own dialogue log:

* loop    - one `ask` after another (the reference for what concurrency buys);
* threads - `concurrent.futures.ThreadPoolExecutor(--concurrency)` over `ask`, the fastest plain
            way (the reference for Prefect's cost);
* flow    - the `chat` flow at `--concurrency`;
* 429 runs - threads and flow again, with the server answering 10% of requests 429 and
             `retry-after: --retry-after-s` (1 s: a real server's whole second).

Every `ask` gets the same client, sentiment labelling, dialogue log and 5 attempts. Threads and
flow alternate `--repeat` times and the fastest of each counts (least disturbed by other load).
Each run also shows when its last reply was logged (the dialogue log's timestamps), which
separates the answering from the flow's wind-down.
The last line reads `chat: vs_threads=<flow s / threads s> vs_loop=<loop s / flow s>
failed=<failed rows of the flow's 429 run>`. Targets are printed with PASS/MISS; a miss never
fails the process.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import psutil

MODEL = "gpt-4o-mini"
ATTEMPTS = 5  # the flow's default
TARGET_VS_THREADS = 1.2
TARGET_FAILED = 0
FAULT_SEED = 429  # the same dice each run: the same share of 429s
WARM_UP_MESSAGES = 8
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
    child_cpu_seconds: float  # the servers' (local API, Prefect's test server)
    failed: int
    retries: int
    last_reply_s: float  # when the last exchange was logged: the answering, without wind-down


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
        # the stand-in answers `gpt-4o-mini` in microseconds: the latency is the endpoint's
        "FTPIPE_LOCAL_ENGINE": "stand-in",
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


def make_messages(count: int, prefix: str = "Question") -> list[str]:
    """Distinct questions, so no cache anywhere could answer one from another."""
    return [
        f"{prefix} {index}: what should I know about the {TOPICS[index % len(TOPICS)]} "
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
    os.environ["FTPIPE_HOME"] = str(home / name.replace(" ", "-"))


def asker() -> Callable[[str], bool]:
    """`ask` as the references call it: one client, sentiment, one dialogue log; True when the
    message got its reply (a failure is counted like the flow's failed rows, not raised)."""
    from ftpipe import chat, sentiment
    from ftpipe.client import make_client
    from ftpipe.dialogue_log import DialogueLog, default_log_path

    client, log = make_client(), DialogueLog(default_log_path())

    def ask(text: str) -> bool:
        try:
            chat.ask(
                client, text, model=MODEL, sentiment=sentiment.analyse, log=log, attempts=ATTEMPTS
            )
        except Exception:
            return False
        return True

    return ask


def loop(messages: list[str]) -> int:
    """One `ask` after another."""
    ask = asker()
    return sum(1 for text in messages if not ask(text))


def threads(messages: list[str], concurrency: int) -> int:
    """A plain thread pool over `ask`: the floor for any concurrent runner in this process."""
    ask = asker()
    with ThreadPoolExecutor(concurrency) as pool:
        return sum(1 for ok in pool.map(ask, messages) if not ok)


def flow(messages: list[str], concurrency: int) -> int:
    """The `chat` flow; its failed rows carry an `error`."""
    from ftpipe.flows.chat import chat

    rows = chat(messages=messages, model=MODEL, concurrency=concurrency, attempts=ATTEMPTS)
    return sum(1 for row in rows if row.get("error"))


def children_cpu() -> float:
    """CPU seconds used so far by this process's children (the two servers)."""
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def last_logged(home: Path) -> float:
    """The time (epoch seconds) of the last exchange in this run's dialogue log."""
    path = home / "dialogues" / "dialogues.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    stamps = [json.loads(line)["timestamp"] for line in lines if line.strip()]
    return max(datetime.fromisoformat(stamp).timestamp() for stamp in stamps) if stamps else 0.0


def timed(name: str, home: Path, work: Callable[[], int]) -> Run:
    """Wall and CPU time of `work` (which returns its failure count), retries counted."""
    with_log(home, name)
    with counting_retries() as counter:
        epoch, started = time.time(), time.perf_counter()
        cpu, child_cpu = time.process_time(), children_cpu()
        failed = work()
        run = Run(
            name,
            time.perf_counter() - started,
            time.process_time() - cpu,
            children_cpu() - child_cpu,
            failed,
            counter.count,
            last_logged(Path(os.environ["FTPIPE_HOME"])) - epoch,
        )
    print(
        f"{name:<11} {run.seconds:6.2f} s  last reply at {run.last_reply_s:6.2f} s  "
        f"cpu {run.cpu_seconds:5.2f} s  servers' cpu {run.child_cpu_seconds:5.2f} s  "
        f"failed {failed:3d}  retries {run.retries:3d}",
        flush=True,
    )
    return run


def warm_up(home: Path, concurrency: int) -> None:
    """Imports, the first connection and Prefect's first flow run are one-off costs a
    long-running service pays once; no timed run should carry them."""
    messages = make_messages(WARM_UP_MESSAGES, prefix="Warm-up")
    with_log(home, "warm-up")
    loop(messages[:2])
    threads(messages, concurrency)
    flow(messages, concurrency)


# --- report ----------------------------------------------------------------------------------


def load() -> str:
    """Other programs on the machine stretch the wall times; the load average shows how much."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) + f" on {os.cpu_count()} cores"


def _target(name: str, value: float, ok: bool, op: str, goal: float) -> str:
    return f"target {name:<10} {op:>2} {goal:<5g} got {value:8.2f}  {'PASS' if ok else 'MISS'}"


def fastest(runs: list[Run]) -> Run:
    return min(runs, key=lambda run: run.seconds)


def report(seq: Run, pool: list[Run], flows: list[Run], faulty: tuple[Run, Run], n: int) -> None:
    """Throughput and CPU per message of each, the ratios, the targets, and the last line."""
    best_pool, best_flow = fastest(pool), fastest(flows)
    vs_threads = best_flow.seconds / best_pool.seconds
    vs_loop = seq.seconds / best_flow.seconds
    paired = [f.seconds / p.seconds for p, f in zip(pool, flows, strict=True)]
    for run in (seq, best_pool, best_flow, *faulty):
        print(
            f"{run.name:<11} {n / run.seconds:7.1f} messages/s  "
            f"cpu {1000 * run.cpu_seconds / n:5.1f} ms/message "
            f"(+ servers' {1000 * run.child_cpu_seconds / n:5.1f})"
        )
    print(f"flow/threads per pair: {' '.join(f'{r:.2f}' for r in paired)}")
    print(f"flow/threads median of pairs: {statistics.median(paired):.2f}")
    answering = best_flow.last_reply_s / best_pool.last_reply_s
    print(f"flow/threads to the last reply (fastest runs): {answering:.2f}")
    wind_down = best_flow.seconds - best_flow.last_reply_s
    print(
        f"flow's wind-down after its last reply: {wind_down:.2f} s (summary artifact, final "
        "state, and Prefect's heartbeat thread, joined at exit, sleeping in 1 s steps)"
    )
    print(f"429 runs flow/threads: {faulty[1].seconds / faulty[0].seconds:.2f}")
    failed = faulty[1].failed
    print(
        _target("vs_threads", vs_threads, vs_threads <= TARGET_VS_THREADS, "<=", TARGET_VS_THREADS)
    )
    print(_target("failed", failed, failed <= TARGET_FAILED, "<=", TARGET_FAILED))
    print(f"chat: vs_threads={vs_threads:.2f} vs_loop={vs_loop:.2f} failed={failed}")


# --- main ------------------------------------------------------------------------------------


def quiet_prefect() -> None:
    """Run logs still go to the API, as in production (the flow's per-message lines included);
    only the console copy of them, noise here, is left out."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def faults_429(retry_after_s: float) -> dict[str, float]:
    return {"rate_429": 0.1, "retry_after_s": retry_after_s, "seed": FAULT_SEED}


def benchmark(args: argparse.Namespace, work: Path) -> None:
    """Start the server and a temporary Prefect server, then the timed runs."""
    quiet_prefect()
    from prefect.testing.utilities import prefect_test_harness

    messages, n = make_messages(args.messages), args.messages
    with local_server(work / "server", args.latency_ms, work / "server.log") as server:
        use_server(server, work / "client")
        print(f"server {server.base_url}, latency {args.latency_ms} ms; {n} messages")
        print(f"load before: {load()}")
        with prefect_test_harness(server_startup_timeout=120):
            warm_up(work, args.concurrency)
            seq = timed("loop", work, lambda: loop(messages))
            pool, flows = [], []
            for _ in range(args.repeat):
                pool.append(timed("threads", work, lambda: threads(messages, args.concurrency)))
                flows.append(timed("flow", work, lambda: flow(messages, args.concurrency)))
            set_faults(server, faults_429(args.retry_after_s))
            print(f"server faults now {faults_429(args.retry_after_s)}")
            faulty = (
                timed("threads 429", work, lambda: threads(messages, args.concurrency)),
                timed("flow 429", work, lambda: flow(messages, args.concurrency)),
            )
            print(f"load after: {load()}")
    report(seq, pool, flows, faulty, n)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="Messages per run.")
    parser.add_argument("--concurrency", type=int, default=16, help="Threads and flow's.")
    parser.add_argument("--latency-ms", type=int, default=200, help="Server delay per answer.")
    parser.add_argument("--repeat", type=int, default=3, help="Threads/flow pairs timed.")
    parser.add_argument(
        "--retry-after-s", type=float, default=1.0, help="The retry-after of the 429 runs."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the logs and dialogue files.")
    args = parser.parse_args(argv)
    if min(args.messages, args.concurrency, args.repeat) < 1 or args.latency_ms < 0:
        parser.error("--messages, --concurrency and --repeat must be positive, --latency-ms not")
    if args.retry_after_s < 0:
        parser.error("--retry-after-s must not be negative")
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

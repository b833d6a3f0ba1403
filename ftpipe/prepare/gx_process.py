"""Great Expectations in a process of its own, for a large run's one validation and Data Docs.

GX takes 2-3 s to import, ~136 MB, and about a second of interpreter teardown at exit. Started
when a large run starts, a child process imports it on another core while the run reads, then
validates the run's sample and writes the Data Docs when asked, so none of that sits on the
run's path nor in the memory of the process that holds the data. The CLI's `prepare`, a process
that ends with its run, starts the child first of all (start_early), so even a small run's GX
import overlaps its own imports. Otherwise a small run validates in its own process: a test
suite or a long-lived process (a Prefect worker) imports GX once rather than once per run.

The child is a plain `python -c`, not multiprocessing: nothing of the caller's `__main__` is
imported again. It is told the suites' folder as this process resolves it (settings can be
overridden in-process), gets the sample as pickled Arrow tables on stdin and answers on stdout.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # a bare import: the CLI starts the child before importing pandas or pyarrow
    import pyarrow as pa

    from ftpipe.prepare.expectations import BatchOutcome

EXPECTATIONS_DIR_VARIABLE = "FTPIPE_EXPECTATIONS_DIR"
_SERVE = "from ftpipe.prepare.gx_process import serve; serve()"


_early: GxProcess | None = None


class GxFailed(RuntimeError):
    """The GX process ended without an answer (killed, out of memory)."""


class GxProcess:
    """A child process importing GX now and validating one run's sample later."""

    def __init__(self) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    @classmethod
    def start(cls) -> GxProcess | None:
        """The process, or None when one cannot be started (then validate in this one)."""
        try:
            return cls()
        except OSError:
            return None

    def validate(
        self, tables: dict[str, pa.Table], folder: Path, suites: Path
    ) -> dict[str, BatchOutcome]:
        """validate_samples in the child, on these tables, with the suites in `suites`."""
        request = pickle.dumps((tables, str(folder), str(suites)), pickle.HIGHEST_PROTOCOL)
        answer, _ = self._child.communicate(request)
        if self._child.returncode != 0 or not answer:
            raise GxFailed(f"the Great Expectations process ended with {self._child.returncode}")
        status, value = pickle.loads(answer)
        if status == "error":
            raise value
        return value

    def close(self) -> None:
        """Stop the child if it is still waiting (a run that failed before validating, or one
        with nothing to validate) and close its pipes."""
        if self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        for pipe in (self._child.stdin, self._child.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


def start_early() -> None:
    """In a one-shot process (`ftpipe prepare`): start the child now, so GX imports on the other
    core while this process imports its own modules and reads; the run's Merger takes it."""
    global _early
    if _early is None and "great_expectations" not in sys.modules:  # else: GX is here already
        _early = GxProcess.start()


def take_early() -> GxProcess | None:
    """The child started by start_early, once; None when there is none."""
    global _early
    taken, _early = _early, None
    return taken


def discard_early() -> None:
    """Stop an early child that no run took (the run failed before its merge)."""
    taken = take_early()
    if taken is not None:
        taken.close()


def serve() -> None:
    """The child: import GX, wait for the request, answer it, and exit without a teardown.
    Ctrl-C is the run's to handle: it stops this process when it needs to."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answer_to = _private_stdout()
    try:
        from ftpipe.prepare.expectations import warm_up

        warm_up()
        tables, folder, suites = pickle.load(sys.stdin.buffer)
    except EOFError:  # the run ended without asking
        os._exit(0)
    answer: tuple[str, Any]
    try:
        answer = ("ok", _validate(tables, Path(folder), suites))
    except BaseException as error:  # every failure goes back to the run
        answer = ("error", error)
    answer_to.write(pickle.dumps(answer, pickle.HIGHEST_PROTOCOL))
    answer_to.flush()
    os._exit(0)


def _validate(tables: dict[str, pa.Table], folder: Path, suites: str) -> dict[str, BatchOutcome]:
    from ftpipe.prepare.expectations import validate_samples

    os.environ[EXPECTATIONS_DIR_VARIABLE] = suites
    return validate_samples({kind: t.to_pandas() for kind, t in tables.items()}, folder)


def _private_stdout() -> IO[bytes]:
    """The answer's channel; whatever GX prints goes to stderr instead of into the answer."""
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel

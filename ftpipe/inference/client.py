"""Drive the inference worker from the HTTP server without importing torch.

`InferenceWorker` starts `python -m ftpipe.inference.worker` on first use, sends one request at
a time (a lock around the pipe: callers from many threads are served in order) and restarts the
worker when it has died; a worker killed mid-request (e.g. by the OOM killer) fails only that
request, with an `InferenceError`. Streams hold the worker until they end: close an abandoned
one (`.close()`), which cancels its request within a token.

Example (`base` is a model folder with a chat template; an adapter is a PEFT `save_pretrained`
folder, e.g. a job's `<job_dir>/model`; a full fine-tune's folder goes in `adapter_path` too)::

    from ftpipe.inference.client import InferenceError, InferenceWorker

    with InferenceWorker(max_adapters=4) as worker:
        messages = [{"role": "user", "content": "Hello"}]
        done = worker.chat(messages, model_path=base, max_tokens=16, temperature=0, seed=1)
        print(done.choices[0].text, done.choices[0].finish_reason, done.usage)
        for item in worker.stream(messages, model_path=base, adapter_path=adapter, n=2):
            print(item.index, item.text) if item.type == "delta" else print(item.usage)
        worker.unload(adapter_path=adapter)  # DELETE /v1/models/{ft model}
        try:
            worker.chat([{"role": "user", "content": "x" * 100_000}], model_path=base)
        except InferenceError as error:  # error.code: see protocol.ErrorCode
            print(error.code, error.prompt_tokens, error.context_length)

The same from a shell: `python -m ftpipe.inference.client BASE [ADAPTER] "question"`.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from ftpipe.inference.protocol import Delta, Done, Error, Request, decode_response, encode

__all__ = ["Delta", "Done", "InferenceError", "InferenceWorker"]

log = logging.getLogger("ftpipe.inference.worker")

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
_STDERR_LINES = 40


class InferenceError(Exception):
    """A request the worker could not serve; `code` is one of `protocol.ErrorCode`."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        prompt_tokens: int | None = None,
        context_length: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length

    @classmethod
    def from_response(cls, error: Error) -> InferenceError:
        return cls(
            error.code,
            error.message,
            prompt_tokens=error.prompt_tokens,
            context_length=error.context_length,
        )


class _Process:
    """One running worker: its pipes and the tail of its stderr (forwarded to logging)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(  # our own module, no shell
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        threading.Thread(target=self._drain, args=(self.popen.stderr,), daemon=True).start()

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            log.debug("[worker %d] %s", self.popen.pid, line)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send(self, request: Request) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(encode(request).encode("utf-8"))
        self.popen.stdin.flush()

    def receive(self) -> Delta | Done | Error | None:
        """The next response line; None when the worker has gone."""
        assert self.popen.stdout is not None
        while line := self.popen.stdout.readline():
            try:
                return decode_response(line)
            except ValidationError:
                log.warning("ignored a line from the worker: %r", line[:200])
        return None

    def death(self) -> InferenceError:
        """The error that a request in flight gets when the worker died under it."""
        try:
            code = self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait()
        tail = "\n".join(list(self.stderr_tail)[-5:])
        if code == -signal.SIGKILL:
            return InferenceError(
                "out_of_memory",
                "The inference worker was killed (SIGKILL, as the kernel's out-of-memory killer "
                "does) while serving this request; the next request starts a new worker.",
            )
        return InferenceError(
            "inference_failed",
            f"The inference worker exited with status {code} while serving this request; the "
            f"next request starts a new worker. Its last words: {tail or '(none)'}",
        )

    def stop(self, timeout: float = 5.0) -> None:
        _stop(self.popen, timeout)


def _stop(popen: subprocess.Popen, timeout: float = 5.0) -> None:
    """Close stdin (the worker exits on EOF), then kill it if it does not."""
    if popen.poll() is None:
        try:
            if popen.stdin is not None:
                popen.stdin.close()
            popen.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            popen.kill()
            popen.wait()
    for pipe in (popen.stdin, popen.stdout, popen.stderr):
        try:
            if pipe is not None:
                pipe.close()
        except OSError:
            pass


class InferenceWorker:
    """A lazily started inference worker process, shared by the server's threads.

    `max_engines` model folders and `max_adapters` LoRA adapters per model stay in memory (LRU);
    `threads` is the worker's torch CPU threads; `device` is "cpu", "cuda" or None (auto);
    `env` adds variables to the worker's environment (the Hugging Face offline variables are
    always set: the worker never downloads).
    """

    def __init__(
        self,
        *,
        max_engines: int = 2,
        max_adapters: int = 4,
        threads: int = 1,
        device: str | None = None,
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self._command = [
            python or sys.executable,
            "-m",
            "ftpipe.inference.worker",
            f"--max-engines={max_engines}",
            f"--max-adapters={max_adapters}",
            f"--threads={threads}",
        ] + ([f"--device={device}"] if device else [])
        self._env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
            **OFFLINE,
        }
        path = self._env.get("PYTHONPATH")
        self._env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, path) if p)
        self._lock = threading.Lock()
        self._process: _Process | None = None
        self._ids = itertools.count(1)
        self._closed = False

    # --- public API ----------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running worker's process id (None before the first request or after a death)."""
        process = self._process
        return process.popen.pid if process is not None and process.alive() else None

    def chat(
        self, messages: Sequence[dict[str, Any]], *, model_path: str | Path, **options: Any
    ) -> Done:
        """A whole chat completion. Options: adapter_path, temperature, top_p, max_tokens, n,
        seed, stop (see `protocol.Request`). Raises InferenceError."""
        request = self._request("chat", messages=list(messages), model_path=model_path, **options)
        with self._lock:
            return self._finish(self._deliver(request), request.id)

    def stream(
        self, messages: Sequence[dict[str, Any]], *, model_path: str | Path, **options: Any
    ) -> Iterator[Delta | Done]:
        """Deltas as the worker produces them, then the `Done` (full texts, usage).

        The worker stays reserved until the iterator ends; closing it early cancels the request.
        Raises InferenceError (before or during the deltas)."""
        request = self._request(
            "chat", messages=list(messages), model_path=model_path, stream=True, **options
        )
        with self._lock:
            process = self._deliver(request)
            finished = False
            try:
                while True:
                    response = process.receive()
                    if response is None:
                        raise self._lost(process)
                    if response.id != request.id:
                        continue
                    if isinstance(response, Error):
                        finished = True
                        raise InferenceError.from_response(response)
                    if isinstance(response, Done):
                        finished = True
                        yield response
                        return
                    yield response
            finally:
                if not finished and self._process is process:
                    self._cancel(process, request.id)

    def unload(
        self, *, model_path: str | Path | None = None, adapter_path: str | Path | None = None
    ) -> bool:
        """Free an adapter, a full fine-tune or a base model in the worker; False when it was not
        loaded (or no worker runs). Does not start a worker."""
        with self._lock:
            process = self._process
            if process is None or not process.alive():
                return False
            request = self._request("unload", model_path=model_path, adapter_path=adapter_path)
            try:
                process.send(request)
            except OSError:
                raise self._lost(process) from None
            return bool(self._finish(process, request.id).info.get("unloaded"))

    def ping(self) -> dict[str, Any]:
        """Start the worker if needed; its pid and what it holds ({model folder: [adapters]})."""
        request = self._request("ping")
        with self._lock:
            return self._finish(self._deliver(request), request.id).info

    def close(self) -> None:
        """Stop the worker (it exits when its stdin closes). The object cannot be used after."""
        with self._lock:
            self._closed = True
            if self._process is not None:
                self._process.stop()
                self._process = None

    def __enter__(self) -> InferenceWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _request(self, op: str, **fields: Any) -> Request:
        for key in ("model_path", "adapter_path"):
            if fields.get(key) is not None:
                fields[key] = str(fields[key])
        return Request(id=f"req-{next(self._ids)}", op=op, **fields)

    def _ready(self) -> _Process:
        """The running worker, started (or restarted after a death) now if needed."""
        if self._closed:
            raise RuntimeError("this InferenceWorker is closed")
        process = self._process
        if process is not None and process.alive():
            return process
        if process is not None:
            log.warning("inference worker %d had exited; starting a new one", process.popen.pid)
            process.stop()
        process = _Process(self._command, self._env)
        weakref.finalize(self, _stop, process.popen)
        self._process = process
        return process

    def _deliver(self, request: Request) -> _Process:
        """Send a request to a live worker. A worker found dead on sending never saw it, so a
        new worker gets it instead."""
        process = self._ready()
        try:
            process.send(request)
        except OSError:
            self._lost(process)
            process = self._ready()
            try:
                process.send(request)
            except OSError:
                raise self._lost(process) from None
        return process

    def _lost(self, process: _Process) -> InferenceError:
        """Forget a dead worker and say why the request in flight failed."""
        error = process.death()
        process.stop()
        if self._process is process:
            self._process = None
        log.warning("inference worker %d died: %s", process.popen.pid, error.message)
        return error

    def _finish(self, process: _Process, request_id: str) -> Done:
        while True:
            response = process.receive()
            if response is None:
                raise self._lost(process)
            if response.id != request_id:
                continue
            if isinstance(response, Error):
                raise InferenceError.from_response(response)
            if isinstance(response, Done):
                return response

    def _cancel(self, process: _Process, request_id: str) -> None:
        """Stop an abandoned stream and read its remaining lines, so the next request is clean."""
        try:
            process.send(Request(id=f"cancel-{request_id}", op="cancel", target=request_id))
            self._finish(process, request_id)
        except (OSError, InferenceError):
            pass


def main(argv: list[str] | None = None) -> None:
    """Stream one answer: `python -m ftpipe.inference.client BASE [ADAPTER] QUESTION`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        raise SystemExit("usage: python -m ftpipe.inference.client BASE [ADAPTER] QUESTION")
    base, adapter, question = args[0], args[1] if len(args) == 3 else None, args[-1]
    with InferenceWorker() as worker:
        messages = [{"role": "user", "content": question}]
        stream = worker.stream(messages, model_path=base, adapter_path=adapter, max_tokens=64)
        try:
            for item in stream:
                if isinstance(item, Delta):
                    print(item.text, end="", flush=True)
                else:
                    print(f"\n[{item.choices[0].finish_reason}; {item.usage}]")
        except InferenceError as error:
            raise SystemExit(f"{error.code}: {error.message}") from None


if __name__ == "__main__":
    main()

"""The inference worker: `python -m ftpipe.inference.worker` serves JSON-line requests.

Requests arrive on stdin (see `protocol`), one is served at a time, responses go to stdout (one
writer, a flush per line); logs and anything a library prints go to stderr. A reader thread takes
`cancel` requests at once, so an abandoned stream stops within one token. The worker exits when
stdin closes. Torch is imported on the first request that needs a model.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import traceback
from typing import IO, Any

from pydantic import ValidationError

from ftpipe.inference import protocol

log = logging.getLogger("ftpipe.inference.worker")


class Worker:
    """Serves requests in order with one `Engines` registry; writes responses to `out`."""

    def __init__(self, out: IO[str], options: argparse.Namespace) -> None:
        self.out = out
        self.options = options
        self.engines: Any = None
        self.cancelled: set[str] = set()
        self.requests: queue.Queue[protocol.Request | protocol.Error | None] = queue.Queue()

    def send(self, message: protocol.Delta | protocol.Done | protocol.Error) -> None:
        self.out.write(protocol.encode(message))
        self.out.flush()

    def read(self, source: IO[str]) -> None:
        """The reader thread: queue requests, act on cancels now, signal EOF with None."""
        for line in source:
            if not line.strip():
                continue
            try:
                request = protocol.decode_request(line)
            except ValidationError as error:
                bad = protocol.Error(id="", code="inference_failed", message=str(error))
                self.requests.put(bad)
                continue
            if request.op == "cancel":
                if request.target:
                    self.cancelled.add(request.target)
                continue
            self.requests.put(request)
        self.requests.put(None)

    def run(self) -> None:
        while (request := self.requests.get()) is not None:
            if isinstance(request, protocol.Error):
                self.send(request)
                continue
            try:
                self.serve(request)
            except Exception as error:  # every failure becomes an answer
                self.send(self._error(request.id, error))
            finally:
                self.cancelled.discard(request.id)

    def _engines(self) -> Any:
        if self.engines is None:
            import torch

            from ftpipe.inference.engine import Engines

            torch.set_num_threads(self.options.threads)
            self.engines = Engines(
                max_engines=self.options.max_engines,
                max_adapters=self.options.max_adapters,
                device=self.options.device,
            )
        return self.engines

    def serve(self, request: protocol.Request) -> None:
        if request.op == "ping":
            loaded = self.engines.describe() if self.engines is not None else {}
            self.send(protocol.Done(id=request.id, info={"pid": os.getpid(), "loaded": loaded}))
            return
        if request.op == "unload":
            unloaded = self._engines().unload(request.model_path, request.adapter_path)
            self.send(protocol.Done(id=request.id, info={"unloaded": unloaded}))
            return
        engine, adapter, served = self._engines().resolve(request.model_path, request.adapter_path)
        items = engine.stream(
            request.messages,
            adapter,
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            n=request.n,
            seed=request.seed,
            stop=request.stop,
            cancelled=lambda: request.id in self.cancelled,
        )
        for item in items:
            if hasattr(item, "choices"):
                self.send(_done(request.id, str(served), item))
            elif request.stream:
                self.send(protocol.Delta(id=request.id, index=item.index, text=item.text))

    def _error(self, request_id: str, error: Exception) -> protocol.Error:
        from ftpipe.inference import engine as engine_module

        code = getattr(error, "code", None)
        if isinstance(error, engine_module.ContextLengthExceeded):
            return protocol.Error(
                id=request_id,
                code="context_length_exceeded",
                message=str(error),
                prompt_tokens=error.prompt_tokens,
                context_length=error.context_length,
            )
        if isinstance(error, engine_module.InferenceProblem):
            return protocol.Error(id=request_id, code=code, message=str(error))
        if _out_of_memory(error):
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_available():
                torch.cuda.empty_cache()
            return protocol.Error(id=request_id, code="out_of_memory", message=str(error))
        if isinstance(error, OSError) and not isinstance(error, MemoryError):
            log.warning("request %s: %s", request_id, error)
            return protocol.Error(id=request_id, code="model_not_found", message=str(error))
        log.error("request %s failed:\n%s", request_id, traceback.format_exc())
        message = f"{type(error).__name__}: {error}"
        return protocol.Error(id=request_id, code="inference_failed", message=message)


def _done(request_id: str, served: str, completion: Any) -> protocol.Done:
    prompt, generated = completion.prompt_tokens, completion.completion_tokens
    return protocol.Done(
        id=request_id,
        model=served,
        choices=[
            protocol.Choice(
                index=c.index,
                text=c.text,
                finish_reason=c.finish_reason,
                completion_tokens=c.completion_tokens,
            )
            for c in completion.choices
        ],
        usage=protocol.Usage(
            prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated
        ),
    )


def _out_of_memory(error: Exception) -> bool:
    if isinstance(error, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    return (oom is not None and isinstance(error, oom)) or "out of memory" in str(error).lower()


def _protocol_stdout() -> IO[str]:
    """Keep the real stdout for the protocol; send fd 1 (stray prints of libraries) to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8", buffering=1)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ftpipe.inference.worker")
    parser.add_argument("--max-engines", type=int, default=2, help="model folders in memory")
    parser.add_argument("--max-adapters", type=int, default=4, help="LoRA adapters per model")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    worker = Worker(_protocol_stdout(), options)
    with open(sys.stdin.fileno(), encoding="utf-8", closefd=False) as stdin:
        threading.Thread(target=worker.read, args=(stdin,), daemon=True).start()
        log.info("inference worker %d ready", os.getpid())
        worker.run()


if __name__ == "__main__":
    main()

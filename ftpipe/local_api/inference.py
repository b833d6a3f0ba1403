"""The app's one inference worker: started on the first real completion, closed on shutdown.

The worker is a subprocess (`ftpipe.inference`), so this module, like the whole HTTP layer,
never imports torch. Its failures become OpenAI-shaped errors here.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from fastapi import FastAPI

from ftpipe.inference.client import InferenceError, InferenceWorker
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.local_models import model_not_found
from ftpipe.settings import LocalApiSettings

log = logging.getLogger("ftpipe.local_api")

_lock = threading.Lock()


def worker_for(app: FastAPI) -> InferenceWorker:
    """The app's inference worker, created now if this is the first real completion; it joins
    the app's shutdown hooks (`app.shutdown_app` runs them), so it stops with the server."""
    with _lock:
        worker = getattr(app.state, "inference", None)
        if worker is None:
            local: LocalApiSettings = app.state.local
            worker = InferenceWorker(
                max_engines=local.max_engines,
                max_adapters=local.max_adapters,
                threads=local.inference_threads,
                device=None if local.training_device == "auto" else local.training_device,
            )
            app.state.inference = worker
            hooks = getattr(app.state, "shutdown_hooks", None)
            if hooks is not None:
                hooks.append(lambda: close_worker(app))
        return worker


def close_worker(app: FastAPI) -> None:
    """Stop the app's inference worker, if one was started (the app's shutdown calls this)."""
    with _lock:
        worker = getattr(app.state, "inference", None)
        app.state.inference = None
    if worker is not None:
        worker.close()


def unload(app: FastAPI, model_path: Path | None, adapter_path: Path | None) -> bool:
    """Free a deleted model's weights in the worker; never starts one, never fails a delete."""
    worker = getattr(app.state, "inference", None)
    if worker is None:
        return False
    try:
        return worker.unload(model_path=model_path, adapter_path=adapter_path)
    except (InferenceError, RuntimeError) as error:
        log.warning("could not unload %s from the inference worker: %s", adapter_path, error)
        return False


def api_error(error: InferenceError, model: str) -> ApiError:
    """An InferenceError in OpenAI's envelope: 400 for the request's fault, 404 for a missing
    model, 500 for the server's own trouble."""
    if error.code == "context_length_exceeded":
        return ApiError(400, error.message, param="messages", code="context_length_exceeded")
    if error.code == "model_not_found":
        return model_not_found(model, f"Its files could not be loaded: {error.message}")
    if error.code == "invalid_request":
        return ApiError(400, error.message, param="messages", code="invalid_value")
    if error.code == "out_of_memory":
        return ApiError(
            500,
            f"The model '{model}' ran out of memory on this server: {error.message}",
            code="out_of_memory",
        )
    return ApiError(
        500,
        f"The local server could not run the model '{model}': {error.message}",
        code="server_error",
    )

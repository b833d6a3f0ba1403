"""Which local models the real engine serves, and the folders a model id stands for.

Base models are the embedded `smollm2-135m-instruct` (converted once from its GGUF package) and
the ids configured in `LocalApiSettings.base_models`; fine-tuned models and checkpoints are store
rows whose `internal` names the base and adapter folders. Nothing here imports torch: the
conversion runs in a subprocess, so the HTTP process stays light.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.local_api.engines import choose_engine, real_base_models
from ftpipe.local_api.errors import ApiError
from ftpipe.local_api.store import Row, Store
from ftpipe.settings import LocalApiSettings
from ftpipe.training.base_models import (
    GGUF_MODELS,
    BaseModelError,
    is_model_folder,
    resolve_base_model,
)

log = logging.getLogger("ftpipe.local_api")

OWNER = "ftpipe"
STAND_IN_OWNER = "ftpipe-stand-in"
EMBEDDED_CREATED = 1730419200  # SmolLM2-135M-Instruct's release (2024-11-01)
_OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
_CONVERT = (
    "import sys; from pathlib import Path; "
    "from ftpipe.training.base_models import convert_gguf_model; "
    "convert_gguf_model(sys.argv[1], Path(sys.argv[2]), "
    "progress=lambda m: print(m, file=sys.stderr, flush=True))"
)
_convert_lock = threading.Lock()


@dataclass(frozen=True)
class LocalModel:
    """What runs for a model id: a base folder, plus an adapter (or full fine-tune) folder."""

    id: str
    model_path: Path
    adapter_path: Path | None = None


def real_engine_enabled(settings: LocalApiSettings) -> bool:
    """Whether the real engine answers (the engine choice of `engines.choose_engine`)."""
    return choose_engine(settings) == "real"


def models_dir(store: Store) -> Path:
    """Where converted and pulled base models live: `<store root>/models`."""
    return store.models_dir()


def is_real_row(row: Row) -> bool:
    return row.internal.get("engine") == "real"


def model_not_found(model: str, detail: str | None = None) -> ApiError:
    """OpenAI's 404 for a model id, with the local reason appended when there is one."""
    message = f"The model '{model}' does not exist or you do not have access to it."
    return ApiError(
        404,
        f"{message} {detail}" if detail else message,
        param="model",
        code="model_not_found",
    )


def other_engine(model: str, real: bool) -> ApiError:
    """A fine-tuned model made by the other engine: named, never silently answered."""
    made, runs = ("stand-in", "real") if real else ("real", "stand-in")
    return model_not_found(
        model,
        f"It was made by the {made} engine and this server runs the {runs} engine "
        f"(FTPIPE_LOCAL_ENGINE={made} serves it).",
    )


def base_ids(settings: LocalApiSettings, store: Store) -> list[str]:
    """The base model ids the real engine announces: the embedded one when its package (or its
    converted folder) is here, then the configured ones."""
    return list(real_base_models(settings, models_dir(store)))


def base_body(model_id: str, settings: LocalApiSettings, store: Store) -> dict[str, Any]:
    """The `/v1/models` object of a base model; `created` is its folder's date when known."""
    created = EMBEDDED_CREATED
    target = settings.base_models.get(model_id)
    if target is not None and is_model_folder(Path(target).expanduser()):
        created = int((Path(target).expanduser() / "config.json").stat().st_mtime)
    return {"id": model_id, "object": "model", "created": created, "owned_by": OWNER}


def base_folder(model_id: str, settings: LocalApiSettings, store: Store) -> Path:
    """The folder of a base model, converting the embedded one first if needed (blocking)."""
    folder = models_dir(store)
    target = settings.base_models.get(model_id, model_id)
    try:
        if target in GGUF_MODELS and not is_model_folder(folder / target):
            _convert_in_subprocess(target, folder)
        return resolve_base_model(model_id, folder, mapping=settings.base_models)
    except BaseModelError as error:
        raise model_not_found(model_id, f"{error}.") from None


def _convert_in_subprocess(model_id: str, folder: Path) -> None:
    """Convert a packaged GGUF model in a child process (it needs torch; this process not)."""
    with _convert_lock:
        if is_model_folder(folder / model_id):
            return
        log.info("converting base model %s into %s (about a minute, once)", model_id, folder)
        done = subprocess.run(  # our own module, no shell
            [sys.executable, "-c", _CONVERT, model_id, str(folder)],
            env={**os.environ, **_OFFLINE},
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else f"exit status {done.returncode}"
            if "BaseModelError" in reason:
                raise BaseModelError(reason.split(":", 1)[-1].strip())
            raise ApiError(
                500,
                f"Converting the base model '{model_id}' failed: {reason}",
                code="server_error",
            )


def resolve(model_id: str, settings: LocalApiSettings, store: Store) -> LocalModel:
    """The folders that answer for `model_id` on the real engine; 404 for anything else."""
    with store.reader() as tx:
        row = tx.get("model", model_id)
    if row is not None:
        if not is_real_row(row):
            raise other_engine(model_id, real=True)
        base = Path(row.internal.get("base_path") or "")
        if not is_model_folder(base):
            base = base_folder(str(row.internal.get("base_model")), settings, store)
        return LocalModel(model_id, base, Path(row.internal["adapter_path"]))
    if model_id in base_ids(settings, store):
        return LocalModel(model_id, base_folder(model_id, settings, store))
    raise model_not_found(model_id)

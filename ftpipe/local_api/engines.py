"""Which engine trains (and answers) behind the local server: the real one or the stand-in.

Decided from `LocalApiSettings.engine`; "auto" picks the real engine wherever the training stack
is installed. Packages are only *found* here (importlib.util.find_spec), never imported: the HTTP
process must start without paying torch's import time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ftpipe.local_engine import Engine, engine_in_use
from ftpipe.settings import LocalApiSettings
from ftpipe.training.base_models import DEFAULT_BASE_MODEL, GGUF_MODELS, is_model_folder


def choose_engine(local: LocalApiSettings) -> Engine:
    """'real' or 'stand-in' for these settings (the rule lives in `ftpipe.local_engine`)."""
    return engine_in_use(local)


def real_base_models(local: LocalApiSettings, models_dir: Path) -> dict[str, str | None]:
    """The real engine's base model ids -> configured folder or HF id (None: the embedded one,
    offered when its package or its converted folder is on this machine)."""
    found: dict[str, str | None] = {}
    package = GGUF_MODELS[DEFAULT_BASE_MODEL][0]
    embedded = is_model_folder(models_dir / DEFAULT_BASE_MODEL)
    if embedded or importlib.util.find_spec(package) is not None:
        found[DEFAULT_BASE_MODEL] = None
    return {**found, **local.base_models}

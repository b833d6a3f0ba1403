"""Which engine trains (and answers) behind the local server: the real one or the stand-in.

Decided from `LocalApiSettings.engine`; "auto" picks the real engine wherever the training stack
is installed. Packages are only *found* here (importlib.util.find_spec), never imported: the HTTP
process must start without paying torch's import time.
"""

from __future__ import annotations

from pathlib import Path

from ftpipe.local_engine import Engine, embedded_model_available, engine_in_use
from ftpipe.settings import LocalApiSettings
from ftpipe.training.base_models import DEFAULT_BASE_MODEL, is_model_folder


def choose_engine(local: LocalApiSettings) -> Engine:
    """'real' or 'stand-in' for these settings (the rule lives in `ftpipe.local_engine`)."""
    return engine_in_use(local)


def real_base_models(local: LocalApiSettings, models_dir: Path) -> dict[str, str | None]:
    """The real engine's base model ids -> configured folder (None: a folder in `models_dir`,
    the embedded model when its package or converted folder is here, or one `ftpipe models
    pull` put there as `<org>--<name>`)."""
    found: dict[str, str | None] = {}
    if embedded_model_available(models_dir):
        found[DEFAULT_BASE_MODEL] = None
    if models_dir.is_dir():
        for folder in sorted(models_dir.iterdir()):
            if not folder.name.startswith(".") and is_model_folder(folder):
                found.setdefault(folder.name.replace("--", "/"), None)
    return {**found, **local.base_models}

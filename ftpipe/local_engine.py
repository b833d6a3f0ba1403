"""Which engine the local server runs and which model the pipeline defaults to; no torch import.

The real engine (transformers + peft + trl, the `train` extra) is found, never imported, so
commands that do not train start fast and machines without the stack still work.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ftpipe.training.base_models import DEFAULT_BASE_MODEL as EMBEDDED_BASE_MODEL

if TYPE_CHECKING:
    from ftpipe.settings import LocalApiSettings, Settings

OPENAI_DEFAULT_MODEL = "gpt-4o-mini"
TRAINING_STACK = ("torch", "transformers", "peft", "trl")
Engine = Literal["real", "stand-in"]


def real_engine_available() -> bool:
    """Whether the training stack is installed (found on the path, not imported)."""
    return all(importlib.util.find_spec(name) is not None for name in TRAINING_STACK)


def engine_in_use(settings: LocalApiSettings | Settings) -> Engine:
    """The local server's engine: the one named, or real wherever the train extra is installed."""
    local = getattr(settings, "local", settings)
    if local.engine == "auto":
        return "real" if real_engine_available() else "stand-in"
    return local.engine


def default_model_for(backend: str, local: LocalApiSettings, models: Path | None = None) -> str:
    """The pipeline's default model: where the local server trains for real, a base model it
    really has (the embedded one when its package or converted folder is here, else the first
    configured one); else gpt-4o-mini (which the stand-in imitates and OpenAI serves)."""
    if backend != "local" or engine_in_use(local) != "real":
        return OPENAI_DEFAULT_MODEL
    if embedded_model_available(models):
        return EMBEDDED_BASE_MODEL
    return next(iter(local.base_models), OPENAI_DEFAULT_MODEL)


def embedded_model_available(models: Path | None) -> bool:
    """The embedded model's package is installed, or its converted folder is in `models`."""
    from ftpipe.training.base_models import GGUF_MODELS, is_model_folder

    package = GGUF_MODELS[EMBEDDED_BASE_MODEL][0]
    converted = models is not None and is_model_folder(models / EMBEDDED_BASE_MODEL)
    return converted or importlib.util.find_spec(package) is not None


def models_dir(settings: Settings) -> Path:
    """Where the local server keeps converted and pulled base models (not created here)."""
    return settings.home.expanduser().resolve() / "local_api" / "models"

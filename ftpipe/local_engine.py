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


def default_model_for(backend: str, local: LocalApiSettings) -> str:
    """The pipeline's default model: the embedded local model where the local server trains for
    real, else gpt-4o-mini (which the stand-in imitates and OpenAI serves)."""
    if backend == "local" and engine_in_use(local) == "real":
        return EMBEDDED_BASE_MODEL
    return OPENAI_DEFAULT_MODEL


def models_dir(settings: Settings) -> Path:
    """Where the local server keeps converted and pulled base models (not created here)."""
    return settings.home.expanduser().resolve() / "local_api" / "models"

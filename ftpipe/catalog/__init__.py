"""The model catalogue: which tokenizer, training token limit and price apply to a model name.

One data file (`models.json`) holds the facts of OpenAI's models so that the local server, the
token counter and the cost estimate agree; fine-tuned names (`ft:<base>:...`) resolve through
their base model. Local base models (the embedded one, `FTPIPE_LOCAL_BASE_MODELS`, pulled ones)
answer from their own folder: their Hugging Face tokenizer (`hf:<folder>`) and context length.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from ftpipe.errors import InputError

DEFAULT_ENCODING = "o200k_base"
HF_ENCODING_PREFIX = "hf:"  # encoding of a local model: its tokenizer folder
LOCAL_OWNER = "ftpipe"
log = logging.getLogger("ftpipe")


@dataclass(frozen=True)
class ModelInfo:
    """One catalogue entry, with aliases already resolved to their snapshot's facts."""

    id: str
    snapshot: str
    created: int
    owned_by: str
    encoding: str
    fine_tunable: bool
    training_token_limit: int | None
    training_price_per_1m: float | None


@cache
def _entries() -> dict[str, dict]:
    text = resources.files(__package__).joinpath("models.json").read_text(encoding="utf-8")
    return {entry["id"]: entry for entry in json.loads(text)["models"]}


def base_model_of(name: str) -> str:
    """Strip a fine-tuned name `ft:<base>:<org>:<suffix>:<id>[:ckpt-step-N]` down to `<base>`."""
    if name.startswith("ft:"):
        parts = name.split(":")
        return parts[1] if len(parts) > 1 and parts[1] else name
    return name


def lookup(
    name: str,
    *,
    models_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelInfo | None:
    """Facts for a model, alias or fine-tuned model name: OpenAI's from the catalogue, a local
    base model's from its folder (converted first if need be); None when unknown."""
    entry = _entries().get(base_model_of(name))
    if entry is None:
        return local_model_info(name, models_dir=models_dir, progress=progress)
    return _catalogue_info(entry)


def openai_model(name: str) -> ModelInfo | None:
    """Facts for an OpenAI model from the catalogue only: never a local folder, never a model
    conversion (what the HTTP layer and the stand-in ask, so they never load torch)."""
    entry = _entries().get(base_model_of(name))
    return None if entry is None else _catalogue_info(entry)


def _catalogue_info(entry: dict) -> ModelInfo:
    entries = _entries()
    snapshot = entries[entry["alias_of"]] if "alias_of" in entry else entry
    return ModelInfo(
        id=entry["id"],
        snapshot=snapshot["id"],
        created=entry["created"],
        owned_by=entry["owned_by"],
        encoding=snapshot.get("encoding", DEFAULT_ENCODING),
        fine_tunable=bool(snapshot.get("fine_tunable", False)),
        training_token_limit=snapshot.get("training_token_limit"),
        training_price_per_1m=snapshot.get("training_price_per_1m"),
    )


def all_models() -> list[ModelInfo]:
    """Every catalogue entry, aliases included, in file order."""
    return [info for name in _entries() if (info := lookup(name)) is not None]


def encoding_name(model: str) -> str:
    """The tokenizer a model uses; unknown models get o200k_base, the current default."""
    info = lookup(model)
    return info.encoding if info else DEFAULT_ENCODING


# -- local base models -----------------------------------------------------------------------


class LocalModelError(InputError):
    """A local model whose folder cannot be had or read; the text says what to do (an
    InputError, so every entry point shows it as one line)."""

    def __init__(self, message: str) -> None:
        ValueError.__init__(self, message)
        self.source, self.problem = "model", message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self),))


@dataclass(frozen=True)
class LocalModel:
    """A local base model: its id, its Hugging Face folder and its context length."""

    id: str
    folder: Path
    context_length: int


def is_local_model(name: str, *, models_dir: Path | None = None) -> bool:
    """Whether a (fine-tuned) name is a local base model: the embedded one, one configured in
    FTPIPE_LOCAL_BASE_MODELS, or one pulled into the models folder. OpenAI's names never are."""
    base = base_model_of(name)
    if base in _entries():
        return False
    from ftpipe.local_engine import EMBEDDED_BASE_MODEL

    if base == EMBEDDED_BASE_MODEL or base in _local_mapping():
        return True
    folder = _models_dir(models_dir) / base.replace("/", "--")
    return (folder / "config.json").is_file()


def local_model(
    name: str,
    *,
    models_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> LocalModel | None:
    """The folder and context length of a local base model (the embedded one is converted on
    first use, with progress); None when the name is not a local model."""
    directory = _models_dir(models_dir)
    if not is_local_model(name, models_dir=directory):
        return None
    mapping = _local_mapping()
    key = (base_model_of(name), str(directory), json.dumps(mapping, sort_keys=True))
    return _local_model(key, progress or _log_progress)


def local_model_info(
    name: str,
    *,
    models_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> ModelInfo | None:
    """A local base model's facts in the catalogue's shape: its own tokenizer, its context
    length as the per-example limit, nothing to pay; None when the name is not local."""
    model = local_model(name, models_dir=models_dir, progress=progress)
    if model is None:
        return None
    return ModelInfo(
        id=model.id,
        snapshot=model.id,
        created=int((model.folder / "config.json").stat().st_mtime),
        owned_by=LOCAL_OWNER,
        encoding=HF_ENCODING_PREFIX + str(model.folder),
        fine_tunable=True,
        training_token_limit=model.context_length,
        training_price_per_1m=0.0,
    )


_resolved: dict[tuple[str, str, str], LocalModel] = {}


def _local_model(key: tuple[str, str, str], progress: Callable[[str], None]) -> LocalModel:
    """Resolved once per (id, models folder, mapping); a folder that vanished is resolved anew."""
    known = _resolved.get(key)
    if known is not None and (known.folder / "config.json").is_file():
        return known
    from ftpipe.training.base_models import BaseModelError, resolve_base_model

    base, directory, mapping = key
    try:
        folder = resolve_base_model(
            base, Path(directory), mapping=json.loads(mapping), progress=progress
        )
    except (BaseModelError, ImportError, OSError) as error:
        raise LocalModelError(f"local model {base!r}: {error}") from None
    model = LocalModel(base, folder, context_length(folder))
    _resolved[key] = model
    return model


def context_length(folder: Path) -> int:
    """The model's context length (`max_position_embeddings` or its usual synonyms)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise LocalModelError(f"{folder}/config.json cannot be read: {error}") from None
    for source in (config, config.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = source.get(key)
            if isinstance(value, int) and value > 0:
                return value
    raise LocalModelError(f"{folder}/config.json names no context length (max_position_embeddings)")


def _local_mapping() -> Mapping[str, str]:
    from ftpipe.settings import get_settings

    return get_settings().local.base_models


def _models_dir(models_dir: Path | None) -> Path:
    if models_dir is not None:
        return Path(models_dir)
    from ftpipe.local_engine import models_dir as default_models_dir
    from ftpipe.settings import get_settings

    return default_models_dir(get_settings())


def _log_progress(message: str) -> None:
    log.info("%s", message)

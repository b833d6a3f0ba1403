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


# -- which model names a dataset or a job may name --------------------------------------------

FINE_TUNED_SHAPE = "ft:<base>:<org>:<suffix>:<id>"
CUSTOM_MODEL_HINT = (
    "a model of your own trains on the local server: `ftpipe models pull <hf-id or folder>`, "
    "or name its folder in FTPIPE_LOCAL_BASE_MODELS"
)


def check_model(name: str, *, source: str = "model", models_dir: Path | None = None) -> str:
    """The name, when its tokenizer and per-example token limit are known; otherwise one line
    with the closest known names, so no dataset is ever checked against no limit at all."""
    problem = model_problem(name, models_dir=models_dir)
    if problem:
        raise InputError(source, problem)
    return name


def model_problem(name: str, *, models_dir: Path | None = None) -> str | None:
    """Why `name` cannot be fine-tuned by ftpipe, or None: a catalogue model that fine-tunes, a
    local base model, or a fine-tuned id of either. Nothing is loaded or converted here."""
    if not name.strip():
        return "no model named"
    base = base_model_of(name)
    if name.startswith("ft:") and base == name:
        return f"{name!r} is not a fine-tuned model id ({FINE_TUNED_SHAPE})"
    entry = _entries().get(base)
    if entry is not None:
        info = _catalogue_info(entry)
        if info.fine_tunable and info.training_token_limit:
            return None
        known = ", ".join(fine_tunable_names())
        return f"{info.id!r} cannot be fine-tuned; models that can: {known}"
    if is_local_model(base, models_dir=models_dir):
        return None
    return _unknown(name, base, models_dir)


def _unknown(name: str, base: str, models_dir: Path | None) -> str:
    """An unknown name: the closest known ones (or the short list), and how to add one's own."""
    import difflib

    known = fine_tunable_names(every_snapshot=True) + local_model_ids(models_dir)
    close = difflib.get_close_matches(base, known, n=3, cutoff=0.6)
    what = "unknown fine-tuned model base" if base != name else "unknown model"
    if close:
        hint = f"did you mean {_either(close)}?"
    else:
        hint = "known: " + ", ".join(fine_tunable_names() + local_model_ids(models_dir))
    return f"{what} {base!r}; {hint} ({CUSTOM_MODEL_HINT})"


def _either(names: list[str]) -> str:
    """`a`, `a or b`, `a, b or c`: the way a person offers choices."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def fine_tunable_names(*, every_snapshot: bool = False) -> list[str]:
    """Catalogue names that fine-tune: their short aliases, or every name with the snapshots."""
    aliases = {entry["alias_of"] for entry in _entries().values() if "alias_of" in entry}
    return [
        info.id
        for info in all_models()
        if info.fine_tunable
        and info.training_token_limit
        and (every_snapshot or info.id not in aliases)
    ]


def local_model_ids(models_dir: Path | None = None) -> list[str]:
    """The local base models by id: the embedded one, the configured ones, the pulled ones."""
    from ftpipe.local_engine import EMBEDDED_BASE_MODEL

    ids = [EMBEDDED_BASE_MODEL, *_local_mapping()]
    folder = _models_dir(models_dir)
    if folder.is_dir():
        ids += sorted(
            p.name.replace("--", "/") for p in folder.iterdir() if (p / "config.json").is_file()
        )
    return list(dict.fromkeys(ids))


def check_default_model(name: str) -> str:
    """The default model (FTPIPE_DEFAULT_MODEL, else the backend's), checked like a named one;
    a typo is reported as the variable, which is where it has to be fixed."""
    return check_model(name, source=f"FTPIPE_DEFAULT_MODEL={name}")

"""The model catalogue: which tokenizer, training token limit and price apply to a model name.

One data file (`models.json`) holds the facts so that the local server, the token counter and the
cost estimate agree; fine-tuned names (`ft:<base>:...`) resolve through their base model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

DEFAULT_ENCODING = "o200k_base"


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


def lookup(name: str) -> ModelInfo | None:
    """Catalogue facts for a model, alias or fine-tuned model name; None when unknown."""
    entries = _entries()
    entry = entries.get(base_model_of(name))
    if entry is None:
        return None
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

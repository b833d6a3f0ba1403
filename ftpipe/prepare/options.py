"""The knobs of dataset preparation: one pydantic model for the CLI, the tasks and the flow."""

from __future__ import annotations

import codecs
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

Label = Literal["positive", "negative"]
Sentiment = Literal["positive", "negative", "neutral"]

# Options added after dataset ids were first handed out: left out of the fingerprint while
# unset, so a dataset prepared before them keeps its id.
LATER_OPTIONS = ("encoding",)
# How a run is carried out, never what it makes: always left out of the fingerprint.
EXECUTION_OPTIONS = ("workers",)
DEFAULT_LABEL_INSTRUCTION = (
    "Classify the sentiment of the user's text. Answer with one word: positive or negative."
)


def known_model(value: str) -> str:
    """A model whose tokenizer and token limit ftpipe knows, checked before any input is read."""
    from ftpipe.catalog import model_problem

    problem = model_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# A model a dataset is checked against and a job trains: catalogue, local or fine-tuned.
ModelName = Annotated[str, AfterValidator(known_model)]


class PrepareOptions(BaseModel):
    """How inputs become a dataset; part of the dataset id, so equal options give equal ids."""

    model: ModelName = Field(
        default_factory=lambda: default_model(),
        description="Target model: tokenizer and token limit (default: the backend's default "
        "model, FTPIPE_DEFAULT_MODEL).",
    )
    column_map: dict[str, str] | None = Field(
        None,
        description="Explicit mapping of roles to CSV columns, e.g. {'user': 'Q', 'assistant': "
        "'A', 'system': 'S'}; overrides the recognised column pairs.",
    )
    system_instruction: str | None = Field(
        None,
        description="System message added to every CSV example (label mode has a default).",
    )
    label: Label | None = Field(
        None, description="Label mode: every text gets this label as the reply."
    )
    text_column: str | None = Field(None, description="Label mode: the column holding the text.")
    label_column: str | None = Field(
        None, description="Label mode: the column holding each row's label."
    )
    sentiments: list[Sentiment] | None = Field(
        None, description="Dialogues: keep only exchanges whose reply has one of these sentiments."
    )
    redact: bool = Field(False, description="Dialogues: replace e-mails, phones and card numbers.")
    truncate: bool = Field(
        False, description="Truncate examples over the token limit instead of rejecting them."
    )
    validation_share: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of examples held out for validation (max 1000)."
    )
    seed: int = Field(42, ge=0, description="Seed of the deterministic train/validation split.")
    max_rejects: int | None = Field(
        None,
        ge=0,
        description="Fail when more rows than this are rejected (default: 10% of input).",
    )
    encoding: str | None = Field(
        None,
        description="Text encoding of CSV inputs, e.g. cp1252 or latin-1; default: detected "
        "(UTF-8, or cp1251 for Cyrillic text); an unknown name is refused",
    )

    workers: int | None = Field(
        None,
        ge=1,
        description="Processes that prepare one large CSV together (the outputs are the same "
        "bytes whatever the number); default: one per free core for a file of 32 MB or more.",
    )

    @field_validator("encoding")
    @classmethod
    def _text_encoding(cls, value: str | None) -> str | None:
        """A codec Python has that decodes bytes to text (base64 and rot13 are codecs too)."""
        if value is None:
            return None
        try:
            info = codecs.lookup(value)
        except LookupError:
            problem = f"unknown text encoding {value!r}; e.g. utf-8, cp1252, latin-1"
            raise ValueError(problem) from None
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(f"{value!r} is not a text encoding; e.g. utf-8, cp1252, latin-1")
        return value

    @field_validator("text_column", "label_column")
    @classmethod
    def _column_named(cls, value: str | None) -> str | None:
        """A blank column name would only fail later, as a column the file lacks."""
        if value is not None and not value.strip():
            raise ValueError("names no column (empty)")
        return value

    @field_validator("column_map")
    @classmethod
    def _known_roles(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            unknown = set(value) - {"system", "user", "assistant"}
            if unknown:
                raise ValueError(
                    f"column_map keys must be system, user or assistant; got {sorted(unknown)}"
                )
            if not {"user", "assistant"} <= set(value):
                raise ValueError("column_map needs at least 'user' and 'assistant'")
            blank = sorted(role for role, column in value.items() if not column.strip())
            if blank:
                raise ValueError(f"column_map names no column for {', '.join(blank)}")
        return value

    @property
    def label_mode(self) -> bool:
        return bool(self.label or self.text_column or self.label_column)

    def fingerprint(self) -> str:
        """A stable digest of every option, for the dataset id; options added later count only
        once set, so the ids of datasets prepared before them stay the same."""
        values = self.model_dump(mode="json", exclude=set(EXECUTION_OPTIONS))
        for name in LATER_OPTIONS:
            if values.get(name) is None:
                del values[name]
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def default_model() -> str:
    """The settings' default model, read when options are made (it follows the backend)."""
    from ftpipe.settings import get_settings

    return get_settings().default_model


def default_output_root() -> Path:
    return Path("data") / "processed"

"""The knobs of dataset preparation: one pydantic model for the CLI, the tasks and the flow."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

Label = Literal["positive", "negative"]
Sentiment = Literal["positive", "negative", "neutral"]

DEFAULT_LABEL_INSTRUCTION = (
    "Classify the sentiment of the user's text. Answer with one word: positive or negative."
)


class PrepareOptions(BaseModel):
    """How inputs become a dataset; part of the dataset id, so equal options give equal ids."""

    model: str = Field(
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
        return value

    @property
    def label_mode(self) -> bool:
        return bool(self.label or self.text_column or self.label_column)

    def fingerprint(self) -> str:
        """A stable digest of every option, for the dataset id."""
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()


def default_model() -> str:
    """The settings' default model, read when options are made (it follows the backend)."""
    from ftpipe.settings import get_settings

    return get_settings().default_model


def default_output_root() -> Path:
    return Path("data") / "processed"

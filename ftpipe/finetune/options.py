"""What a fine-tuning job is trained with: the options a launch is keyed by, checked early.

Kept apart from launch.py so the CLI and flows can declare these parameters without importing
the OpenAI SDK or the job registry.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field

Auto = Literal["auto"]
# OpenAI's rule is 1-64 characters; the suffix becomes part of `ft:<base>:<org>:<suffix>:<id>`,
# so ftpipe also keeps out what would break that name: ':', spaces and other punctuation.
SUFFIX_CHARACTERS = re.compile(r"[A-Za-z0-9._-]+")


def _auto_or(value: Any) -> tuple[bool, float | None]:
    """(is 'auto', the number given): CLI and form values arrive as text, JSON as numbers."""
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "auto":
            return True, None
        try:
            return False, float(text)
        except ValueError:
            return False, None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return False, float(value)
    return False, None


def _whole_or_auto(low: int, high: int) -> Callable[[Any], Any]:
    """A hyperparameter that is 'auto' or a whole number in OpenAI's range: 0 is not 'auto'."""

    def check(value: Any) -> Any:
        auto, number = _auto_or(value)
        if auto:
            return "auto"
        if number is None or not number.is_integer() or not low <= number <= high:
            raise ValueError(
                f"expected 'auto' or a whole number from {low} to {high}, got {value!r}"
            )
        return int(number)

    return check


def _positive_or_auto(value: Any) -> Any:
    """The learning-rate multiplier: 'auto' or a finite number above 0."""
    auto, number = _auto_or(value)
    if auto:
        return "auto"
    if number is None or not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected 'auto' or a number above 0, got {value!r}")
    return number


def _suffix_characters(value: str | None) -> str | None:
    """Only characters that keep the fine-tuned model's name one name."""
    if value is not None and not SUFFIX_CHARACTERS.fullmatch(value):
        bad = "".join(sorted({c for c in value if not SUFFIX_CHARACTERS.fullmatch(c)}))
        raise ValueError(
            f"may hold only letters, digits, '-', '_' and '.' (it becomes part of the model "
            f"name ft:<base>:<org>:<suffix>:<id>), not {bad!r}"
        )
    return value


# Annotated, so the checks travel with the fields into models made from them (TrainingOptions).
Epochs = Annotated[
    Annotated[int, Field(ge=1, le=50)] | Auto, BeforeValidator(_whole_or_auto(1, 50))
]
BatchSize = Annotated[
    Annotated[int, Field(ge=1, le=256)] | Auto, BeforeValidator(_whole_or_auto(1, 256))
]
Multiplier = Annotated[Annotated[float, Field(gt=0)] | Auto, BeforeValidator(_positive_or_auto)]
Suffix = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_suffix_characters)]


class LaunchOptions(BaseModel):
    """What a job is trained with; all of it is part of the launch key."""

    model: str = "gpt-4o-mini"  # checked where it is chosen: PrepareOptions.model
    n_epochs: Epochs = Field("auto", description="Epochs (1-50) or 'auto'.")
    batch_size: BatchSize = Field("auto", description="Batch size (1-256) or 'auto'.")
    learning_rate_multiplier: Multiplier = Field("auto", description="> 0, or 'auto'.")
    suffix: Suffix | None = Field(
        None,
        description="Added to the model name: 1-64 letters, digits, '-', '_' or '.'.",
    )
    seed: int | None = Field(None, ge=0, le=2_147_483_647)

    def method(self) -> dict[str, Any]:
        hyperparameters = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }
        return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}

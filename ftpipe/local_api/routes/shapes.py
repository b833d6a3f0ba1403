"""Strict pieces of OpenAI's request schemas that several routes share.

Scalars refuse JSON of another type (`"yes"` is no boolean, `"2"` no integer), integers stay in
the int64 range the API has, and objects refuse unknown keys, so route code only ever meets the
shapes it was written for and a malformed body is a 400 naming its place, never a 500.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictStr
from pydantic_core import PydanticCustomError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MAX = 2**31 - 1
METADATA_PAIRS, METADATA_KEY, METADATA_VALUE = 16, 64, 512

Int = Annotated[int, Field(strict=True, ge=INT64_MIN, le=INT64_MAX)]
Count = Annotated[int, Field(strict=True, ge=1, le=INT32_MAX)]  # sizes, steps, ranks
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Name = Annotated[StrictStr, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


def _metadata_limits(value: dict[str, str]) -> dict[str, str]:
    """OpenAI's limits on metadata, checked once for every route that stores it."""
    too_long = any(len(k) > METADATA_KEY or len(v) > METADATA_VALUE for k, v in value.items())
    if len(value) > METADATA_PAIRS or too_long:
        raise PydanticCustomError(
            "invalid_value",
            f"metadata takes at most {METADATA_PAIRS} pairs, keys up to {METADATA_KEY} "
            f"characters and values up to {METADATA_VALUE}.",
        )
    return value


Metadata = Annotated[dict[str, StrictStr], AfterValidator(_metadata_limits)]


class Closed(BaseModel):
    """An object of the API's schemas: unknown keys are refused, as OpenAI refuses them."""

    model_config = ConfigDict(extra="forbid")


class JsonSchema(Closed):
    name: Name
    description: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class TextFormat(Closed):
    type: Literal["text"]


class JsonObjectFormat(Closed):
    type: Literal["json_object"]


class JsonSchemaFormat(Closed):
    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class FunctionDef(Closed):
    name: Name
    description: StrictStr | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class FunctionTool(Closed):
    type: Literal["function"]
    function: FunctionDef

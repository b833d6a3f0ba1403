"""The messages between the local server and the inference worker: one JSON object per line.

The server writes `Request` lines to the worker's stdin; the worker answers on stdout with zero or
more `Delta` lines (streaming only), then exactly one `Done` or `Error` line carrying the same
`id`. A `cancel` request is the exception: the worker acts on it at once and answers nothing (the
cancelled request still ends with its own `Done`, finish reason "cancelled", or `Error`). This
module imports no torch, so the HTTP layer may use it freely.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

ErrorCode = Literal[
    "context_length_exceeded",  # the prompt (plus max_tokens) does not fit the model's context
    "model_not_found",  # the base, adapter or model folder is missing or is not a model
    "out_of_memory",  # CUDA or host memory ran out (the worker may have been killed for it)
    "invalid_request",  # the messages cannot be templated (e.g. image parts for a text model)
    "inference_failed",  # anything else, with the reason in `message`
]
FinishReason = Literal["stop", "length", "cancelled"]


class Request(BaseModel):
    """One request to the worker. `model_path` is the base model's folder; `adapter_path` is a
    LoRA adapter folder (adapter_config.json) or a full fine-tuned model folder, or None for the
    base alone."""

    model_config = ConfigDict(extra="forbid")

    id: str
    op: Literal["chat", "unload", "ping", "cancel"] = "chat"
    model_path: str | None = None
    adapter_path: str | None = None
    messages: list[dict[str, Any]] = Field(default_factory=list)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=128)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list, max_length=4)
    stream: bool = False
    target: str | None = None  # `cancel` only: the id of the request to stop

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        """OpenAI accepts one string or a list of strings; empty strings never match."""
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        return [item for item in value if item != ""] if isinstance(value, list) else value


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Choice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason
    completion_tokens: int


class Delta(BaseModel):
    """New text of one choice, as it is produced (stream requests only)."""

    id: str
    type: Literal["delta"] = "delta"
    index: int
    text: str


class Done(BaseModel):
    """The end of a request: the full choices and usage for `chat`, facts for `ping`/`unload`."""

    id: str
    type: Literal["done"] = "done"
    model: str | None = None  # the folder that really ran (the adapter's or the model's)
    choices: list[Choice] = Field(default_factory=list)
    usage: Usage | None = None
    info: dict[str, Any] = Field(default_factory=dict)


class Error(BaseModel):
    """A request that failed; `prompt_tokens` / `context_length` come with context errors."""

    id: str
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    prompt_tokens: int | None = None
    context_length: int | None = None


Response = Annotated[Delta | Done | Error, Field(discriminator="type")]
_RESPONSE: TypeAdapter[Delta | Done | Error] = TypeAdapter(Response)


def encode(message: BaseModel) -> str:
    """One protocol line (newline included)."""
    return message.model_dump_json() + "\n"


def decode_response(line: str | bytes) -> Delta | Done | Error:
    """Parse one response line; raises pydantic.ValidationError for anything else."""
    return _RESPONSE.validate_json(line)


def decode_request(line: str | bytes) -> Request:
    return Request.model_validate_json(line)

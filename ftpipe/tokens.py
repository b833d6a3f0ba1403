"""Exact, offline token counts with OpenAI's tokenizers.

`tiktoken.get_encoding` downloads its tables, which fails without network; the `bpe-openai`
package ships the same o200k_base and cl100k_base tables, so `tiktoken.Encoding`s are built
from them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from typing import Any

import tiktoken

with warnings.catch_warnings():  # bpe-openai loads tables on import via a deprecated resources API
    warnings.simplefilter("ignore", DeprecationWarning)
    from bpe_openai import registry

from ftpipe.catalog import encoding_name

DEFAULT_MODEL = "gpt-4o-mini"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_REPLY = 3

_CONSTRUCTORS: dict[str, Callable[[], dict[str, Any]]] = {
    "o200k_base": registry.o200k_base,
    "cl100k_base": registry.cl100k_base,
}


@cache
def get_encoding(name: str) -> tiktoken.Encoding:
    """The named tokenizer built from locally shipped tables, so it never touches the network."""
    constructor = _CONSTRUCTORS.get(name)
    if constructor is None:
        known = ", ".join(sorted(_CONSTRUCTORS))
        raise ValueError(f"unknown encoding {name!r}; offline encodings are: {known}")
    with warnings.catch_warnings():  # bpe-openai loads its tables with a deprecated resources API
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = constructor()
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
    )


@cache
def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The tokenizer the catalogue assigns to a model (o200k_base for unknown models)."""
    return get_encoding(encoding_name(model))


def count_tokens(text: str, model: str = DEFAULT_MODEL) -> int:
    """Token count of plain text; special-token strings count as text instead of raising."""
    return len(encoding_for_model(model).encode_ordinary(text))


def count_batch(texts: list[str], model: str = DEFAULT_MODEL) -> list[int]:
    """Token counts of many texts. A plain loop: tiktoken's `encode_ordinary_batch` makes a
    future per text, which costs 3-4x the encoding itself on short cells (bench/prepare.py)."""
    encode = encoding_for_model(model).encode_ordinary
    return [len(encode(text)) for text in texts]


def _content_strings(content: object) -> Iterator[str]:
    """Counted text of a message's content: the string itself, or the text of its text parts."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    yield text


def _call_strings(call: object) -> Iterator[str]:
    """Name and arguments of a function call, the parts of a call the model actually writes."""
    if isinstance(call, Mapping):
        for key in ("name", "arguments"):
            value = call.get(key)
            if isinstance(value, str):
                yield value


def _tool_call_strings(tool_calls: object) -> Iterator[str]:
    """Names and arguments of every function in an assistant's `tool_calls` list."""
    if isinstance(tool_calls, list):
        for tool_call in tool_calls:
            if isinstance(tool_call, Mapping):
                yield from _call_strings(tool_call.get("function"))


def _message_strings(message: Mapping[str, object]) -> Iterator[str]:
    """Every string a message contributes to its token count; non-strings like weight add none."""
    for key, value in message.items():
        if key == "content":
            yield from _content_strings(value)
        elif key == "function_call":
            yield from _call_strings(value)
        elif key == "tool_calls":
            yield from _tool_call_strings(value)
        elif isinstance(value, str):
            yield value


def count_message_tokens(messages: list[dict], model: str = DEFAULT_MODEL) -> int:
    """Tokens of one chat example by OpenAI's rule: 3 per message, +1 per name, +3 at the end."""
    encoding = encoding_for_model(model)
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if "name" in message:
            total += TOKENS_PER_NAME
        total += sum(len(encoding.encode_ordinary(text)) for text in _message_strings(message))
    return total


def truncate_to_tokens(text: str, limit: int, model: str = DEFAULT_MODEL) -> str:
    """The text cut to its first `limit` tokens, so it fits a model's token budget."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    encoding = encoding_for_model(model)
    tokens = encoding.encode_ordinary(text)
    if len(tokens) <= limit:
        return text
    return encoding.decode(tokens[:limit])

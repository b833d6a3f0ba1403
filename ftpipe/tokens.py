"""Exact, offline token counts with OpenAI's tokenizers, or a local model's own.

`tiktoken.get_encoding` downloads its tables, which fails without network; the `bpe-openai`
package ships the same o200k_base and cl100k_base tables, so `tiktoken.Encoding`s are built
from them. A local model (catalogue encoding `hf:<folder>`) counts with its fast tokenizer
(`tokenizers`, no torch) and its chat template, exactly as its training sees an example.

Tool definitions (`tools`, legacy `functions`) are counted with the estimate from OpenAI's
cookbook ("How to count tokens with tiktoken", `num_tokens_for_tools`): OpenAI does not publish
how it renders function definitions into the prompt, so that count is an approximation, close
for flat parameter schemas and low for nested ones (see `count_function_tokens`).

Counting, the hot path of dataset preparation, goes through bpe-openai's Rust tokenizer, which
counts without building a token list (about 2x tiktoken's `encode_ordinary`); its entry point
lives in the private `_bindings` module, so `_rust_counter` is the one place that touches it,
and every count falls back to tiktoken when the binding is gone or answers differently.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import cache, partial
from pathlib import Path
from types import ModuleType
from typing import Any

import tiktoken

from ftpipe.catalog import HF_ENCODING_PREFIX, all_models, base_model_of, encoding_name
from ftpipe.training.templates import example_tools

DEFAULT_MODEL = "gpt-4o-mini"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_REPLY = 3
# The cookbook's constants for function definitions: per function (7 for the gpt-4o family,
# 10 for gpt-3.5-turbo / gpt-4), per parameters block, per property, per enum list (negative:
# it replaces part of the property line), per enum value, and once after all definitions.
TOKENS_PER_FUNCTION = {"o200k_base": 7, "cl100k_base": 10}
TOKENS_PER_PROPERTIES = 3
TOKENS_PER_PROPERTY = 3
TOKENS_PER_ENUM = -3
TOKENS_PER_ENUM_VALUE = 3
TOKENS_AFTER_FUNCTIONS = 12

OPENAI_ENCODINGS = ("o200k_base", "cl100k_base")  # the tables bpe-openai ships, offline
BINDINGS = "bpe_openai._bindings"
# Counts the Rust counter must give before it is trusted: ordinary text, and a special token's
# text, which must count as ordinary text (several tokens), never as the one special token.
COUNTER_PROBES = {
    "o200k_base": {"hello world": 2, "<|endoftext|>": 7, "hello <|endoftext|> world": 9},
    "cl100k_base": {"hello world": 2, "<|endoftext|>": 7, "hello <|endoftext|> world": 8},
}
TextCounter = Callable[[str], int]
log = logging.getLogger("ftpipe")


class LocalEncoding:
    """A local model's tokenizer with tiktoken's counting methods, plus its templated count."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.name = HF_ENCODING_PREFIX + str(folder)
        self.folder = folder
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ValueError(f"{folder} has no tokenizer.json (a fast tokenizer is needed)")
        self.tokenizer = Tokenizer.from_file(str(path))
        config = _read_json(folder / "tokenizer_config.json")
        self.special_tokens = {
            key: value.get("content") if isinstance(value, dict) else value
            for key, value in config.items()
            if key.endswith("_token") and isinstance(value, str | dict)
        }
        self.template = _chat_template(folder, config)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def count_messages(self, messages: list[dict], tools: list[dict] | None = None) -> int:
        """Tokens of the example as training renders it (the training chat template), tool
        definitions and calls included exactly as training renders them."""
        from transformers.utils.chat_template_utils import render_jinja_template

        from ftpipe.training.data import chat_inputs, training_template

        template = training_template(self.template)
        if not template:
            raise ValueError(f"{self.folder} has no chat template, so it cannot be trained on")
        messages, tools = chat_inputs(template, messages, tools, self.special_tokens)
        rendered, _ = render_jinja_template(
            conversations=[[_plain(message) for message in messages]],
            tools=tools,
            chat_template=template,
            **self.special_tokens,
        )
        return len(self.encode_ordinary(rendered[0]))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return value if isinstance(value, dict) else {}


def _chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
    """The model's own template: chat_template.jinja, else tokenizer_config.json's."""
    path = folder / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def _plain(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as templates take it: no `weight`, text parts joined into one string."""
    plain = {key: value for key, value in message.items() if key != "weight"}
    content = plain.get("content")
    if isinstance(content, list):
        plain["content"] = "".join(_content_strings(content))
    elif content is None:
        plain["content"] = ""
    return plain


Encoding = tiktoken.Encoding | LocalEncoding


def get_encoding(name: str) -> Encoding:
    """The named tokenizer, from locally shipped tables or a local model folder; no network."""
    if name.startswith(HF_ENCODING_PREFIX):
        return _local_encoding(Path(name[len(HF_ENCODING_PREFIX) :]))
    return _openai_encoding(name)


@cache
def _local_encoding(folder: Path) -> LocalEncoding:
    return LocalEncoding(folder)


def _check_openai_name(name: str) -> None:
    if name not in OPENAI_ENCODINGS:
        known = ", ".join(sorted(OPENAI_ENCODINGS))
        raise ValueError(f"unknown encoding {name!r}; offline encodings are: {known}")


@cache
def _openai_encoding(name: str) -> tiktoken.Encoding:
    """The named tokenizer built from locally shipped tables, so it never touches the network."""
    _check_openai_name(name)
    with warnings.catch_warnings():  # bpe-openai loads its tables with a deprecated resources API
        warnings.simplefilter("ignore", DeprecationWarning)
        from bpe_openai import registry  # decodes every table it ships: only when tiktoken is used

        spec = getattr(registry, name)()
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
    )


def encoding_for_model(model: str) -> Encoding:
    """The tokenizer the catalogue assigns to a model: OpenAI's (o200k_base for unknown models)
    or a local model's own."""
    return get_encoding(_encoding_name(model))


def uses_openai_rule(model: str) -> bool:
    """Whether examples are counted by OpenAI's per-message rule (else by a chat template)."""
    return not _encoding_name(model).startswith(HF_ENCODING_PREFIX)


def _encoding_name(model: str) -> str:
    """The name of a model's tokenizer, without building it."""
    if base_model_of(model) in _catalogue_names():
        return _catalogue_encoding_name(model)
    return encoding_name(model)


@cache
def _catalogue_encoding_name(model: str) -> str:
    return encoding_name(model)


def _load_bindings() -> ModuleType:
    """bpe-openai's compiled module, loaded from its file so that the package's __init__ does
    not run: it decodes every table it ships (~0.5 s) for an API that counting does not use."""
    if BINDINGS in sys.modules:
        return sys.modules[BINDINGS]
    package = importlib.util.find_spec("bpe_openai")
    if package is None or not package.submodule_search_locations:
        raise ImportError("bpe-openai is not installed")
    folder = Path(next(iter(package.submodule_search_locations)))
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    path = next((p for p in folder.glob("_bindings.*") if p.name.endswith(suffixes)), None)
    if path is None:
        return importlib.import_module(BINDINGS)  # laid out differently: the ordinary way
    loader = importlib.machinery.ExtensionFileLoader(BINDINGS, str(path))
    spec = importlib.util.spec_from_file_location(BINDINGS, path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[BINDINGS] = module  # one load per process: a later `import bpe_openai` reuses it
    try:
        loader.exec_module(module)
    except BaseException:
        del sys.modules[BINDINGS]
        raise
    return module


@cache
def _rust_counter(name: str) -> TextCounter | None:
    """bpe-openai's Rust `count` for an OpenAI encoding, or None (then tiktoken counts) when the
    private binding is missing, has moved, or fails the probes. The only use of `_bindings`."""
    try:
        raw: TextCounter = _load_bindings().tokenizer_for_encoding(name).count
        wrong = {text: n for text, n in COUNTER_PROBES[name].items() if raw(text) != n}
    except Exception as error:  # an ImportError, AttributeError or the binding's own errors
        log.debug("bpe-openai's Rust counter is unavailable (%s); counting with tiktoken", error)
        return None
    if wrong:
        log.warning("bpe-openai's Rust counter disagrees on %s; counting with tiktoken", wrong)
        return None

    def count(text: str) -> int:
        try:
            return raw(text)
        except UnicodeEncodeError:  # lone surrogates (from JSON "\ud800"): as tiktoken does
            return raw(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))

    return count


def _tiktoken_counter(name: str) -> TextCounter:
    encode = get_encoding(name).encode_ordinary
    return lambda text: len(encode(text))


def counter_for_model(model: str) -> TextCounter:
    """Exact token count of plain text (special-token strings as text) for a model's tokenizer:
    the Rust counter for OpenAI's encodings, else tiktoken or the local model's tokenizer."""
    name = _encoding_name(model)
    if name in OPENAI_ENCODINGS:
        return _rust_counter(name) or _tiktoken_counter(name)
    return _tiktoken_counter(name)


@cache
def _catalogue_names() -> frozenset[str]:
    return frozenset(info.id for info in all_models())


def count_tokens(text: str, model: str = DEFAULT_MODEL) -> int:
    """Token count of plain text; special-token strings count as text instead of raising."""
    return counter_for_model(model)(text)


def count_batch(texts: list[str], model: str = DEFAULT_MODEL) -> list[int]:
    """Token counts of many texts. A plain loop: batch APIs make a future per text, which costs
    more than the counting itself on short cells (bench/prepare.py)."""
    return list(map(counter_for_model(model), texts))


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
    """Tokens of one chat example's messages by OpenAI's rule: 3 per message, +1 per name, +3 at
    the end, and every string value (a call: its name and arguments only, an estimate); a local
    model's example is counted as its chat template renders it. Tool definitions are not
    included: `count_example_tokens` adds them."""
    if not uses_openai_rule(model):
        return _local(model).count_messages(messages)
    count = counter_for_model(model)
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if "name" in message:
            total += TOKENS_PER_NAME
        total += sum(map(count, _message_strings(message)))
    return total


def _local(model: str) -> LocalEncoding:
    encoding = encoding_for_model(model)
    assert isinstance(encoding, LocalEncoding), encoding
    return encoding


def _text_of(value: object) -> str:
    """A schema value as counted text: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _property_tokens(name: str, schema: object, count: TextCounter) -> int:
    """One parameter: `name:type:description` (a trailing period dropped) and its enum values."""
    schema = schema if isinstance(schema, Mapping) else {}
    total = TOKENS_PER_PROPERTY
    enum = schema.get("enum")
    if isinstance(enum, list):
        total += TOKENS_PER_ENUM
        total += sum(TOKENS_PER_ENUM_VALUE + count(_text_of(value)) for value in enum)
    kind = _text_of(schema.get("type", ""))
    description = _text_of(schema.get("description", "")).removesuffix(".")
    return total + count(f"{name}:{kind}:{description}")


def _function_tokens(function: Mapping[str, Any], per_function: int, count: TextCounter) -> int:
    """One definition: `name:description` and its top-level properties (nested ones are not
    counted, as in the cookbook)."""
    description = _text_of(function.get("description", "")).removesuffix(".")
    total = per_function + count(f"{_text_of(function.get('name', ''))}:{description}")
    parameters = function.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    if isinstance(properties, Mapping) and properties:
        total += TOKENS_PER_PROPERTIES
        total += sum(_property_tokens(k, v, count) for k, v in properties.items())
    return total


def count_function_tokens(functions: list[Mapping[str, Any]], model: str = DEFAULT_MODEL) -> int:
    """Estimated prompt tokens of function definitions, by OpenAI's cookbook
    (`num_tokens_for_tools`); OpenAI's own rendering is not public, so this is approximate."""
    if not functions:
        return 0
    name = _encoding_name(model)
    per_function = TOKENS_PER_FUNCTION.get(name, TOKENS_PER_FUNCTION["o200k_base"])
    count = counter_for_model(model)
    return TOKENS_AFTER_FUNCTIONS + sum(_function_tokens(f, per_function, count) for f in functions)


def count_example_tokens(example: Mapping[str, Any], model: str = DEFAULT_MODEL) -> int:
    """Tokens of one whole training example: its messages by OpenAI's rule plus its `tools` /
    `functions` by the cookbook estimate; a local model's as its chat template renders it all."""
    messages = list(example.get("messages") or [])
    tools = example_tools(example)
    if not uses_openai_rule(model):
        return _local(model).count_messages(messages, tools)
    functions = [t["function"] for t in tools if isinstance(t.get("function"), Mapping)]
    return count_message_tokens(messages, model) + count_function_tokens(functions, model)


def example_counter(model: str) -> Callable[[Mapping[str, Any]], int]:
    """count_example_tokens for one model, resolved once: finding a local model's folder reads
    the settings, which costs many times more than counting one example."""
    if uses_openai_rule(model):
        return partial(count_example_tokens, model=model)
    local = _local(model)
    return lambda example: local.count_messages(
        list(example.get("messages") or []), example_tools(example)
    )


def truncate_to_tokens(text: str, limit: int, model: str = DEFAULT_MODEL) -> str:
    """The text cut to its first `limit` tokens, so it fits a model's token budget."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    encoding = encoding_for_model(model)
    tokens = encoding.encode_ordinary(text)
    if len(tokens) <= limit:
        return text
    return encoding.decode(tokens[:limit])

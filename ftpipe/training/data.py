"""Chat JSONL examples turned into input_ids + labels, loss only where the model should learn.

TRL has no per-message `weight`, so examples are pre-tokenised here: every token that is not an
assistant token, and every token of an assistant message with `weight: 0`, gets label -100.

OpenAI's function-calling examples (`tools`, assistant `tool_calls`, `tool` results, and the
legacy `functions` / `function_call` / `function` form) go through the chat template's own tool
support when it has one (probed by rendering a tool call). A template without it gets them as
plain text instead, in the format `templates.py` documents: definitions appended to the system
message (one is added when the example has none), calls as `<tool_call>` text in the assistant
message, results as `<tool_response>` text in a user message. Either way only assistant
messages, tool calls included, are trained on; tool results are context.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ftpipe.training.templates import (
    CHATML_WITH_GENERATION,
    example_tools,
    speaks_chatml,
    tool_call_text,
    tool_response_text,
    tools_text,
)

IGNORE = -100
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
CALL_ROLES = frozenset({"tool", "function"})
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "ftpipe_probe",
        "description": "probe-description",
        "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
    },
}
_PROBE = (
    {"role": "user", "content": "probe-question"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_probe",
                "type": "function",
                "function": {"name": "ftpipe_probe", "arguments": {"key": "probe-argument"}},
            }
        ],
    },
    {
        "role": "tool",
        "tool_call_id": "call_probe",
        "name": "ftpipe_probe",
        "content": "probe-result",
    },
    {"role": "assistant", "content": "probe-answer"},
)
_PROBE_MARKERS = ("probe-description", "probe-argument", "probe-result")


class DataError(ValueError):
    """A training or validation file that cannot be trained on; the text names file and line."""


@dataclass
class Tokenised:
    """A file's examples ready for SFTTrainer, and what was left out (reported, not silent)."""

    rows: list[dict[str, list[int]]] = field(default_factory=list)
    trained_tokens: int = 0  # tokens with a label in one epoch
    truncated: int = 0
    skipped: list[int] = field(default_factory=list)  # line numbers with nothing to train on


def has_generation_markers(template: str | None) -> bool:
    return bool(template) and GENERATION_MARKER.search(template) is not None


def training_template(model_template: str | None) -> str | None:
    """The template to train with: the model's own if marked, marked ChatML if it speaks ChatML,
    else the model's own (assistant spans then come from rendering prefixes)."""
    if has_generation_markers(model_template):
        return model_template
    if speaks_chatml(model_template):
        return CHATML_WITH_GENERATION
    return model_template


Example = tuple[int, list[dict[str, Any]], list[dict[str, Any]]]


def read_examples(path: Path) -> list[Example]:
    """(line number, messages, tool definitions in the `tools` form) of every example."""
    examples = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {number}: not JSON ({error.msg})") from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise DataError(f"{path}, line {number}: no 'messages' list")
            for message in messages:
                if not isinstance(message, dict) or "role" not in message:
                    raise DataError(f"{path}, line {number}: a message without a 'role'")
                if message.get("weight", 1) not in (0, 1):
                    raise DataError(f"{path}, line {number}: 'weight' must be 0 or 1")
            for key in ("tools", "functions"):
                if record.get(key) is not None and not isinstance(record[key], list):
                    raise DataError(f"{path}, line {number}: '{key}' must be a list")
            examples.append((number, messages, example_tools(record)))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _plain(message: dict[str, Any]) -> dict[str, Any]:
    """The message as templates expect it: no `weight`, text parts joined into a string."""
    plain = {key: value for key, value in message.items() if key != "weight"}
    content = plain.get("content")
    if isinstance(content, list):
        plain["content"] = "".join(
            part.get("text", "") for part in content if isinstance(part, dict)
        )
    elif content is None:
        plain["content"] = ""
    return plain


def _arguments(call: Mapping[str, Any]) -> Any:
    """A call's arguments as templates take them: the object its JSON text holds."""
    arguments = call.get("arguments")
    if not isinstance(arguments, str):
        return arguments
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        raise DataError(f"tool call {call.get('name')!r} has arguments that are not JSON") from None


def _template_call(call: Mapping[str, Any], fallback_id: str) -> dict[str, Any]:
    """One OpenAI tool call (or legacy function_call) in the Hugging Face tool-call shape."""
    function = call["function"] if isinstance(call.get("function"), Mapping) else call
    return {
        "id": call.get("id") or fallback_id,
        "type": "function",
        "function": {"name": function.get("name"), "arguments": _arguments(function)},
    }


def _template_message(message: Mapping[str, Any], position: int) -> dict[str, Any]:
    """One message with OpenAI's call fields as chat templates take them: the legacy
    function_call as tool_calls, arguments parsed, a function result as a tool result."""
    converted = {k: v for k, v in message.items() if k not in ("tool_calls", "function_call")}
    calls = message.get("tool_calls") or []
    if message.get("function_call"):
        calls = [message["function_call"]]
    if calls:
        converted["tool_calls"] = [
            _template_call(call, f"call_{position}_{index}") for index, call in enumerate(calls)
        ]
    if converted.get("role") == "function":
        converted["role"] = "tool"
    return converted


def _uses_tools(message: Mapping[str, Any]) -> bool:
    """Whether a message belongs to function calling, so the example needs tool rendering."""
    role = message.get("role")
    calls = message.get("tool_calls") or message.get("function_call")
    return (isinstance(role, str) and role in CALL_ROLES) or bool(calls)


def _text(content: Any) -> str:
    """Content as one string, the way `_plain` gives it to templates."""
    return _plain({"content": content})["content"]


def _plain_text_tools(
    messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Tool turns as ordinary text for a template that knows no tools: calls in the assistant
    message, consecutive results in one user message, definitions in the system message."""
    result: list[dict[str, Any]] = []
    previous = None
    for message in messages:
        role = message.get("role")
        if role == "tool" and previous == "tool":
            result[-1]["content"] += "\n" + tool_response_text(_text(message.get("content")))
        elif role == "tool":
            result.append(
                {"role": "user", "content": tool_response_text(_text(message.get("content")))}
            )
        elif message.get("tool_calls"):
            calls = [
                tool_call_text(c["function"]["name"], c["function"]["arguments"])
                for c in message["tool_calls"]
            ]
            text = _text(message.get("content"))
            plain = {k: v for k, v in message.items() if k != "tool_calls"}
            result.append({**plain, "content": "\n".join([text, *calls] if text else calls)})
        else:
            result.append(dict(message))
        previous = role
    if tools:
        if result and result[0].get("role") == "system":
            system = _text(result[0].get("content"))
            result[0] = {**result[0], "content": system + "\n\n" + tools_text(tools)}
        else:
            result.insert(0, {"role": "system", "content": tools_text(tools)})
    return result


def supports_tools(template: str, special_tokens: Mapping[str, Any] | None = None) -> bool:
    """Whether a chat template renders tool definitions, calls and results (a probe example)."""
    tokens = tuple(sorted((k, v) for k, v in (special_tokens or {}).items() if isinstance(v, str)))
    return _supports_tools(template, tokens)


@cache
def _supports_tools(template: str, special_tokens: tuple[tuple[str, str], ...]) -> bool:
    from transformers.utils.chat_template_utils import render_jinja_template

    try:
        rendered, _ = render_jinja_template(
            conversations=[list(_PROBE)],
            tools=[_PROBE_TOOL],
            chat_template=template,
            **dict(special_tokens),
        )
    except Exception:  # a template that refuses tool turns (or any of the probe) lacks support
        return False
    return all(marker in rendered[0] for marker in _PROBE_MARKERS)


def chat_inputs(
    template: str,
    messages: list[dict[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    special_tokens: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools) to render an OpenAI example with: through the template's tool support
    when it has some, else as plain text; weights stay on the messages for the spans."""
    if not tools and not any(_uses_tools(message) for message in messages):
        return messages, None
    converted = [_template_message(m, position) for position, m in enumerate(messages)]
    if supports_tools(template, special_tokens):
        return converted, [dict(tool) for tool in tools] if tools else None
    return _plain_text_tools(converted, tools or []), None


def _render(tokenizer: Any, template: str, messages: list[dict], **kwargs: Any) -> tuple[str, list]:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, generation = render_jinja_template(
        conversations=[messages],
        chat_template=template,
        **{**tokenizer.special_tokens_map, **kwargs},
    )
    return rendered[0], (generation[0] if generation else [])


def assistant_spans(
    tokenizer: Any,
    template: str,
    messages: list[dict[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[str, list[tuple[int, int, int]]]:
    """The rendered text and (start, end, weight) character spans of each assistant message."""
    messages, defined = chat_inputs(template, messages, tools, tokenizer.special_tokens_map)
    plain = [_plain(message) for message in messages]
    weights = [m.get("weight", 1) for m in messages if m.get("role") == "assistant"]
    if has_generation_markers(template):
        text, blocks = _render(
            tokenizer, template, plain, tools=defined, return_assistant_tokens_mask=True
        )
        if len(blocks) != len(weights):
            raise DataError(
                f"the chat template marks {len(blocks)} assistant blocks for {len(weights)} "
                "assistant messages"
            )
        return text, [(start, end, w) for (start, end), w in zip(blocks, weights, strict=True)]
    text, _ = _render(tokenizer, template, plain, tools=defined)
    spans = []
    for index, message in enumerate(plain):
        if message.get("role") != "assistant":
            continue
        before, _ = _render(
            tokenizer, template, plain[:index], tools=defined, add_generation_prompt=True
        )
        through, _ = _render(tokenizer, template, plain[: index + 1], tools=defined)
        if not (text.startswith(before) and text.startswith(through)):
            raise DataError("the chat template does not render conversations prefix by prefix")
        # the separator a template puts after a turn ("\n") is not the assistant's to learn
        end = len(before) + len(text[len(before) : len(through)].rstrip())
        spans.append((len(before), end, messages[index].get("weight", 1)))
    return text, spans


def tokenise(
    tokenizer: Any,
    template: str,
    messages: list[dict[str, Any]],
    max_length: int,
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, truncated): labels copy the ids inside weighted assistant spans."""
    text, spans = assistant_spans(tokenizer, template, messages, tools)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [IGNORE] * len(ids)
    for position, (start, _end) in enumerate(encoded["offset_mapping"]):
        for span_start, span_end, weight in spans:
            if weight and span_start <= start < span_end:
                labels[position] = ids[position]
                break
    truncated = len(ids) > max_length
    return ids[:max_length], labels[:max_length], truncated


def tokenise_file(path: Path, tokenizer: Any, template: str | None, max_length: int) -> Tokenised:
    """Tokenise every example of a file; examples left with no trained token are skipped."""
    if not template:
        raise DataError("the base model has no chat template")
    result = Tokenised()
    for number, messages, tools in read_examples(path):
        try:
            ids, labels, truncated = tokenise(tokenizer, template, messages, max_length, tools)
        except DataError as error:
            raise DataError(f"{path}, line {number}: {error}") from None
        # the first label is never predicted (nothing comes before it), so it does not count
        trained = sum(1 for label in labels[1:] if label != IGNORE)
        if not trained:
            result.skipped.append(number)
            continue
        result.truncated += truncated
        result.trained_tokens += trained
        result.rows.append({"input_ids": ids, "labels": labels})
    if not result.rows:
        raise DataError(f"{path}: no example has an assistant message to train on")
    return result


def labelled_positions(labels: Sequence[int]) -> list[int]:
    """Positions that count in the loss (for checks and tests)."""
    return [position for position, label in enumerate(labels) if label != IGNORE]

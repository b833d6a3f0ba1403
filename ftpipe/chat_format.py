"""OpenAI's chat fine-tuning format rules, shared by the local server and dataset preparation.

Issue codes are those of OpenAI's chat data-prep guide, plus `invalid_weight`, `invalid_json`
and the function-calling ones (`invalid_tools`, `invalid_tool_call`, `invalid_tool_result`,
`last_message_not_assistant`), so a bad file fails here the way it fails on OpenAI and a bad row
is rejected with a reason. Messages, tool calls and tools are numbered from 1 and lines are the
file's real 1-based line numbers.

Function calling follows OpenAI's fine-tuning format: a top-level `tools` list (or the legacy
`functions`) and `parallel_tool_calls`, assistant messages with `tool_calls` (or the legacy
`function_call`) whose content may be null or absent, and `tool` messages answering an earlier
call by `tool_call_id` (legacy: `function` messages naming an earlier `function_call`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ftpipe import catalog, tokens

MIN_EXAMPLES = 10
# Every issue code, with what it means: the data-prep guide's error types plus two of OpenAI's.
RULES = {
    "invalid_json": "each line must be one JSON value",
    "data_type": "each example and message must be a JSON object",
    "missing_messages_list": "each example needs a non-empty 'messages' list",
    "message_missing_key": "each message needs a 'role'",
    "message_unrecognized_key": "messages may only hold role, content, name, function_call, "
    "tool_calls, tool_call_id and weight",
    "unrecognized_role": "roles are system, user, assistant, tool or function",
    "missing_content": "each message needs non-empty content",
    "example_missing_assistant_message": "each example needs an assistant message",
    "invalid_weight": "weight is 0 or 1, and only on assistant messages",
    "invalid_tools": "tools and functions are lists of function definitions (a name of 1-64 "
    "letters, digits, _ or -; an optional description and parameters object); "
    "parallel_tool_calls is true or false",
    "invalid_tool_call": "each tool call has an id, type 'function', a function name and "
    "arguments as a JSON string",
    "invalid_tool_result": "a tool message answers an earlier tool call by its tool_call_id; a "
    "function message names an earlier function_call",
    "last_message_not_assistant": "an example ends with an assistant message",
}
KNOWN_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
ALLOWED_KEYS = frozenset(
    {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"}
)
PART_ROLES = frozenset({"user", "system"})
PART_TYPES = frozenset({"text", "image_url"})
CALL_KEYS = ("tool_calls", "function_call")
CALL_ROLES = frozenset({"tool", "function"})
# keys only one role may hold: calls are the assistant's, a tool_call_id is a tool result's
ROLE_ONLY_KEYS = {"tool_calls": "assistant", "function_call": "assistant", "tool_call_id": "tool"}
# top-level keys of an example besides `messages` that OpenAI takes (and preparation keeps)
EXAMPLE_KEYS = ("tools", "functions", "parallel_tool_calls")
MAX_FUNCTIONS = 128
FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class FormatIssue:
    """One rule broken by an example: a stable code for counting and a message for people."""

    code: str
    message: str


@dataclass
class ExampleCheck:
    """The outcome for one line of a JSONL file; tokens is None when the example is malformed."""

    line: int
    issues: list[FormatIssue]
    tokens: int | None = None
    trainable: bool = True  # has an assistant message with a weight other than 0


@dataclass
class FileCheck:
    """The outcome for a whole training file, with enough detail to explain the first failure."""

    examples: int
    bad: list[ExampleCheck]
    too_long: list[ExampleCheck]
    token_counts: list[int]
    token_limit: int | None = None
    limit_model: str | None = None
    min_examples: int = MIN_EXAMPLES
    trainable: int = 0

    @property
    def ok(self) -> bool:
        """True when OpenAI would accept the file for chat fine-tuning."""
        return self.first_error() is None

    def first_error(self) -> str | None:
        """A one-line explanation of the earliest problem, or None when the file is fine."""
        line_errors = [(check.line, self._describe(check)) for check in self.bad + self.too_long]
        if line_errors:
            line, message = min(line_errors)
            return f"line {line}: {message}"
        if self.examples < self.min_examples:
            return (
                f"the file has {self.examples} examples; at least {self.min_examples} are required"
            )
        if self.examples and not self.trainable:
            return "no example has an assistant message to train on (every weight is 0)"
        return None

    def _describe(self, check: ExampleCheck) -> str:
        """The message for one failing line: its first format issue, else its token overflow."""
        if check.issues:
            return check.issues[0].message
        return (
            f"example has {check.tokens} tokens, over the {self.token_limit}-token limit "
            f"of {self.limit_model}"
        )


def _issue(code: str, message: str) -> list[FormatIssue]:
    """A single issue as a list, so every checker can simply concatenate its results."""
    return [FormatIssue(code, message)]


def _has_calls(message: dict) -> bool:
    """An assistant message that calls a tool or function may leave its content empty."""
    return message.get("role") == "assistant" and any(message.get(key) for key in CALL_KEYS)


def is_function_calling(message: Mapping[str, object]) -> bool:
    """A call or a call's result: content rules for plain turns (non-empty text) do not fit
    them, so checks made for plain dialogue turns leave them to this module."""
    role = message.get("role")
    return (isinstance(role, str) and role in CALL_ROLES) or _has_calls(cast(dict, message))


def _kind(value: object) -> str:
    """A JSON type name for messages about a wrong type."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _part_issues(number: int, index: int, part: object) -> list[FormatIssue]:
    """Problems of one content part; only text and image_url parts are allowed."""
    where = f"message {number} content part {index}"
    if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
        return _issue("missing_content", f"{where} must be a text or image_url part")
    if part["type"] == "text" and not (isinstance(part.get("text"), str) and part["text"]):
        return _issue("missing_content", f"{where} has no text")
    if part["type"] == "image_url":
        image = part.get("image_url")
        if not (isinstance(image, dict) and isinstance(image.get("url"), str) and image["url"]):
            return _issue("missing_content", f"{where} has no image_url.url")
    return []


def _content_issues(number: int, message: dict) -> list[FormatIssue]:
    """Content must be a non-empty string, or a parts list on user/system messages."""
    content = message.get("content")
    if content is None or content == "" or content == []:
        if _has_calls(message):
            return []
        if message.get("role") == "assistant":
            return _issue(
                "missing_content",
                f"message {number} (assistant) has neither content nor tool_calls",
            )
        return _issue("missing_content", f"message {number} has no content")
    if isinstance(content, str):
        return []
    if isinstance(content, list) and message.get("role") in PART_ROLES:
        return [
            issue for i, part in enumerate(content, 1) for issue in _part_issues(number, i, part)
        ]
    return _issue("missing_content", f"message {number} content must be a string")


def _weight_issues(number: int, message: dict) -> list[FormatIssue]:
    """Weight switches training on an assistant turn on or off, so it is 0 or 1 and nothing else."""
    if "weight" not in message:
        return []
    weight = message["weight"]
    if message.get("role") != "assistant":
        return _issue(
            "invalid_weight",
            f"message {number} has a weight, but only assistant messages may have one",
        )
    if type(weight) is not int or weight not in (0, 1):
        return _issue(
            "invalid_weight", f"message {number} has weight {weight!r}; weight must be 0 or 1"
        )
    return []


def _role_issues(number: int, message: dict) -> list[FormatIssue]:
    """The role must be present and one OpenAI knows."""
    if "role" not in message:
        return _issue("message_missing_key", f"message {number} is missing the 'role' key")
    role = message["role"]
    if not isinstance(role, str) or role not in KNOWN_ROLES:
        return _issue("unrecognized_role", f"message {number} has unknown role {role!r}")
    return []


def _key_issues(number: int, message: dict) -> list[FormatIssue]:
    """Keys OpenAI does not know make it reject the file, so each one is named; so are call keys
    on a role that cannot hold them (a null value counts as absent)."""
    issues = [
        FormatIssue("message_unrecognized_key", f"message {number} has unrecognized key {key!r}")
        for key in message
        if key not in ALLOWED_KEYS
    ]
    role = message.get("role")
    if not isinstance(role, str) or role not in KNOWN_ROLES:
        return issues
    return issues + [
        FormatIssue(
            "message_unrecognized_key",
            f"message {number} has key {key!r}, which only {owner} messages may have",
        )
        for key, owner in ROLE_ONLY_KEYS.items()
        if message.get(key) is not None and role != owner
    ]


def _arguments_issues(where: str, call: dict) -> list[FormatIssue]:
    """Arguments are the JSON text the model writes, so they must be a string holding JSON."""
    if "arguments" not in call:
        return _issue("invalid_tool_call", f"{where} has no 'arguments'")
    arguments = call["arguments"]
    if not isinstance(arguments, str):
        return _issue(
            "invalid_tool_call",
            f"{where} 'arguments' must be a JSON string, not {_kind(arguments)}",
        )
    try:
        json.loads(arguments, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _issue("invalid_tool_call", f"{where} 'arguments' is not valid JSON")
    return []


def _called_function_issues(where: str, call: object) -> list[FormatIssue]:
    """A called function (tool_calls[].function or function_call) needs a name and arguments."""
    if not isinstance(call, dict):
        return _issue("invalid_tool_call", f"{where} must be an object with 'name' and 'arguments'")
    name = call.get("name")
    if not isinstance(name, str) or not name:
        return _issue("invalid_tool_call", f"{where} has no function 'name'")
    if not FUNCTION_NAME.fullmatch(name):
        return _issue(
            "invalid_tool_call",
            f"{where} function name {name!r} must be 1-64 letters, digits, '_' or '-'",
        )
    return _arguments_issues(where, call)


def _tool_call_issues(where: str, tool_call: object) -> list[FormatIssue]:
    """One entry of tool_calls: {"id", "type": "function", "function": {"name", "arguments"}}."""
    if not isinstance(tool_call, dict):
        return _issue("invalid_tool_call", f"{where} must be an object")
    call_id = tool_call.get("id")
    if not isinstance(call_id, str) or not call_id:
        return _issue("invalid_tool_call", f"{where} has no 'id'")
    if tool_call.get("type") != "function":
        return _issue("invalid_tool_call", f"{where} 'type' must be 'function'")
    if "function" not in tool_call:
        return _issue("invalid_tool_call", f"{where} has no 'function'")
    return _called_function_issues(where, tool_call["function"])


def _calls_issues(number: int, message: dict) -> list[FormatIssue]:
    """The calls of an assistant message; an empty or null tool_calls counts as no calls."""
    if message.get("role") != "assistant":
        return []
    tool_calls = message.get("tool_calls")
    function_call = message.get("function_call")
    if tool_calls and function_call:
        return _issue(
            "invalid_tool_call", f"message {number} has both 'tool_calls' and 'function_call'"
        )
    if function_call is not None:
        return _called_function_issues(f"message {number} function_call", function_call)
    if tool_calls is None or tool_calls == []:
        return []
    if not isinstance(tool_calls, list):
        return _issue(
            "invalid_tool_call",
            f"message {number} 'tool_calls' must be a list, not {_kind(tool_calls)}",
        )
    issues = [
        issue
        for index, call in enumerate(tool_calls, 1)
        for issue in _tool_call_issues(f"message {number} tool call {index}", call)
    ]
    ids = [call.get("id") for call in tool_calls if isinstance(call, dict)]
    repeated = sorted({i for i in ids if isinstance(i, str) and ids.count(i) > 1})
    return issues + [
        FormatIssue("invalid_tool_call", f"message {number} uses tool call id {i!r} twice")
        for i in repeated
    ]


def _message_issues(number: int, message: object) -> list[FormatIssue]:
    """All problems of one message."""
    if not isinstance(message, dict):
        return _issue("data_type", f"message {number} is not a JSON object")
    return (
        _key_issues(number, message)
        + _role_issues(number, message)
        + _content_issues(number, message)
        + _calls_issues(number, message)
        + _weight_issues(number, message)
    )


def _definition_issues(where: str, function: object) -> list[FormatIssue]:
    """One function definition: a valid name, an optional description and parameters object."""
    if not isinstance(function, dict):
        return _issue("invalid_tools", f"{where} must be an object with a 'name'")
    name = function.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        shown = "no 'name'" if name is None else f"name {name!r}"
        return _issue(
            "invalid_tools", f"{where} has {shown}; a name is 1-64 letters, digits, '_' or '-'"
        )
    if not isinstance(function.get("description", ""), str):
        return _issue("invalid_tools", f"{where} 'description' must be a string")
    if not isinstance(function.get("parameters", {}), dict):
        return _issue("invalid_tools", f"{where} 'parameters' must be a JSON object")
    return []


def _tool_definition_issues(where: str, tool: object) -> list[FormatIssue]:
    """One entry of tools: {"type": "function", "function": {definition}}."""
    if not isinstance(tool, dict) or tool.get("type") != "function":
        return _issue("invalid_tools", f'{where} must be {{"type": "function", ...}}')
    if "function" not in tool:
        return _issue("invalid_tools", f"{where} has no 'function'")
    return _definition_issues(where, tool["function"])


def _definitions_issues(example: dict) -> list[FormatIssue]:
    """The example's tools / functions lists and parallel_tool_calls; null counts as absent."""
    issues = []
    for key, check in (("tools", _tool_definition_issues), ("functions", _definition_issues)):
        items = example.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            issues += _issue("invalid_tools", f"'{key}' must be a list, not {_kind(items)}")
            continue
        if len(items) > MAX_FUNCTIONS:
            issues += _issue(
                "invalid_tools",
                f"'{key}' has {len(items)} items; at most {MAX_FUNCTIONS} are allowed",
            )
        issues += [
            issue for i, item in enumerate(items, 1) for issue in check(f"'{key}' item {i}", item)
        ]
    parallel = example.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        issues += _issue("invalid_tools", "'parallel_tool_calls' must be true or false")
    return issues


def _tool_result_issue(number: int, message: dict, open_calls: set[str]) -> list[FormatIssue]:
    """A tool message must answer a call made before it that is not answered yet."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        return _issue("invalid_tool_result", f"message {number} (tool) has no 'tool_call_id'")
    if call_id not in open_calls:
        return _issue(
            "invalid_tool_result",
            f"message {number} 'tool_call_id' {call_id!r} matches no earlier unanswered tool call",
        )
    open_calls.discard(call_id)
    return []


def _function_result_issue(number: int, message: dict, called: set[str]) -> list[FormatIssue]:
    """A legacy function message names the function_call it answers."""
    name = message.get("name")
    if not isinstance(name, str) or not name:
        return _issue("invalid_tool_result", f"message {number} (function) has no 'name'")
    if name not in called:
        return _issue(
            "invalid_tool_result",
            f"message {number} (function) 'name' {name!r} matches no earlier function_call",
        )
    return []


def _result_issues(messages: list) -> list[FormatIssue]:
    """Tool and function results in order: each answers a call an earlier assistant made."""
    open_calls: set[str] = set()
    called: set[str] = set()
    issues: list[FormatIssue] = []
    for number, message in enumerate(messages, 1):
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role == "tool":
            issues += _tool_result_issue(number, message, open_calls)
        elif role == "function":
            issues += _function_result_issue(number, message, called)
        elif role == "assistant":
            calls = message.get("tool_calls")
            if isinstance(calls, list):
                open_calls |= {
                    c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str)
                }
            function_call = message.get("function_call")
            if isinstance(function_call, dict) and isinstance(function_call.get("name"), str):
                called.add(function_call["name"])
    return issues


def _ending_issues(messages: list) -> list[FormatIssue]:
    """Training targets assistant turns, so an example needs one and must end with one."""
    roles = [message.get("role") if isinstance(message, dict) else None for message in messages]
    if "assistant" not in roles:
        return _issue("example_missing_assistant_message", "example has no assistant message")
    if roles[-1] != "assistant" and isinstance(messages[-1], dict):
        return _issue(
            "last_message_not_assistant",
            f"message {len(messages)} is the last but has role {roles[-1]!r}; "
            "an example must end with an assistant message",
        )
    return []


def check_example(example: object) -> list[FormatIssue]:
    """Every format problem of one parsed example; an empty list means it is trainable."""
    if not isinstance(example, dict):
        return _issue("data_type", "example is not a JSON object")
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return _issue("missing_messages_list", "example has no non-empty 'messages' list")
    issues = [issue for i, msg in enumerate(messages, 1) for issue in _message_issues(i, msg)]
    return (
        issues + _definitions_issues(example) + _result_issues(messages) + _ending_issues(messages)
    )


def _reject_constant(name: str) -> object:
    """NaN and Infinity are not JSON, although Python's json module accepts them by default."""
    raise ValueError(f"{name} is not valid JSON")


def _parse_line(raw: bytes | str) -> tuple[object, list[FormatIssue]]:
    """Decode and parse one line, or explain why it is not a JSON value."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as error:
        return None, _issue("invalid_json", f"not valid UTF-8 (bad byte at offset {error.start})")
    try:
        return json.loads(text.lstrip("\ufeff"), parse_constant=_reject_constant), []
    except json.JSONDecodeError as error:
        return None, _issue("invalid_json", f"not valid JSON: {error.msg} at column {error.colno}")
    except (ValueError, RecursionError) as error:
        return None, _issue("invalid_json", f"not valid JSON: {error}")


def _is_blank(raw: bytes | str) -> bool:
    """Blank lines are skipped, as OpenAI does, but still advance the line number."""
    return not raw.strip()


def _numbered_lines(lines: Iterable[bytes | str]) -> Iterator[tuple[int, bytes | str]]:
    """Non-blank lines with their real 1-based line numbers."""
    return ((number, raw) for number, raw in enumerate(lines, 1) if not _is_blank(raw))


def _check_line(
    number: int, raw: bytes | str, count_example: Callable[[Mapping[str, Any]], int]
) -> ExampleCheck:
    """Parse, validate and (when valid) count the tokens of one line."""
    example, issues = _parse_line(raw)
    if not issues:
        issues = check_example(example)
    if issues:
        return ExampleCheck(number, issues)
    messages = cast(dict, example)["messages"]
    trainable = any(m.get("role") == "assistant" and m.get("weight", 1) != 0 for m in messages)
    return ExampleCheck(number, [], count_example(cast(dict, example)), trainable)


def check_jsonl(lines: Iterable[bytes | str], model: str) -> FileCheck:
    """Check a chat training file line by line, without holding the whole file in memory."""
    info = catalog.lookup(model)
    limit = info.training_token_limit if info else None
    result = FileCheck(
        0, [], [], [], token_limit=limit, limit_model=info.snapshot if info else None
    )
    count_example = tokens.example_counter(model)  # the model found once, not once per line
    for number, raw in _numbered_lines(lines):
        result.examples += 1
        check = _check_line(number, raw, count_example)
        if check.tokens is None:
            result.bad.append(check)
            continue
        result.token_counts.append(check.tokens)
        result.trainable += check.trainable
        if limit is not None and check.tokens > limit:
            result.too_long.append(check)
    return result


def check_jsonl_file(path: Path, model: str) -> FileCheck:
    """Check a JSONL training file on disk, streaming it in binary so bad UTF-8 is reported."""
    with Path(path).open("rb") as handle:
        return check_jsonl(handle, model)

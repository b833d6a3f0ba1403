"""OpenAI's chat fine-tuning format rules, shared by the local server and dataset preparation.

Issue codes are those of OpenAI's chat data-prep guide, plus `invalid_weight` and `invalid_json`,
so a bad file fails here the way it fails on OpenAI and a bad row is rejected with a reason.
Messages are numbered from 1 and lines are the file's real 1-based line numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

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
}
KNOWN_ROLES = frozenset({"system", "user", "assistant", "tool", "function"})
ALLOWED_KEYS = frozenset(
    {"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"}
)
PART_ROLES = frozenset({"user", "system"})
PART_TYPES = frozenset({"text", "image_url"})
CALL_KEYS = ("tool_calls", "function_call")


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
    """Keys OpenAI does not know make it reject the file, so each one is named."""
    return [
        FormatIssue("message_unrecognized_key", f"message {number} has unrecognized key {key!r}")
        for key in message
        if key not in ALLOWED_KEYS
    ]


def _message_issues(number: int, message: object) -> list[FormatIssue]:
    """All problems of one message."""
    if not isinstance(message, dict):
        return _issue("data_type", f"message {number} is not a JSON object")
    return (
        _key_issues(number, message)
        + _role_issues(number, message)
        + _content_issues(number, message)
        + _weight_issues(number, message)
    )


def check_example(example: object) -> list[FormatIssue]:
    """Every format problem of one parsed example; an empty list means it is trainable."""
    if not isinstance(example, dict):
        return _issue("data_type", "example is not a JSON object")
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages:
        return _issue("missing_messages_list", "example has no non-empty 'messages' list")
    issues = [issue for i, msg in enumerate(messages, 1) for issue in _message_issues(i, msg)]
    if not any(isinstance(msg, dict) and msg.get("role") == "assistant" for msg in messages):
        issues += _issue("example_missing_assistant_message", "example has no assistant message")
    return issues


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


def _check_line(number: int, raw: bytes | str, model: str) -> ExampleCheck:
    """Parse, validate and (when valid) count the tokens of one line."""
    example, issues = _parse_line(raw)
    if not issues:
        issues = check_example(example)
    if issues:
        return ExampleCheck(number, issues)
    messages = cast(dict, example)["messages"]
    trainable = any(m.get("role") == "assistant" and m.get("weight", 1) != 0 for m in messages)
    return ExampleCheck(number, [], tokens.count_message_tokens(messages, model), trainable)


def check_jsonl(lines: Iterable[bytes | str], model: str) -> FileCheck:
    """Check a chat training file line by line, without holding the whole file in memory."""
    info = catalog.lookup(model)
    limit = info.training_token_limit if info else None
    result = FileCheck(
        0, [], [], [], token_limit=limit, limit_model=info.snapshot if info else None
    )
    for number, raw in _numbered_lines(lines):
        result.examples += 1
        check = _check_line(number, raw, model)
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

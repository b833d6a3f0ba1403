"""Dialogue logs: read the chat task's saved turns and cut them into fine-tuning conversations.

A dialogue log is a UTF-8 JSON file holding a non-empty list of turns, oldest first:

    [
      {"role": "system", "content": "You are the ferry desk."},
      {"role": "user", "content": "When is the last boat?"},
      {"role": "assistant", "content": "At 22:40.", "sentiment": "positive",
       "model": "gpt-4o-mini", "timestamp": "2024-05-01T21:02:11Z"}
    ]

- `role` (required): "system", "user" or "assistant";
- `content` (string): missing or null counts as empty, and empty turns are dropped with a record;
- `sentiment` (optional string, read on assistant turns): "positive", "negative" or "neutral",
  compared case-insensitively; missing or null means unknown;
- `model`, `timestamp` and any other keys are allowed and ignored here.

One file may hold several conversations: each system turn starts a new one, and turns before the
first system turn form a conversation of their own without a system message. Turns are numbered
from 1 in file order; errors and drop records cite those numbers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ftpipe.errors import InputError
from ftpipe.prepare.redaction import redact as redact_text

ROLES = ("system", "user", "assistant")
EMPTY_CONTENT = "empty_content"
SENTIMENT_FILTERED = "sentiment_filtered"
NO_ASSISTANT_MESSAGE = "no_assistant_message"
MISSING = "missing"
_SHOWN_VALUE_CHARS = 40


@dataclass(frozen=True)
class Turn:
    """One saved turn, numbered by its 1-based position in the file so problems can be found."""

    index: int
    role: str
    content: str
    sentiment: str | None


@dataclass(frozen=True)
class Dropped:
    """A turn or exchange left out of training data, with the rule and value that excluded it."""

    source: str
    turn: int
    field: str
    rule: str
    value: str


@dataclass
class Conversation:
    """One training example's messages in OpenAI chat form, traceable to its start in a file."""

    source: str
    first_turn: int
    messages: list[dict[str, str]]


@dataclass
class DialogueResult:
    """Everything a file yielded: the usable conversations and a record of each thing left out."""

    conversations: list[Conversation]
    dropped: list[Dropped]


def find_dialogue_files(directory: Path) -> list[Path]:
    """All `*.json` logs under `directory`, sorted, skipping hidden folders and files (`.name`)."""
    if not directory.is_dir():
        raise InputError(str(directory), "not a directory of dialogue logs")
    found: list[Path] = []
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found.extend(Path(folder, name) for name in files if _is_log_name(name))
    return sorted(path for path in found if path.is_file())


def _is_log_name(name: str) -> bool:
    """Visible JSON files only, so editor backups and tool state in dot-files are not read."""
    return name.endswith(".json") and not name.startswith(".")


def read_dialogue_file(path: Path) -> list[Turn]:
    """Parse a dialogue log into turns, or raise `InputError` naming the file and the bad turn."""
    source = str(path)
    data = _load_json(path, source)
    if not isinstance(data, list):
        raise InputError(source, f"expected a JSON list of turns, found {_json_kind(data)}")
    if not data:
        raise InputError(source, "holds no turns (the list is empty)")
    return [_parse_turn(item, index, source) for index, item in enumerate(data, start=1)]


def _load_json(path: Path, source: str) -> object:
    """Read and decode the file, turning every failure into a one-line `InputError`."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise InputError(source, f"cannot be read: {error.strerror or error}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(source, f"is not UTF-8 text (bad byte at offset {error.start})") from None
    if not text.strip():
        raise InputError(source, "is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise InputError(source, f"is not valid JSON: {error.msg} at {where}") from None


def _parse_turn(item: object, index: int, source: str) -> Turn:
    """Check one list entry against the log format; the error names its turn number."""
    if not isinstance(item, dict):
        raise InputError(source, f"turn {index} is {_json_kind(item)}, expected an object")
    if "role" not in item:
        raise InputError(source, f'turn {index} has no "role"')
    role = item["role"]
    if role not in ROLES:
        expected = ", ".join(ROLES)
        raise InputError(source, f"turn {index} has unknown role {_show(role)} ({expected})")
    content = _text_field(item, "content", index, source)
    return Turn(index, role, content, _sentiment(item, index, source))


def _text_field(item: dict[str, object], key: str, index: int, source: str) -> str:
    """A string field where missing or null reads as empty; anything else is a format error."""
    value = item.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(source, f'turn {index} has "{key}" {_json_kind(value)}, expected a string')
    return value


def _sentiment(item: dict[str, object], index: int, source: str) -> str | None:
    """The turn's sentiment label, lower-cased so filters need not care about spelling."""
    label = _text_field(item, "sentiment", index, source).strip().lower()
    return label or None


def _json_kind(value: object) -> str:
    """How a JSON value is described in messages, in the file's terms rather than Python's."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _show(value: object) -> str:
    """A short single-line rendering of a bad value for an error message."""
    shown = json.dumps(value, ensure_ascii=False)
    if len(shown) > _SHOWN_VALUE_CHARS:
        return shown[: _SHOWN_VALUE_CHARS - 3] + "..."
    return shown


def split_conversations(
    turns: list[Turn],
    source: str,
    *,
    sentiments: set[str] | None = None,
    redact: bool = False,
) -> DialogueResult:
    """Cut a file's turns into conversations at each system turn, recording everything dropped."""
    wanted = None if sentiments is None else {label.strip().lower() for label in sentiments}
    result = DialogueResult(conversations=[], dropped=[])
    for block in _blocks(turns):
        conversation = _conversation(block, source, wanted, result.dropped)
        if conversation is not None:
            result.conversations.append(_redacted(conversation) if redact else conversation)
    return result


def _blocks(turns: Iterable[Turn]) -> Iterator[list[Turn]]:
    """Runs of turns that each begin at a system turn (the first run may have none)."""
    block: list[Turn] = []
    for turn in turns:
        if turn.role == "system" and block:
            yield block
            block = []
        block.append(turn)
    if block:
        yield block


def _conversation(
    block: list[Turn], source: str, wanted: set[str] | None, dropped: list[Dropped]
) -> Conversation | None:
    """Build one conversation from its turns, or None when no assistant reply survives."""
    kept = _drop_empty(block, source, dropped)
    system = [turn for turn in kept if turn.role == "system"]
    body = [turn for turn in kept if turn.role != "system"]
    had_reply = any(turn.role == "assistant" for turn in body)
    if wanted is not None:
        body = _filter_exchanges(body, wanted, source, dropped)
    turns = system + body
    if not any(turn.role == "assistant" for turn in body):
        if turns and not (had_reply and wanted is not None):  # the filter already said why
            roles = ", ".join(turn.role for turn in turns)
            dropped.append(Dropped(source, block[0].index, "role", NO_ASSISTANT_MESSAGE, roles))
        return None
    messages = [{"role": turn.role, "content": turn.content} for turn in turns]
    return Conversation(source=source, first_turn=block[0].index, messages=messages)


def _drop_empty(block: list[Turn], source: str, dropped: list[Dropped]) -> list[Turn]:
    """Trim every turn's content and record those left with nothing to train on. An empty
    system turn is the log's mark of a new conversation without an instruction: not a drop."""
    kept: list[Turn] = []
    for turn in block:
        content = turn.content.strip()
        if content:
            kept.append(replace(turn, content=content))
        elif turn.role != "system":
            dropped.append(Dropped(source, turn.index, "content", EMPTY_CONTENT, turn.content))
    return kept


def _filter_exchanges(
    body: list[Turn], wanted: set[str], source: str, dropped: list[Dropped]
) -> list[Turn]:
    """Keep exchanges whose every reply has a wanted sentiment; record one drop per exchange."""
    kept: list[Turn] = []
    for exchange in _exchanges(body):
        culprit = _unwanted_reply(exchange, wanted)
        if culprit is None:
            kept.extend(exchange)
        else:
            value = culprit.sentiment or MISSING
            dropped.append(Dropped(source, culprit.index, "sentiment", SENTIMENT_FILTERED, value))
    return kept


def _exchanges(body: list[Turn]) -> Iterator[list[Turn]]:
    """User turns with the assistant turns that answer them; a new user turn after a reply starts
    the next exchange."""
    exchange: list[Turn] = []
    answered = False
    for turn in body:
        if turn.role == "user" and answered:
            yield exchange
            exchange, answered = [], False
        exchange.append(turn)
        answered = answered or turn.role == "assistant"
    if exchange:
        yield exchange


def _unwanted_reply(exchange: list[Turn], wanted: set[str]) -> Turn | None:
    """The turn that disqualifies an exchange: the first reply with an unwanted sentiment, or the
    first turn when nothing answers it; None when the exchange is kept."""
    replies = [turn for turn in exchange if turn.role == "assistant"]
    if not replies:
        return exchange[0]
    return next((turn for turn in replies if turn.sentiment not in wanted), None)


def _redacted(conversation: Conversation) -> Conversation:
    """The same conversation with personal data scrubbed from every message."""
    messages = [
        {"role": message["role"], "content": redact_text(message["content"])}
        for message in conversation.messages
    ]
    return replace(conversation, messages=messages)

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

The same turns may instead be stored one JSON object a line (a `.jsonl` dialogue log, what
`ftpipe.dialogue_log` writes); there a line that is not a turn (a torn last line after a crash)
is reported with its line number and the other turns are still read.

One file may hold several conversations: each system turn starts a new one, and turns before the
first system turn form a conversation of their own without a system message. Turns are numbered
from 1 in file order for format errors; drop records and rejects cite the line in the file.
A reply that answers no question (no user turn with text before it in its exchange) is dropped
as `no_user_message`. Each kept reply's sentiment label travels with its conversation, so the
dialogue suite's `sentiment_unknown` rule sees it.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

from ftpipe.errors import InputError
from ftpipe.prepare.redaction import redact as redact_text

ROLES = ("system", "user", "assistant")
EMPTY_CONTENT = "empty_content"
SENTIMENT_FILTERED = "sentiment_filtered"
NO_ASSISTANT_MESSAGE = "no_assistant_message"
NO_USER_MESSAGE = "no_user_message"
MISSING = "missing"
INVALID_JSON = "invalid_json"
INVALID_TURN = "invalid_turn"
JSONL_SUFFIX = ".jsonl"
# What each drop rule checks: the field it names in rejects, and a description for the report.
DROP_RULES = {
    INVALID_JSON: ("*", "each line of a JSONL log must be one JSON value"),
    INVALID_TURN: ("*", "each line of a JSONL log must be a dialogue turn"),
    EMPTY_CONTENT: ("content", "a user or assistant turn must have text"),
    NO_ASSISTANT_MESSAGE: ("role", "a conversation needs an assistant reply"),
    NO_USER_MESSAGE: ("role", "a reply needs a user turn with text before it"),
    SENTIMENT_FILTERED: ("sentiment", "replies must have one of the sentiments asked for"),
}
_SHOWN_VALUE_CHARS = 40
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


@dataclass(frozen=True)
class Turn:
    """One saved turn: its 1-based position among the turns, and the file line it starts on."""

    index: int
    role: str
    content: str
    sentiment: str | None
    line: int


@dataclass(frozen=True)
class Dropped:
    """A turn or exchange left out of training data, with the rule and value that excluded it."""

    source: str
    line: int
    field: str
    rule: str
    value: str


@dataclass
class Conversation:
    """One training example's messages in OpenAI chat form, traceable to its start in a file;
    `sentiments` holds each message's label (None but on labelled replies), index for index."""

    source: str
    first_line: int
    messages: list[dict[str, str]]
    sentiments: list[str | None] = field(default_factory=list)

    def labelled_messages(self) -> list[dict[str, str]]:
        """The messages with each reply's sentiment, as the dialogue suite checks them (the
        label is removed again before an example is written)."""
        labels = self.sentiments or [None] * len(self.messages)
        return [
            message if label is None else {**message, "sentiment": label}
            for message, label in zip(self.messages, labels, strict=True)
        ]


@dataclass
class DialogueResult:
    """Everything a file yielded: the usable conversations and a record of each thing left out."""

    conversations: list[Conversation]
    dropped: list[Dropped]
    redactions: Counter[str] = field(default_factory=Counter)


@dataclass
class DialogueFile:
    """A log's turns, and the lines that could not be read as turns (JSONL logs only)."""

    turns: list[Turn]
    bad_lines: list[Dropped]


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
    log = read_dialogue_log(path)
    if log.bad_lines:
        bad = log.bad_lines[0]
        raise InputError(str(path), f"line {bad.line} is not a dialogue turn: {bad.value}")
    return log.turns


def read_dialogue_log(path: Path) -> DialogueFile:
    """Read a log in either format; a JSONL log's unreadable lines come back, not raised."""
    path = Path(path)
    source = str(path)
    text = _read_text(path, source)
    if path.suffix.lower() == JSONL_SUFFIX:
        return _read_jsonl(text, source)
    items = _list_items(text, source)
    if not items:
        raise InputError(source, "holds no turns (the list is empty)")
    turns = [_parse_turn(item, index, line, source) for index, (line, item) in enumerate(items, 1)]
    return DialogueFile(turns, [])


def _read_text(path: Path, source: str) -> str:
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
    return text


def _list_items(text: str, source: str) -> list[tuple[int, object]]:
    """The entries of a JSON list with the file line each starts on, in one pass of the text."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, 0)
    if not text.startswith("[", position):
        _raise_not_a_list(text, source)
    items: list[tuple[int, object]] = []
    line, counted = 1, 0
    position = _skip_space(text, position + 1)
    while not text.startswith("]", position):
        if items:
            if not text.startswith(",", position):
                _raise_not_a_list(text, source)
            position = _skip_space(text, position + 1)
        try:
            item, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            _raise_not_a_list(text, source)
        line += text.count("\n", counted, position)
        counted = position
        items.append((line, item))
        position = _skip_space(text, end)
    if text[position + 1 :].strip():
        _raise_not_a_list(text, source)
    return items


def _skip_space(text: str, position: int) -> int:
    """Where the next JSON token starts; past the end when only whitespace is left."""
    match = _JSON_SPACE.match(text, position)
    return match.end() if match else position


def _raise_not_a_list(text: str, source: str) -> NoReturn:
    """The standard parser's own message for a broken file, or what the JSON is instead."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        raise InputError(source, f"is not valid JSON: {_json_problem(error, where)}") from None
    raise InputError(source, f"expected a JSON list of turns, found {_json_kind(data)}")


def _json_problem(error: json.JSONDecodeError, where: str) -> str:
    """The parser's message and where: some of its messages already end in "at" ("Unterminated
    string starting at"), and "at at line 1" reads as a typo."""
    joiner = " " if error.msg.endswith(" at") else " at "
    return f"{error.msg}{joiner}{where}"


def jsonl_records(path: Path) -> Iterator[tuple[int, object]]:
    """(line, parsed value or the parse error) for each non-blank line of a JSON-lines file."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield number, json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                yield number, error


def _read_jsonl(text: str, source: str) -> DialogueFile:
    """One turn a line; a line that is not a turn (say, torn by a crash) is set aside, named."""
    result = DialogueFile([], [])
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as error:
            problem = _json_problem(error, f"column {error.colno}")
            result.bad_lines.append(Dropped(source, number, "*", INVALID_JSON, f"{problem}: {raw}"))
            continue
        try:
            result.turns.append(_parse_turn(item, len(result.turns) + 1, number, source))
        except InputError as error:
            result.bad_lines.append(Dropped(source, number, "*", INVALID_TURN, error.problem))
    return result


def _parse_turn(item: object, index: int, line: int, source: str) -> Turn:
    """Check one entry against the log format; the error names its turn number and line."""
    where = f"turn {index} (line {line})"
    if not isinstance(item, dict):
        raise InputError(source, f"{where} is {_json_kind(item)}, expected an object")
    if "role" not in item:
        raise InputError(source, f'{where} has no "role"')
    role = item["role"]
    if role not in ROLES:
        expected = ", ".join(ROLES)
        raise InputError(source, f"{where} has unknown role {_show(role)} ({expected})")
    content = _text_field(item, "content", where, source)
    return Turn(index, role, content, _sentiment(item, where, source), line)


def _text_field(item: dict[str, object], key: str, where: str, source: str) -> str:
    """A string field where missing or null reads as empty; anything else is a format error."""
    value = item.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(source, f'{where} has "{key}" {_json_kind(value)}, expected a string')
    return value


def _sentiment(item: dict[str, object], where: str, source: str) -> str | None:
    """The turn's sentiment label, lower-cased so filters need not care about spelling."""
    label = _text_field(item, "sentiment", where, source).strip().lower()
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
            if redact:
                conversation = _redacted(conversation, result.redactions)
            result.conversations.append(conversation)
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
    """Build one conversation from its turns, or None when no answered question survives."""
    kept = _drop_empty(block, source, dropped)
    system = [turn for turn in kept if turn.role == "system"]
    before = len(dropped)
    asked = _drop_unasked(block, [turn for turn in kept if turn.role != "system"], source, dropped)
    explained = len(dropped) > before and not asked  # every reply answered nothing: said so
    if wanted is not None:
        # a reply that the filter drops is recorded there
        explained = explained or any(turn.role == "assistant" for turn in asked)
        asked = _filter_exchanges(asked, wanted, source, dropped)
    turns = system + asked
    if not any(turn.role == "assistant" for turn in asked):
        if turns and not explained:
            roles = ", ".join(turn.role for turn in turns)
            dropped.append(Dropped(source, block[0].line, "role", NO_ASSISTANT_MESSAGE, roles))
        return None
    messages = [{"role": turn.role, "content": turn.content} for turn in turns]
    sentiments = [turn.sentiment if turn.role == "assistant" else None for turn in turns]
    return Conversation(source, block[0].line, messages, sentiments)


def _drop_empty(block: list[Turn], source: str, dropped: list[Dropped]) -> list[Turn]:
    """Trim every turn's content and record those left with nothing to train on. An empty
    system turn is the log's mark of a new conversation without an instruction: not a drop."""
    kept: list[Turn] = []
    for turn in block:
        content = turn.content.strip()
        if content:
            kept.append(replace(turn, content=content))
        elif turn.role != "system":
            dropped.append(Dropped(source, turn.line, "content", EMPTY_CONTENT, turn.content))
    return kept


def _drop_unasked(
    block: list[Turn], body: list[Turn], source: str, dropped: list[Dropped]
) -> list[Turn]:
    """`body` without the replies that answer no question: exchanges are cut on the raw turns,
    so an empty user turn still separates them, and one drop is recorded per exchange."""
    kept = {turn.index for turn in body}
    unasked: set[int] = set()
    for exchange in _exchanges([turn for turn in block if turn.role != "system"]):
        if any(turn.role == "user" and turn.content.strip() for turn in exchange):
            continue
        replies = [turn for turn in exchange if turn.index in kept]
        if replies:
            value = _shortened(replies[0].content.strip())
            dropped.append(Dropped(source, replies[0].line, "role", NO_USER_MESSAGE, value))
            unasked.update(turn.index for turn in replies)
    return [turn for turn in body if turn.index not in unasked]


def _shortened(text: str) -> str:
    """A single-line start of a text for a drop record."""
    line = " ".join(text.split())
    if len(line) > _SHOWN_VALUE_CHARS:
        return line[: _SHOWN_VALUE_CHARS - 3] + "..."
    return line


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
            dropped.append(Dropped(source, culprit.line, "sentiment", SENTIMENT_FILTERED, value))
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


def _redacted(conversation: Conversation, counts: Counter[str]) -> Conversation:
    """The same conversation with personal data scrubbed from every message, tallied by kind."""
    messages = [
        {"role": message["role"], "content": redact_text(message["content"], counts)}
        for message in conversation.messages
    ]
    return replace(conversation, messages=messages)

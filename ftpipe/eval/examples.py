"""Held-out examples read from chat JSONL: the conversation up to its last reply, and that reply.

>>> from pathlib import Path
>>> _ = Path("/tmp/ftpipe-doc.jsonl").write_text(
...     '{"messages": [{"role": "user", "content": "Hi"}, '
...     '{"role": "assistant", "content": "Hello"}]}\\n')
>>> [(e.line, e.reference) for e in load_examples(Path("/tmp/ftpipe-doc.jsonl"))]
[(1, 'Hello')]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftpipe.errors import InputError

Message = dict[str, Any]


@dataclass(frozen=True)
class EvalExample:
    """One question to put to every model, and the reply training taught."""

    line: int
    prompt: list[Message]
    reference: str

    @property
    def question(self) -> str:
        """The last user text, for tables a person reads."""
        for message in reversed(self.prompt):
            if message.get("role") == "user":
                return text_of(message.get("content"))
        return ""


def load_examples(path: Path, *, limit: int | None = None) -> list[EvalExample]:
    """Every example of a chat JSONL file; a malformed line stops everything with its number."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(source, "no such evaluation file") from None
    except OSError as error:
        raise InputError(source, f"cannot read the evaluation file: {error.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(source, f"is not UTF-8 (byte {error.start})") from None
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            examples.append(_example(f"{source}:{number}", number, line))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise InputError(source, "holds no examples to evaluate on")
    return examples


def _example(where: str, number: int, line: str) -> EvalExample:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(where, f"not valid JSON: {error.msg} (column {error.colno})") from None
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise InputError(where, "needs a 'messages' list of message objects")
    last = _last_reply(messages)
    if last is None:
        raise InputError(where, "has no assistant reply with text to compare the answers with")
    prompt = [_request_message(m) for m in messages[:last]]
    if not any(m.get("role") == "user" for m in prompt):
        raise InputError(where, "has no user message before its last assistant reply")
    last_user = next(m for m in reversed(prompt) if m.get("role") == "user")
    if not text_of(last_user.get("content")).strip() and not isinstance(
        last_user.get("content"), list
    ):
        raise InputError(where, "its last user message is empty: there is no question to ask")
    return EvalExample(number, prompt, text_of(messages[last].get("content")))


def _last_reply(messages: list[Message]) -> int | None:
    """Index of the last assistant message that has text (tool calls alone are not compared)."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") == "assistant" and text_of(message.get("content")).strip():
            return index
    return None


def _request_message(message: Message) -> Message:
    """A training message as a request message: training-only keys such as `weight` dropped."""
    return {key: value for key, value in message.items() if key != "weight"}


def text_of(content: object) -> str:
    """A message's text, whether a string or a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""

"""Chat JSONL examples turned into input_ids + labels, loss only where the model should learn.

TRL has no per-message `weight`, so examples are pre-tokenised here: every token that is not an
assistant token, and every token of an assistant message with `weight: 0`, gets label -100.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftpipe.training.templates import CHATML_WITH_GENERATION, speaks_chatml

IGNORE = -100
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


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


def read_examples(path: Path) -> list[tuple[int, list[dict[str, Any]]]]:
    """(line number, messages) of every example of a chat JSONL file."""
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
            examples.append((number, messages))
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


def _render(tokenizer: Any, template: str, messages: list[dict], **kwargs: Any) -> tuple[str, list]:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, generation = render_jinja_template(
        conversations=[messages],
        chat_template=template,
        **{**tokenizer.special_tokens_map, **kwargs},
    )
    return rendered[0], (generation[0] if generation else [])


def assistant_spans(
    tokenizer: Any, template: str, messages: list[dict[str, Any]]
) -> tuple[str, list[tuple[int, int, int]]]:
    """The rendered text and (start, end, weight) character spans of each assistant message."""
    plain = [_plain(message) for message in messages]
    weights = [m.get("weight", 1) for m in messages if m.get("role") == "assistant"]
    if has_generation_markers(template):
        text, blocks = _render(tokenizer, template, plain, return_assistant_tokens_mask=True)
        if len(blocks) != len(weights):
            raise DataError(
                f"the chat template marks {len(blocks)} assistant blocks for {len(weights)} "
                "assistant messages"
            )
        return text, [(start, end, w) for (start, end), w in zip(blocks, weights, strict=True)]
    text, _ = _render(tokenizer, template, plain)
    spans = []
    for index, message in enumerate(plain):
        if message.get("role") != "assistant":
            continue
        before, _ = _render(tokenizer, template, plain[:index], add_generation_prompt=True)
        through, _ = _render(tokenizer, template, plain[: index + 1])
        if not (text.startswith(before) and text.startswith(through)):
            raise DataError("the chat template does not render conversations prefix by prefix")
        # the separator a template puts after a turn ("\n") is not the assistant's to learn
        end = len(before) + len(text[len(before) : len(through)].rstrip())
        spans.append((len(before), end, messages[index].get("weight", 1)))
    return text, spans


def tokenise(
    tokenizer: Any, template: str, messages: list[dict[str, Any]], max_length: int
) -> tuple[list[int], list[int], bool]:
    """(input_ids, labels, truncated): labels copy the ids inside weighted assistant spans."""
    text, spans = assistant_spans(tokenizer, template, messages)
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
    for number, messages in read_examples(path):
        try:
            ids, labels, truncated = tokenise(tokenizer, template, messages, max_length)
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

"""Replies for the local server's chat completions: a documented stand-in, not a language model.

Fine-tuned models answer with the trained reply whose prompt is nearest to the request (TF-IDF
cosine), so a demo of "fine-tune, then ask" shows the training data at work. Base models echo the
request deterministically, and images are described from their pixels, so nothing here needs a
network, a GPU or randomness.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

_WORD = re.compile(r"\w+")
_SYSTEM_ROLES = ("system", "developer")
_SYSTEM_WEIGHT = 0.05  # the system prompt only nudges near-equal matches; the user text decides
_TIE = 1e-9
_SHORT_QUESTION = 200
_SHORT_SYSTEM = 80
_COLOUR_SAMPLE = 64
_IMAGE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)

PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "silver": (192, 192, 192),
    "red": (255, 0, 0),
    "maroon": (128, 0, 0),
    "yellow": (255, 255, 0),
    "olive": (128, 128, 0),
    "lime": (0, 255, 0),
    "green": (0, 128, 0),
    "aqua": (0, 255, 255),
    "teal": (0, 128, 128),
    "blue": (0, 0, 255),
    "navy": (0, 0, 128),
    "fuchsia": (255, 0, 255),
    "purple": (128, 0, 128),
    "orange": (255, 165, 0),
    "brown": (165, 42, 42),
    "pink": (255, 192, 203),
}
_PALETTE_NAMES = (*PALETTE, "transparent")
_PALETTE_RGB = np.array(list(PALETTE.values()), dtype=np.int32)


# --- message helpers -------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """The text of a message's content, whether a plain string or a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and "text" in p]
        return " ".join(t for t in texts if isinstance(t, str))
    return ""


def _image_urls(content: Any) -> list[str]:
    """The image URLs of a content part list (`image_url` may be an object or a bare string)."""
    if not isinstance(content, list):
        return []
    urls = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "image_url":
            continue
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str):
            urls.append(url)
    return urls


def _last(messages: Sequence[dict[str, Any]], roles: Sequence[str]) -> dict[str, Any] | None:
    """The latest message with one of `roles`, or None."""
    return next((m for m in reversed(messages) if m.get("role") in roles), None)


def _last_text(messages: Sequence[dict[str, Any]], roles: Sequence[str]) -> str:
    """The text of the latest message with one of `roles` ('' when there is none)."""
    message = _last(messages, roles)
    return _content_text(message.get("content")) if message else ""


def _normalise(text: str) -> str:
    """Case and whitespace folded, so an exact match survives copy-paste differences."""
    return " ".join(text.lower().split())


def _tokens(text: str) -> list[str]:
    """Lower-cased unicode word tokens."""
    return _WORD.findall(text.lower())


def _shorten(text: str, limit: int) -> str:
    """Whitespace collapsed and cut at a word boundary to about `limit` characters."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip() + "…"


# --- TF-IDF ----------------------------------------------------------------------------------


class _TfidfIndex:
    """Sparse TF-IDF vectors (sklearn's smoothed idf, L2-normalised) stored by term for lookups."""

    def __init__(self, texts: Sequence[str]) -> None:
        vocab: dict[str, int] = {}
        doc_ids: list[int] = []
        term_ids: list[int] = []
        counts: list[int] = []
        for doc, text in enumerate(texts):
            for term, count in Counter(_tokens(text)).items():
                doc_ids.append(doc)
                term_ids.append(vocab.setdefault(term, len(vocab)))
                counts.append(count)
        self.size = len(texts)
        self.vocab = vocab
        self._build(np.array(doc_ids, np.int64), np.array(term_ids, np.int64), counts)

    def _build(self, docs: np.ndarray, terms: np.ndarray, counts: list[int]) -> None:
        """Weight, normalise and sort the postings by term (CSR layout) once."""
        df = np.bincount(terms, minlength=len(self.vocab))
        self.idf = np.log((1 + self.size) / (1 + df)) + 1
        weights = np.array(counts, np.float64) * self.idf[terms]
        norms = np.sqrt(np.bincount(docs, weights**2, minlength=self.size))
        weights /= np.where(norms > 0, norms, 1)[docs]
        order = np.argsort(terms, kind="stable")
        self.docs, self.weights = docs[order], weights[order]
        self.offsets = np.concatenate(([0], np.cumsum(df)))

    def scores(self, text: str) -> np.ndarray:
        """Cosine similarity of `text` to every document; zeros when no term is shared."""
        counts = Counter(t for t in _tokens(text) if t in self.vocab)
        if not counts:
            return np.zeros(self.size)
        ids = np.array([self.vocab[t] for t in counts])
        query = np.array(list(counts.values()), np.float64) * self.idf[ids]
        query /= np.linalg.norm(query)
        spans = [slice(self.offsets[t], self.offsets[t + 1]) for t in ids]
        docs = np.concatenate([self.docs[s] for s in spans])
        weights = np.concatenate([self.weights[s] * w for s, w in zip(spans, query, strict=True)])
        return np.bincount(docs, weights, minlength=self.size)


# --- fine-tuned models -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Pair:
    """One trained (prompt, reply) pair; `system` is the example's system prompt or ''."""

    prompt: str
    system: str
    reply: str


def _pairs_from_example(messages: Sequence[dict[str, Any]]) -> list[_Pair]:
    """Each trained assistant turn of an example, with the user turn and system prompt before it."""
    pairs = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        before = messages[:i]
        prompt = _last_text(before, ("user",))
        system = _last_text(before, _SYSTEM_ROLES)
        reply = _content_text(message.get("content"))
        if reply:  # a turn holding only tool calls has no text to answer with
            pairs.append(_Pair(prompt, system, reply))
    return pairs


def _parse_line(number: int, line: bytes | str) -> list[dict[str, Any]] | None:
    """The messages of one JSONL line, None for a blank line; ValueError names the bad line."""
    text = line.decode("utf-8") if isinstance(line, bytes) else line
    text = text.lstrip("\ufeff").strip()
    if not text:
        return None
    try:
        example = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"training file line {number}: not valid JSON ({exc.msg})") from exc
    messages = example.get("messages") if isinstance(example, dict) else None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError(f"training file line {number}: expected an object with a 'messages' list")
    return messages


class TrainedReplies:
    """A fine-tuned model's stand-in: the trained reply nearest to the request's last user turn."""

    def __init__(self, pairs: Sequence[_Pair]) -> None:
        if not pairs:
            raise ValueError("the training file has no assistant message with a non-zero weight")
        self._pairs = list(pairs)
        self._prompts = _TfidfIndex([p.prompt for p in pairs])
        systems = list(dict.fromkeys(p.system for p in pairs if p.system))
        self._systems = _TfidfIndex(systems)
        position = {s: i for i, s in enumerate(systems)}
        self._system_of = np.array([position.get(p.system, -1) for p in pairs], np.int64)
        self._exact: dict[str, list[int]] = {}
        for i, pair in enumerate(pairs):
            self._exact.setdefault(_normalise(pair.prompt), []).append(i)
        self._most_common = Counter(p.reply for p in pairs).most_common(1)[0][0]

    @classmethod
    def from_jsonl(cls, lines: Iterable[bytes | str]) -> TrainedReplies:
        """Build from a chat-format training file's lines; ValueError names the first bad line."""
        pairs: list[_Pair] = []
        for number, line in enumerate(lines, start=1):
            messages = _parse_line(number, line)
            if messages is not None:
                pairs.extend(_pairs_from_example(messages))
        return cls(pairs)

    def __len__(self) -> int:
        """How many trained pairs there are, for logs and model metadata."""
        return len(self._pairs)

    def reply(self, messages: list[dict[str, Any]]) -> str:
        """The nearest trained prompt's reply; the most common one when no prompt shares a word."""
        query = _last_text(messages, ("user",))
        bonus = self._system_bonus(_last_text(messages, _SYSTEM_ROLES))
        exact = self._exact.get(_normalise(query))
        if exact:
            return self._pairs[self._best(np.array(exact), bonus)].reply
        scores = self._prompts.scores(query)
        candidates = np.flatnonzero(scores > 0)
        if candidates.size == 0:
            return self._most_common
        return self._pairs[self._best(candidates, scores + bonus)].reply

    def _system_bonus(self, system: str) -> np.ndarray:
        """A small per-pair score for how close its system prompt is to the request's."""
        if not system or self._systems.size == 0:
            return np.zeros(len(self._pairs))
        similarity = np.append(self._systems.scores(system), 0.0)  # index -1: no system prompt
        return _SYSTEM_WEIGHT * similarity[self._system_of]

    @staticmethod
    def _best(candidates: np.ndarray, scores: np.ndarray) -> int:
        """The earliest candidate whose score ties the best (within float noise)."""
        values = scores[candidates]
        return int(candidates[np.flatnonzero(values >= values.max() - _TIE)[0]])


# --- base models -----------------------------------------------------------------------------


def base_reply(model: str, messages: list[dict[str, Any]]) -> str:
    """A deterministic echo that says what it is; ValueError for images that cannot be read."""
    parts = [f"(local stand-in for {model})"]
    system = _last_text(messages, _SYSTEM_ROLES)
    if system.strip():
        parts.append(f'System instruction received: "{_shorten(system, _SHORT_SYSTEM)}".')
    user = _last(messages, ("user",))
    content = user.get("content") if user else None
    body = _describe_urls(_image_urls(content))
    text = _content_text(content)
    if text.strip():
        body.append(f"You asked: {_shorten(text, _SHORT_QUESTION)}")
    parts.extend(body or ["No user message was given."])
    return " ".join(parts)


def _describe_urls(urls: Sequence[str]) -> list[str]:
    """One description per image URL, numbered when there is more than one."""
    descriptions = [describe_image_bytes(decode_data_url(url)[1]) for url in urls]
    if len(descriptions) < 2:
        return descriptions
    return [f"Image {i}: {d}" for i, d in enumerate(descriptions, start=1)]


# --- images ----------------------------------------------------------------------------------


def decode_data_url(url: str) -> tuple[str, bytes]:
    """(mime type, bytes) of a base64 `data:` URL; offline, remote URLs are refused, not fetched."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", url.strip(), re.IGNORECASE):
        raise ValueError(
            f"remote image URLs are not fetched by the offline local server ({_shorten(url, 60)});"
            " send the image inline as data:<mime>;base64,<data>"
        )
    header, comma, payload = url.strip().partition(",")
    if not header.lower().startswith("data:") or not comma:
        raise ValueError("expected an image URL of the form data:<mime>;base64,<data>")
    params = header[5:].split(";")
    if "base64" not in (p.strip().lower() for p in params[1:]):
        raise ValueError("only base64 data URLs are supported (data:<mime>;base64,<data>)")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"the data URL's payload is not valid base64 ({exc})") from exc
    return (params[0].strip().lower() or "text/plain"), data


def _unreadable(exc: BaseException) -> ValueError:
    """The error for bytes that are no image, without PIL's `<_io.BytesIO object at 0x...>`."""
    detail = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc)).strip()
    return ValueError(f"the data is not a readable image ({detail or type(exc).__name__})")


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height), so usage can price the image, once its pixels decode: a truncated file
    is refused here, as a bad request, rather than later while describing it (JPEGs decode at
    a reduced scale, so checking costs little)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            image.draft("RGB", (_COLOUR_SAMPLE, _COLOUR_SAMPLE))
            image.load()
            return size
    except _IMAGE_ERRORS as exc:
        raise _unreadable(exc) from exc


def describe_image_bytes(data: bytes) -> str:
    """A factual sentence from the pixels: format, size, mode and the three dominant colours."""
    try:
        image = Image.open(io.BytesIO(data))
        size, mode, fmt = image.size, image.mode, image.format or "unknown-format"
        image.draft("RGB", (_COLOUR_SAMPLE, _COLOUR_SAMPLE))  # JPEG: decode at reduced scale
        rgba = np.asarray(_small(image).convert("RGBA"), dtype=np.int32).reshape(-1, 4)
    except _IMAGE_ERRORS as exc:
        raise _unreadable(exc) from exc
    width, height = size
    return (
        f"{_article(width)} {width}x{height} {fmt} image ({mode}). "
        f"Dominant colours: {_dominant_colours(rgba)}."
    )


def _small(image: Image.Image) -> Image.Image:
    """The image scaled (nearest neighbour, so no blended colours) to fit in the colour sample."""
    width, height = image.size
    scale = _COLOUR_SAMPLE / max(width, height)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.NEAREST)


def _dominant_colours(rgba: np.ndarray) -> str:
    """'red 75%, white 25%': the three largest palette buckets; see-through pixels count apart."""
    distances = ((rgba[:, None, :3] - _PALETTE_RGB[None, :, :]) ** 2).sum(axis=2)
    labels = np.where(rgba[:, 3] < 128, len(PALETTE), distances.argmin(axis=1))
    counts = np.bincount(labels, minlength=len(_PALETTE_NAMES))
    top = [i for i in np.argsort(-counts, kind="stable")[:3] if counts[i] > 0]
    return ", ".join(f"{_PALETTE_NAMES[i]} {_percent(counts[i], labels.size)}" for i in top)


def _percent(count: int, total: int) -> str:
    """A whole-number share, with '<1%' rather than a misleading '0%'."""
    share = round(100 * count / total)
    return f"{share}%" if share else "<1%"


def _article(number: int) -> str:
    """'An' for numbers read with a leading vowel sound (8, 11, 18, 80, 11000, ...)."""
    digits = str(number)
    eleven_or_eighteen = digits[:2] in ("11", "18") and len(digits) % 3 == 2
    return "An" if digits.startswith("8") or eleven_or_eighteen else "A"


def image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """OpenAI's vision price: 85 for low detail, else 85 + 170 per 512-px tile after resizing."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if detail == "low":
        return 85
    if max(width, height) > 2048:
        width, height = _scale_to(width, height, 2048, longest=True)
    if min(width, height) > 768:
        width, height = _scale_to(width, height, 768, longest=False)
    return 85 + 170 * math.ceil(width / 512) * math.ceil(height / 512)


def _scale_to(width: int, height: int, target: int, *, longest: bool) -> tuple[int, int]:
    """Whole-pixel size with the longest (or shortest) side scaled to `target`, ratio kept."""
    side = max(width, height) if longest else min(width, height)
    return max(1, width * target // side), max(1, height * target // side)


# --- context windows -------------------------------------------------------------------------

# The context windows of the catalogue's snapshots (OpenAI's model pages): what the stand-in
# measures prompts against, as the real engine measures them against its model's config.
CONTEXT_WINDOWS = {
    "gpt-4o-mini-2024-07-18": 128_000,
    "gpt-4o-2024-08-06": 128_000,
    "gpt-4.1-2025-04-14": 1_047_576,
    "gpt-4.1-mini-2025-04-14": 1_047_576,
    "gpt-4.1-nano-2025-04-14": 1_047_576,
    "gpt-3.5-turbo-0125": 16_385,
    "gpt-3.5-turbo-1106": 16_385,
    "gpt-3.5-turbo-0613": 4_096,
    "gpt-4-0613": 8_192,
}
DEFAULT_CONTEXT_WINDOW = 128_000


def context_window(snapshot: str) -> int:
    """The context length of a catalogue snapshot; 128k for one the table does not know."""
    return CONTEXT_WINDOWS.get(snapshot, DEFAULT_CONTEXT_WINDOW)


def context_problem(context: int, prompt: int, max_tokens: int | None) -> str | None:
    """OpenAI's (and the real engine's) message when the prompt, plus an explicit completion
    limit, does not fit the context; None when it fits."""
    if prompt < context and (max_tokens is None or prompt + max_tokens <= context):
        return None
    if max_tokens is not None and prompt < context:
        detail = (
            f"However, you requested {prompt + max_tokens} tokens ({prompt} in the messages, "
            f"{max_tokens} in the completion). Please reduce the length of the messages or "
            "completion."
        )
    else:
        detail = (
            f"However, your messages resulted in {prompt} tokens. Please reduce the length of "
            "the messages."
        )
    return f"This model's maximum context length is {context} tokens. {detail}"

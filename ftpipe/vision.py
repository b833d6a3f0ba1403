"""Describe images with a vision chat model: read, shrink to the API's limits, send inline.

Images go as base64 `data:` URLs, so the same request works for OpenAI and the offline local
server (which never fetches remote URLs). No Prefect here; the tasks and flows wrap this.
"""

from __future__ import annotations

import base64
import io
import math
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from ftpipe import retry
from ftpipe.errors import InputError

MAX_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's per-image limit
MAX_SIDE = 2048  # OpenAI scales larger images down to this anyway; sending more is waste
DEFAULT_PROMPT = "Describe this image."
JPEG_QUALITY = 90
MIME_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
COLUMNS = ("path", "description", "model", "prompt_tokens", "completion_tokens", "error")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
# Greyscale deeper than 8 bits: a plain convert clips every value over 255, so all reads white.
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BITS = 65535 / 255  # I;16 and 16-bit PNGs (opened as I) span 0..65535
_REDUCING_GAP = 3.0  # resize huge images with a fast integer reduce first, then LANCZOS
# Pillow names an in-memory file by its repr ("<_io.BytesIO object at 0x7f...>")
_OBJECT_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")
_REQUEST_STATUSES = frozenset({400, 413, 415, 422})  # what was sent was refused: the image
_OPEN_ERRORS = (
    UnidentifiedImageError,
    Image.DecompressionBombError,
    OSError,
    SyntaxError,
    ValueError,
)
_SHRINK_MARGIN = 0.9  # aim a little under the byte limit so one more pass is rarely needed


class ImageError(InputError):
    """An image file that cannot be sent: missing, unreadable, or undecodable."""

    def __init__(self, source: str | Path, problem: str) -> None:
        super().__init__(str(source), problem)


class EndpointError(retry.HTTPStatusError):
    """A non-2xx answer to a raw HTTP request, judged by the one retry policy (`ftpipe.retry`)."""

    def __init__(
        self, url: str, status: int, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{url} answered HTTP {status}: {message}", status, headers)
        self.url = url
        self.message = message

    @property
    def transient(self) -> bool:
        """Whether a retry may help, by the same rules as every other call."""
        return retry.is_transient(self)

    def __reduce__(self) -> tuple[object, ...]:
        """Rebuild from the constructor's arguments, so the error survives pickling."""
        return (type(self), (self.url, self.status, self.message, self.headers))


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to send; `downscaled` is True when it was re-encoded to fit the limits."""

    path: Path
    mime_type: str
    data_url: str
    width: int
    height: int
    downscaled: bool


@dataclass(frozen=True)
class Description:
    """What the model said about one image, and what it cost in tokens."""

    path: str
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


# --- preparing images -------------------------------------------------------------------------


def prepare_image(
    path: str | Path, *, max_bytes: int = MAX_IMAGE_BYTES, max_side: int = MAX_SIDE
) -> PreparedImage:
    """Read an image, shrinking it (ratio kept, LANCZOS) when over `max_bytes` or `max_side`.

    Files already within the limits in a format the API takes are sent byte for byte; other
    formats Pillow reads (BMP, TIFF, ...) and greyscale deeper than 8 bits are re-encoded as
    JPEG, or PNG when they have alpha. Large images are decoded reduced (JPEG draft) and shrunk.
    """
    path = Path(path)
    _check_file(path)
    file_bytes = path.stat().st_size
    with _large_images_allowed(), _open(path) as image:
        mime = MIME_TYPES.get(image.format or "")
        over = file_bytes > max_bytes or max(image.size) > max_side
        if mime and not over and image.mode not in _WIDE_MODES:
            width, height = image.size
            return PreparedImage(
                path, mime, data_url(mime, path.read_bytes()), width, height, False
            )
        data, mime, (width, height) = _reencode(path, image, max_bytes, max_side)
    return PreparedImage(path, mime, data_url(mime, data), width, height, over)


@contextmanager
def _large_images_allowed() -> Iterator[None]:
    """Images over Pillow's warning limit are opened on purpose and shrunk, so its
    DecompressionBombWarning would only alarm; beyond twice the limit Pillow still refuses."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def data_url(mime_type: str, data: bytes) -> str:
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ImageError(path, "does not exist")
    if not path.is_file():
        raise ImageError(path, "is not a file")


def _open(path: Path) -> Image.Image:
    """Open lazily (header only); anything Pillow cannot identify is an ImageError."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageError(path, f"is refused as a possible decompression bomb ({exc})") from None
    except _OPEN_ERRORS as exc:
        reason = "unrecognised format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ImageError(path, f"is not an image Pillow can read ({reason})") from exc


def _reencode(
    path: Path, image: Image.Image, max_bytes: int, max_side: int
) -> tuple[bytes, str, tuple[int, int]]:
    """(bytes, MIME type, size) of the image fitted to `max_side`, then shrunk under `max_bytes`."""
    try:
        image.draft(None, fit_within(image.size, max_side))  # JPEG: decode at a reduced scale
        frame = _normalised(image)
    except _OPEN_ERRORS as exc:
        raise ImageError(path, f"could not be decoded ({exc})") from exc
    alpha = frame.mode == "RGBA"
    size = fit_within(frame.size, max_side)
    while True:
        resized = frame if size == frame.size else _resized(frame, size)
        data = _encode(resized, alpha)
        if len(data) <= max_bytes or size == (1, 1):
            return data, "image/png" if alpha else "image/jpeg", size
        size = _shrunk(size, len(data), max_bytes)


def _resized(frame: Image.Image, size: tuple[int, int]) -> Image.Image:
    """LANCZOS, after a cheap integer reduce when the image is many times larger."""
    return frame.resize(size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)


def _normalised(image: Image.Image) -> Image.Image:
    """Upright (EXIF orientation applied, since re-encoding drops it) in RGB, RGBA or L."""
    frame = ImageOps.exif_transpose(image)
    if frame.mode in _WIDE_MODES:
        return _eight_bit(frame)
    if frame.mode in _ALPHA_MODES or "transparency" in frame.info:
        return frame.convert("RGBA")
    return frame if frame.mode in ("RGB", "L") else frame.convert("RGB")


def _eight_bit(frame: Image.Image) -> Image.Image:
    """Deep greyscale scaled to L: integers from 16 bits, floats from 0..1 (or 16 bits when
    larger); a plain convert would clip them and describe mid-grey as white."""
    if frame.mode == "F":
        _, high = frame.getextrema()
        scale = 255.0 if float(high) <= 1.0 else 1 / _SIXTEEN_BITS
        return frame.point(lambda value: value * scale).convert("L")
    return frame.convert("I").point(lambda value: value * (1 / _SIXTEEN_BITS)).convert("L")


def _encode(image: Image.Image, alpha: bool) -> bytes:
    """PNG keeps transparency; JPEG is far smaller for photos, which is what most images are."""
    buffer = io.BytesIO()
    if alpha:
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def fit_within(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size with its longest side at most `max_side`, ratio kept: 3000x1000 → 2048x683."""
    width, height = size
    scale = max_side / max(width, height)
    if scale >= 1:
        return size
    return max(1, round(width * scale)), max(1, round(height * scale))


def _shrunk(size: tuple[int, int], encoded: int, max_bytes: int) -> tuple[int, int]:
    """A strictly smaller size whose encoding should fit: bytes grow roughly with pixel count."""
    scale = min(math.sqrt(max_bytes / encoded) * _SHRINK_MARGIN, 0.95)
    width, height = size
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


# --- asking the model -------------------------------------------------------------------------


def image_message(prepared: PreparedImage, prompt: str) -> dict[str, Any]:
    """A user message with the prompt and the image inline, in the Chat Completions shape."""
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": prompt},
            {"type": "image_url", "image_url": {"url": prepared.data_url}},
        ],
    }


def chat_request(
    path: str | Path, prompt: str | None, system_instruction: str | None, model: str
) -> dict[str, Any]:
    """The request body both the SDK and raw HTTP send, so the two paths cannot drift apart."""
    messages = (
        [] if system_instruction is None else [{"role": "system", "content": system_instruction}]
    )
    messages.append(image_message(prepare_image(path), prompt or DEFAULT_PROMPT))
    return {"model": model, "messages": messages}


def describe_image(
    client: openai.OpenAI,
    path: str | Path,
    prompt: str | None = None,
    system_instruction: str | None = None,
    *,
    model: str,
    attempts: int | None = None,
) -> Description:
    """Describe one image through the SDK (its error types), retried by the one policy;
    `attempts` defaults to the client's `max_retries` + 1."""
    body = chat_request(path, prompt, system_instruction, model)
    quiet = retry.no_sdk_retries(client)
    try:
        completion = retry.call(
            lambda: quiet.chat.completions.create(**body),
            attempts or retry.attempts_for(client),
            what=f"describing {path}",
        )
    except openai.APIStatusError as error:
        if error.status_code in _REQUEST_STATUSES:
            raise _naming_file(error, path) from None
        raise
    message = completion.choices[0].message
    usage = completion.usage
    return Description(
        path=str(path),
        text=message.content or message.refusal or "",
        model=completion.model,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )


def describe_image_by_requests(
    base_url: str,
    api_key: str,
    path: str | Path,
    prompt: str | None = None,
    *,
    model: str,
    system_instruction: str | None = None,
    timeout: float = 60.0,
    attempts: int = retry.DEFAULT_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> Description:
    """Describe one image with a plain HTTP POST; EndpointError (a RuntimeError) on non-2xx.

    Retried by the same policy as the SDK calls; the last failure (an EndpointError or httpx's
    own connection error) propagates.
    """
    url = f"{base_url.rstrip('/')}/chat/completions"
    body = chat_request(path, prompt, system_instruction, model)
    headers = {"Authorization": f"Bearer {api_key}"}

    def post() -> httpx.Response:
        response = httpx.post(url, json=body, headers=headers, timeout=timeout)
        if not response.is_success:
            message = _error_message(response)
            if response.status_code in _REQUEST_STATUSES:
                message = _named(message, path)
            raise EndpointError(url, response.status_code, message, response.headers)
        return response

    response = retry.call(post, attempts, what=f"describing {path}", sleep=sleep)
    return _description_from_json(url, str(path), response)


def _named(text: str, path: str | Path) -> str:
    """The endpoint's words about a refused request, naming the user's file: in place of the
    in-memory copy it decoded (`<_io.BytesIO object at 0x...>`), else in front."""
    named = _OBJECT_REPR.sub(lambda _: f"'{path}'", text)
    return named if str(path) in named else f"{path}: {named}"


def _naming_file(error: openai.APIStatusError, path: str | Path) -> openai.APIStatusError:
    """The same API error (type, status, response) with its message naming the image file, so
    the CLI's one line and the facade's error say which file was refused."""
    body = error.body if isinstance(error.body, dict) else {}
    detail = _named(str(body.get("message") or error.message), path)
    message = f"Error code: {error.status_code} - {detail}"
    return type(error)(message, response=error.response, body={**body, "message": detail})


def _error_message(response: httpx.Response) -> str:
    """The `error.message` of OpenAI's error envelope, else the start of the body."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    return response.text[:300].strip() or response.reason_phrase


def _description_from_json(url: str, path: str, response: httpx.Response) -> Description:
    try:
        body = response.json()
        message = body["choices"][0]["message"]
        usage = body.get("usage") or {}
        return Description(
            path=path,
            text=message.get("content") or message.get("refusal") or "",
            model=str(body["model"]),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        problem = f"the answer is not a chat completion ({type(exc).__name__}: {exc})"
        raise EndpointError(url, response.status_code, problem) from exc


def endpoint_and_key(client: openai.OpenAI) -> tuple[str, str]:
    """The client's base URL (no trailing slash) and key, so raw HTTP reaches the same endpoint.

    Azure clients are refused: they use deployment paths and an `api-key` header instead.
    """
    if isinstance(client, openai.AzureOpenAI):
        raise ValueError(
            "raw HTTP requests need an OpenAI-style endpoint; Azure OpenAI uses deployment "
            "URLs and an api-key header, so use describe_image with the SDK client instead"
        )
    return str(client.base_url).rstrip("/"), client.api_key


# --- folders and tables -----------------------------------------------------------------------


def find_images(folder: str | Path, pattern: str = "*", exclude: Path | None = None) -> list[Path]:
    """Image files under `folder` (recursive) matching `pattern`, by suffix, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(str(root), "is not a folder" if root.exists() else "does not exist")
    skip = exclude.resolve() if exclude else None
    found = (
        path
        for path in root.rglob(pattern)
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    return sorted(p for p in found if skip is None or not p.resolve().is_relative_to(skip))


def description_row(description: Description) -> dict[str, Any]:
    return {
        "path": description.path,
        "description": description.text,
        "model": description.model,
        "prompt_tokens": description.prompt_tokens,
        "completion_tokens": description.completion_tokens,
        "error": "",
    }


def error_row(path: str, model: str, error: str) -> dict[str, Any]:
    """A failed image keeps its row, so nothing is silently dropped from the table."""
    return {
        "path": path,
        "description": "",
        "model": model,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "error": error,
    }


def descriptions_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with fixed columns and types, the same for CSV and Parquet."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    text = {name: "str" for name in ("path", "description", "model", "error")}
    return frame.astype({**text, "prompt_tokens": "int64", "completion_tokens": "int64"})


def write_descriptions(rows: Iterable[dict[str, Any]], out_dir: str | Path) -> tuple[Path, Path]:
    """Write `descriptions.csv` and `descriptions.parquet`; returns their paths."""
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    frame = descriptions_frame(rows)
    csv_path, parquet_path = target / "descriptions.csv", target / "descriptions.parquet"
    frame.to_csv(csv_path, index=False)
    frame.to_parquet(parquet_path, index=False)
    return csv_path, parquet_path

"""Image preparation and description, through the SDK and raw HTTP, against the local server."""

from __future__ import annotations

import base64
import logging
import pickle
import re
from io import BytesIO
from pathlib import Path

import numpy as np
import openai
import pandas as pd
import pytest
from PIL import Image

from ftpipe import retry
from ftpipe.client import make_client
from ftpipe.errors import InputError
from ftpipe.local_api.server import RunningServer
from ftpipe.settings import FaultSettings
from ftpipe.vision import (
    MAX_IMAGE_BYTES,
    Description,
    EndpointError,
    ImageError,
    describe_image,
    describe_image_by_requests,
    endpoint_and_key,
    find_images,
    fit_within,
    image_message,
    prepare_image,
    write_descriptions,
)
from tests.conftest import StartServer, strict_client

MODEL = "gpt-4o-mini"


def solid(path: Path, size: tuple[int, int], colour: str, mode: str = "RGB") -> Path:
    Image.new(mode, size, colour).save(path)
    return path


def decoded(data_url: str) -> Image.Image:
    """The image inside a data URL, opened with Pillow."""
    payload = data_url.partition(",")[2]
    return Image.open(BytesIO(base64.b64decode(payload)))


# --- prepare_image ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("a.png", "image/png"),
        ("a.jpg", "image/jpeg"),
        ("a.webp", "image/webp"),
        ("a.gif", "image/gif"),
    ],
)
def test_small_images_are_sent_as_they_are(tmp_path: Path, name: str, mime: str) -> None:
    path = solid(tmp_path / name, (40, 30), "red")
    prepared = prepare_image(path)
    assert prepared.mime_type == mime
    assert prepared.data_url == f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode(
        "ascii"
    )
    assert (prepared.width, prepared.height, prepared.downscaled) == (40, 30, False)
    assert prepared.path == path


def test_the_mime_type_comes_from_the_content_not_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "really-a-jpeg.png"
    Image.new("RGB", (10, 10), "blue").save(path, format="JPEG")
    assert prepare_image(path).mime_type == "image/jpeg"


def test_a_wide_image_is_downscaled_to_2048_keeping_the_ratio(tmp_path: Path) -> None:
    prepared = prepare_image(solid(tmp_path / "wide.png", (3000, 1000), "green"))
    assert (prepared.width, prepared.height, prepared.downscaled) == (2048, 683, True)
    assert prepared.mime_type == "image/jpeg"  # no alpha: re-encoded as a photo
    with decoded(prepared.data_url) as image:
        assert (image.format, image.size) == ("JPEG", (2048, 683))


def test_a_tall_image_with_alpha_stays_png(tmp_path: Path) -> None:
    prepared = prepare_image(solid(tmp_path / "tall.png", (500, 4100), (0, 0, 255, 128), "RGBA"))
    assert (prepared.width, prepared.height, prepared.mime_type) == (250, 2048, "image/png")
    with decoded(prepared.data_url) as image:
        assert image.mode == "RGBA" and image.size == (250, 2048)


def test_fit_within() -> None:
    assert fit_within((3000, 1000), 2048) == (2048, 683)
    assert fit_within((2048, 10), 2048) == (2048, 10)
    assert fit_within((100000, 1), 2048) == (2048, 1)


def test_a_file_over_20_mb_is_downscaled_and_shrinks(tmp_path: Path) -> None:
    """Random noise does not compress: ~22 MB of PNG, which must come out far smaller."""
    noise = np.random.default_rng(0).integers(0, 256, (2700, 2700, 3), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path, compress_level=0)
    assert path.stat().st_size > MAX_IMAGE_BYTES
    prepared = prepare_image(path)
    assert prepared.downscaled and (prepared.width, prepared.height) == (2048, 2048)
    sent = len(base64.b64decode(prepared.data_url.partition(",")[2]))
    assert sent <= MAX_IMAGE_BYTES and sent < path.stat().st_size


def test_the_byte_limit_applies_on_its_own(tmp_path: Path) -> None:
    """Within the side limit but over the byte limit: shrunk until it fits."""
    noise = np.random.default_rng(1).integers(0, 256, (400, 600, 4), dtype=np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise, "RGBA").save(path)
    limit = path.stat().st_size // 4
    prepared = prepare_image(path, max_bytes=limit)
    assert prepared.downscaled and prepared.mime_type == "image/png"
    assert len(base64.b64decode(prepared.data_url.partition(",")[2])) <= limit
    assert prepared.width < 600 and prepared.height < 400
    assert abs(prepared.width / prepared.height - 1.5) < 0.02


def test_formats_the_api_does_not_take_are_reencoded(tmp_path: Path) -> None:
    prepared = prepare_image(solid(tmp_path / "a.bmp", (30, 20), "yellow"))
    assert (prepared.mime_type, prepared.downscaled) == ("image/jpeg", False)
    assert (prepared.width, prepared.height) == (30, 20)


def test_exif_orientation_is_applied_when_reencoding(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.new("RGB", (3000, 1000), "red").save(path, exif=exif)
    prepared = prepare_image(path)
    assert (prepared.width, prepared.height) == (683, 2048)


def test_a_text_file_named_png_is_an_image_error(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("not an image", encoding="utf-8")
    with pytest.raises(ImageError) as caught:
        prepare_image(path)
    assert str(path) in str(caught.value)
    assert "is not an image Pillow can read" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, InputError)


def test_a_missing_file_is_an_image_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.jpg"
    with pytest.raises(ImageError, match=re.escape("missing.jpg: does not exist")):
        prepare_image(path)
    with pytest.raises(ImageError, match="is not a file"):
        prepare_image(tmp_path)


def test_image_error_survives_pickling(tmp_path: Path) -> None:
    error = ImageError(tmp_path / "x.png", "does not exist")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ImageError and str(copy) == str(error)
    endpoint = pickle.loads(pickle.dumps(EndpointError("http://h/v1", 429, "slow down")))
    assert endpoint.status == 429 and endpoint.transient and str(endpoint).endswith("slow down")


def test_image_message_shape(tmp_path: Path) -> None:
    prepared = prepare_image(solid(tmp_path / "a.png", (4, 4), "red"))
    assert image_message(prepared, "What is it?") == {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is it?"},
            {"type": "image_url", "image_url": {"url": prepared.data_url}},
        ],
    }


# --- describing -------------------------------------------------------------------------------


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Path]:
    return {
        "png": solid(tmp_path / "red.png", (64, 48), "red"),
        "jpeg": solid(tmp_path / "blue.jpg", (80, 60), "blue"),
    }


@pytest.mark.parametrize(
    ("kind", "size", "colour"), [("png", "64x48", "red"), ("jpeg", "80x60", "blue")]
)
def test_describe_image_through_the_sdk(
    server: RunningServer, images: dict[str, Path], kind: str, size: str, colour: str
) -> None:
    described = describe_image(strict_client(server.base_url), images[kind], model=MODEL)
    assert size in described.text and colour in described.text
    assert described.text.count(kind.upper()) == 1
    assert described.path == str(images[kind])
    assert described.model.startswith(MODEL)
    assert described.prompt_tokens > 85 and described.completion_tokens > 0
    assert "Describe this image." in described.text  # the default prompt was sent


@pytest.mark.parametrize(
    ("kind", "size", "colour"), [("png", "64x48", "red"), ("jpeg", "80x60", "blue")]
)
def test_describe_image_by_raw_http(
    server: RunningServer, images: dict[str, Path], kind: str, size: str, colour: str
) -> None:
    base_url, key = endpoint_and_key(strict_client(server.base_url))
    described = describe_image_by_requests(
        base_url, key, images[kind], "What colour is it?", model=MODEL
    )
    assert size in described.text and colour in described.text
    assert "What colour is it?" in described.text
    assert described.model.startswith(MODEL)
    assert described.prompt_tokens > 85 and described.completion_tokens > 0


def test_sdk_and_raw_http_agree(server: RunningServer, images: dict[str, Path]) -> None:
    client = strict_client(server.base_url)
    by_sdk = describe_image(client, images["png"], "Hm?", "Be brief.", model=MODEL)
    by_http = describe_image_by_requests(
        *endpoint_and_key(client), images["png"], "Hm?", model=MODEL, system_instruction="Be brief."
    )
    assert by_sdk == by_http
    assert "Be brief." in by_sdk.text


def test_describe_image_with_the_default_client(images: dict[str, Path]) -> None:
    """No key configured: make_client starts the embedded server, and both paths reach it."""
    client = make_client()
    described = describe_image(client, images["jpeg"], model=MODEL)
    assert "80x60" in described.text and "blue" in described.text
    raw = describe_image_by_requests(*endpoint_and_key(client), images["jpeg"], model=MODEL)
    assert raw == described


def test_endpoint_and_key() -> None:
    client = openai.OpenAI(api_key="sk-abc", base_url="http://127.0.0.1:9/v1/")
    assert endpoint_and_key(client) == ("http://127.0.0.1:9/v1", "sk-abc")
    azure = openai.AzureOpenAI(
        api_key="k", azure_endpoint="https://example.invalid", api_version="2025-04-01-preview"
    )
    with pytest.raises(ValueError, match="Azure"):
        endpoint_and_key(azure)


def test_raw_http_errors_name_the_status_and_message(
    server: RunningServer, images: dict[str, Path]
) -> None:
    with pytest.raises(EndpointError) as caught:
        describe_image_by_requests(server.base_url, "k", images["png"], model="no-such-model")
    error = caught.value
    assert error.status == 404 and not error.transient
    assert "HTTP 404" in str(error) and "no-such-model" in str(error)
    assert str(error).startswith(f"{server.base_url}/chat/completions")


def test_raw_http_refused_key(start_server: StartServer, images: dict[str, Path]) -> None:
    running = start_server(api_key="right-key")
    with pytest.raises(EndpointError) as caught:
        describe_image_by_requests(running.base_url, "wrong-key", images["png"], model=MODEL)
    assert caught.value.status == 401


@pytest.mark.parametrize("how", ["raw HTTP", "SDK"])
def test_both_paths_are_retried_by_the_one_policy(
    start_server: StartServer,
    images: dict[str, Path],
    caplog: pytest.LogCaptureFixture,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Injected 429s (with a retry-after) and 500s are got past on both paths alike."""
    monkeypatch.setattr(retry, "INITIAL_BACKOFF_S", 0.001)
    monkeypatch.setattr(retry, "MAX_BACKOFF_S", 0.01)
    faults = FaultSettings(rate_429=0.3, rate_500=0.2, seed=4, retry_after_s=0.001)
    running = start_server(faults=faults)
    client = strict_client(running.base_url)  # max_retries=0: only the policy retries

    def describe(path: Path) -> Description:
        if how == "SDK":
            return describe_image(client, path, model=MODEL, attempts=10)
        return describe_image_by_requests(
            running.base_url, "k", path, model=MODEL, attempts=10, sleep=lambda _: None
        )

    with caplog.at_level(logging.INFO, logger="ftpipe"):
        described = [describe(images[name]) for name in ("png", "jpeg") * 4]
    assert all(d.text for d in described)
    assert "retrying in" in caplog.text


def test_raw_http_gives_up_after_its_attempts(
    start_server: StartServer, images: dict[str, Path]
) -> None:
    running = start_server(faults=FaultSettings(rate_500=1.0))
    waits: list[float] = []
    with pytest.raises(EndpointError) as caught:
        describe_image_by_requests(
            running.base_url, "k", images["png"], model=MODEL, attempts=3, sleep=waits.append
        )
    assert caught.value.status == 500 and caught.value.transient
    assert len(waits) == 2  # three tries, two waits between them


def test_sdk_errors_for_an_unreadable_image_are_raised_before_any_request(
    tmp_path: Path,
) -> None:
    client = openai.OpenAI(api_key="k", base_url="http://127.0.0.1:9/v1", max_retries=0)
    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ImageError, match=re.escape(str(bad))):
        describe_image(client, bad, model=MODEL)


# --- folders and tables -----------------------------------------------------------------------


def test_find_images_is_recursive_case_insensitive_and_sorted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "out").mkdir()
    for name in ("b.PNG", "a.jpeg", "sub/c.Jpg", "sub/d.webp", "e.gif", "out/f.png", "g.txt"):
        (tmp_path / name).write_bytes(b"")
    found = find_images(tmp_path, exclude=tmp_path / "out")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.jpeg",
        "b.PNG",
        "e.gif",
        "sub/c.Jpg",
        "sub/d.webp",
    ]
    assert [p.name for p in find_images(tmp_path, "[ab]*")] == ["a.jpeg", "b.PNG"]
    with pytest.raises(InputError, match="does not exist"):
        find_images(tmp_path / "nowhere")


def test_write_descriptions_empty_table_keeps_columns(tmp_path: Path) -> None:
    csv_path, parquet_path = write_descriptions([], tmp_path)
    assert list(pd.read_csv(csv_path).columns) == list(pd.read_parquet(parquet_path).columns)
    assert "error" in pd.read_parquet(parquet_path).columns

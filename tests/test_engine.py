"""The local server's reply engine: nearest trained example, deterministic echo, pixel facts."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from PIL import Image

from ftpipe.local_api.engine import (
    TrainedReplies,
    base_reply,
    decode_data_url,
    describe_image_bytes,
    image_tokens,
)


def _line(*turns: tuple[str, Any], **assistant_extra: Any) -> str:
    """One chat-format JSONL line; extra keys (e.g. weight) go on the last assistant turn."""
    messages = [{"role": role, "content": content} for role, content in turns]
    messages[-1].update(assistant_extra)
    return json.dumps({"messages": messages})


def _user(text: str, system: str | None = None) -> list[dict[str, Any]]:
    """A request whose last user turn is `text`."""
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": text}]


def _image(
    size: tuple[int, int], fmt: str, halves: tuple[str, str] = ("red", "white"), left: float = 0.5
) -> bytes:
    """An image whose left `left` share is `halves[0]` and the rest `halves[1]`."""
    width, height = size
    image = Image.new("RGB", size, halves[1])
    image.paste(halves[0], (0, 0, round(width * left), height))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _data_url(data: bytes, mime: str = "image/png") -> str:
    """A base64 data URL, as clients send inline images."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


@pytest.fixture(scope="module")
def geography() -> TrainedReplies:
    """A small training set with capitals, a repeated reply and a weight-0 turn."""
    lines = [
        _line(
            ("system", "You are a geography tutor."),
            ("user", "What is the capital of France?"),
            ("assistant", "Paris."),
        ),
        _line(("user", "What is the capital of Germany?"), ("assistant", "Berlin.")),
        _line(("user", "Tell me a joke"), ("assistant", "I only know geography.")),
        _line(("user", "Sing a song"), ("assistant", "I only know geography.")),
        _line(("user", "What is the capital of Italy?"), ("assistant", "Milan."), weight=0),
        _line(
            ("user", "Name a large ocean"),
            ("assistant", "The Pacific."),
            ("user", "And the second largest ocean?"),
            ("assistant", "The Atlantic."),
        ),
        "",
    ]
    return TrainedReplies.from_jsonl(line.encode() for line in lines)


# --- fine-tuned models -----------------------------------------------------------------------


def test_exact_prompt_answers_its_reply(geography: TrainedReplies) -> None:
    assert geography.reply(_user("  what IS the capital of   germany? ")) == "Berlin."


def test_reworded_prompt_finds_the_right_example(geography: TrainedReplies) -> None:
    assert geography.reply(_user("what's the capital city of france")) == "Paris."
    assert geography.reply(_user("capital of germany please")) == "Berlin."


def test_unrelated_prompt_gets_the_most_common_reply(geography: TrainedReplies) -> None:
    assert geography.reply(_user("quantum chromodynamics")) == "I only know geography."
    assert geography.reply([]) == "I only know geography."


def test_weight_zero_turns_are_not_learned(geography: TrainedReplies) -> None:
    assert geography.reply(_user("What is the capital of Italy?")) != "Milan."
    assert len(geography) == 6


def test_every_turn_of_a_multi_turn_example_is_learned(geography: TrainedReplies) -> None:
    assert geography.reply(_user("name a large ocean")) == "The Pacific."
    assert geography.reply(_user("the second largest ocean")) == "The Atlantic."


def test_only_the_last_user_turn_of_the_request_counts(geography: TrainedReplies) -> None:
    request = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": [{"type": "text", "text": "And of Germany?"}]},
    ]
    assert geography.reply(request) == "Berlin."


def test_system_prompt_breaks_ties_between_equal_prompts() -> None:
    replies = TrainedReplies.from_jsonl(
        [
            _line(("system", "You are a pirate."), ("user", "Hello"), ("assistant", "Ahoy!")),
            _line(
                ("system", "You are a butler."), ("user", "Hello"), ("assistant", "Good evening.")
            ),
        ]
    )
    assert replies.reply(_user("hello", system="Talk like a butler")) == "Good evening."
    assert replies.reply(_user("hello", system="Talk like a pirate")) == "Ahoy!"
    assert replies.reply(_user("hello")) == "Ahoy!"  # no context: the earliest example


def test_content_parts_are_read_as_text() -> None:
    parts = [{"type": "text", "text": "Favourite"}, {"type": "text", "text": "colour?"}]
    replies = TrainedReplies.from_jsonl(
        [
            _line(("user", parts), ("assistant", [{"type": "text", "text": "Blue."}])),
            _line(("user", "Favourite food?"), ("assistant", "Soup.")),
        ]
    )
    assert replies.reply(_user("favourite colour?")) == "Blue."


def test_bad_training_files_are_refused_with_the_line() -> None:
    with pytest.raises(ValueError, match="line 2"):
        TrainedReplies.from_jsonl([_line(("user", "a"), ("assistant", "b")), "{not json"])
    with pytest.raises(ValueError, match="non-zero weight"):
        TrainedReplies.from_jsonl([_line(("user", "a"), ("assistant", "b"), weight=0)])


# --- base models -----------------------------------------------------------------------------


def test_base_reply_is_deterministic_and_says_what_it_is() -> None:
    request = _user("Summarise " + "word " * 100, system="Be terse.")
    first = base_reply("gpt-4o-mini", request)
    assert first == base_reply("gpt-4o-mini", request)
    assert first.startswith("(local stand-in for gpt-4o-mini) ")
    assert "System instruction received" in first and "Be terse." in first
    assert "You asked: Summarise word" in first
    assert len(first) < 350


def test_base_reply_without_user_text() -> None:
    assert base_reply("m", []) == "(local stand-in for m) No user message was given."


def test_base_reply_describes_images_before_the_text() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": _data_url(_image((8, 4), "PNG", left=0.75))}},
    ]
    reply = base_reply("gpt-4o", [{"role": "user", "content": content}])
    assert reply == (
        "(local stand-in for gpt-4o) An 8x4 PNG image (RGB). "
        "Dominant colours: red 75%, white 25%. You asked: What is this?"
    )


def test_base_reply_refuses_remote_images() -> None:
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(ValueError, match="not fetched"):
        base_reply("gpt-4o", [{"role": "user", "content": content}])


# --- images ----------------------------------------------------------------------------------


def _shares(description: str) -> dict[str, int]:
    """{'red': 50, ...} parsed from a description's "Dominant colours: ..." sentence."""
    listed = description.split("Dominant colours: ")[1].rstrip(".").split(", ")
    return {name: int(share.strip("<%")) for name, share in (p.rsplit(" ", 1) for p in listed)}


def test_png_description_reports_colour_shares() -> None:
    text = describe_image_bytes(_image((64, 32), "PNG", left=0.75))
    assert text == "A 64x32 PNG image (RGB). Dominant colours: red 75%, white 25%."


def test_half_red_half_white_is_half_each() -> None:
    text = describe_image_bytes(_image((200, 100), "PNG"))
    assert text.startswith("A 200x100 PNG image (RGB). Dominant colours: ")
    assert _shares(text) == {"red": 50, "white": 50}


def test_large_jpeg_is_downscaled_and_still_described() -> None:
    text = describe_image_bytes(_image((1000, 500), "JPEG", halves=("navy", "yellow")))
    assert text.startswith("A 1000x500 JPEG image (RGB). Dominant colours: ")
    shares = _shares(text)
    assert {"navy", "yellow"} <= shares.keys()
    assert all(abs(shares[colour] - 50) <= 3 for colour in ("navy", "yellow"))


def test_transparent_pixels_are_counted_apart() -> None:
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 4, 1))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    text = describe_image_bytes(buffer.getvalue())
    assert text == "A 4x4 PNG image (RGBA). Dominant colours: transparent 75%, blue 25%."


def test_unreadable_bytes_are_not_an_image() -> None:
    with pytest.raises(ValueError, match="is not a readable image"):
        describe_image_bytes(b"plain text, not pixels")


def test_data_url_round_trip() -> None:
    assert decode_data_url("data:Image/PNG;base64,aGk=") == ("image/png", b"hi")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/a.png", "not fetched by the offline"),
        ("data:image/png,rawbytes", "only base64"),
        ("data:image/png;base64,@@not base64@@", "not valid base64"),
        ("file.png", "data:<mime>;base64"),
    ],
)
def test_data_url_errors_are_clear(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_data_url(url)


# --- vision tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        (1024, 1024, "high", 765),
        (2048, 4096, "high", 1105),
        (2048, 4096, "low", 85),
        (512, 512, "auto", 255),
        (100, 100, "high", 255),
        (4096, 1024, "auto", 765),
    ],
)
def test_image_tokens_follow_openai_rule(width: int, height: int, detail: str, tokens: int) -> None:
    assert image_tokens(width, height, detail) == tokens

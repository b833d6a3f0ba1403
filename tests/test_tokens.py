"""Token counts against known ids and OpenAI's per-example counting rule."""

from __future__ import annotations

import pytest

from ftpipe import tokens

SAMPLE = "Grüße aus Köln! 東京へ行きます。  def f(x):\n    return x ** 2\n\n1234567 🙂"


@pytest.mark.parametrize(
    ("name", "ids"),
    [("o200k_base", [24912, 2375]), ("cl100k_base", [15339, 1917])],
)
def test_known_ids(name: str, ids: list[int]) -> None:
    assert tokens.get_encoding(name).encode_ordinary("hello world") == ids


def test_get_encoding_is_cached_and_rejects_unknown_names() -> None:
    assert tokens.get_encoding("o200k_base") is tokens.get_encoding("o200k_base")
    with pytest.raises(ValueError, match="gpt2"):
        tokens.get_encoding("gpt2")


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("gpt-3.5-turbo-0613", "cl100k_base"),
        ("no-such-model", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str, name: str) -> None:
    assert tokens.encoding_for_model(model).name == name


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_matches_bpe_openai_encoder(name: str) -> None:
    from bpe_openai import get_encoding  # imported after ftpipe.tokens, which quiets its warnings

    expected = get_encoding(name).encode(SAMPLE)
    assert tokens.get_encoding(name).encode_ordinary(SAMPLE) == expected
    assert tokens.get_encoding(name).decode(expected) == SAMPLE


def test_count_tokens() -> None:
    assert tokens.count_tokens("hello world") == 2
    assert tokens.count_tokens("hello world", "gpt-3.5-turbo") == 2
    assert tokens.count_tokens("") == 0


def test_special_token_text_counts_as_ordinary_text() -> None:
    assert tokens.count_tokens("<|endoftext|>") > 1


def test_count_batch_matches_single_counts() -> None:
    texts = ["hello world", "", SAMPLE, "<|endoftext|>"] * 10
    for model in ("gpt-4o-mini", "gpt-3.5-turbo"):
        assert tokens.count_batch(texts, model) == [tokens.count_tokens(t, model) for t in texts]


def test_message_tokens_by_hand() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "name": "ann", "content": "Hi there"},
        {"role": "assistant", "content": "Hello.", "weight": 1},
    ]
    c = tokens.count_tokens
    expected = (
        3 + c("system") + c("You are terse.")
        + 3 + c("user") + c("ann") + 1 + c("Hi there")
        + 3 + c("assistant") + c("Hello.")
        + 3
    )  # fmt: skip
    assert tokens.count_message_tokens(messages, "gpt-4o-mini") == expected


def test_message_tokens_uses_the_models_encoding() -> None:
    messages = [{"role": "user", "content": SAMPLE}]
    for model in ("gpt-4o-mini", "gpt-3.5-turbo-0613"):
        expected = 3 + tokens.count_tokens("user", model) + tokens.count_tokens(SAMPLE, model) + 3
        assert tokens.count_message_tokens(messages, model) == expected


def test_message_tokens_with_content_parts_and_null_content() -> None:
    c = tokens.count_tokens
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Be brief."},
    ]
    messages = [{"role": "user", "content": parts}, {"role": "assistant", "content": None}]
    expected = 3 + c("user") + c("What is this?") + c("Be brief.") + 3 + c("assistant") + 3
    assert tokens.count_message_tokens(messages, "gpt-4o-mini") == expected


def test_message_tokens_count_call_names_and_arguments() -> None:
    c = tokens.count_tokens
    call = {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    tool_call = {"id": "call_1", "type": "function", "function": call}
    messages = [
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
    ]
    expected = (
        3 + c("assistant") + c("get_weather") + c('{"city": "Oslo"}')
        + 3 + c("tool") + c("call_1") + c("12 C")
        + 3
    )  # fmt: skip
    assert tokens.count_message_tokens(messages, "gpt-4o-mini") == expected


def test_empty_example_is_just_the_reply_primer() -> None:
    assert tokens.count_message_tokens([], "gpt-4o-mini") == 3


def test_truncate_to_tokens() -> None:
    text = "one two three four five"
    assert tokens.truncate_to_tokens(text, 2, "gpt-4o-mini") == "one two"
    assert tokens.truncate_to_tokens(text, 100, "gpt-4o-mini") == text
    assert tokens.truncate_to_tokens(text, 0, "gpt-4o-mini") == ""
    cut = tokens.truncate_to_tokens(SAMPLE, 7, "gpt-3.5-turbo")
    assert SAMPLE.startswith(cut.rstrip("\ufffd"))
    with pytest.raises(ValueError):
        tokens.truncate_to_tokens(text, -1, "gpt-4o-mini")

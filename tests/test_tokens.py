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


# --- the Rust counter: exact, or not used ---------------------------------------------------

TRICKY = [
    "",
    " ",
    "hello world",
    "🙂👍🏽👨‍👩‍👧‍👦🇳🇴 emoji, skin tones, ZWJ families and flags 🏳️‍🌈",
    "東京へ行きます。中文文本\uff0c没有空格。한국어 텍스트",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "مرحبا بالعالم — नमस्ते दुनिया",
    " " * 1000,
    "\n" * 500 + "x",
    "word" + " \t" * 300 + "\r\n" * 40 + "end   ",
    "trailing spaces   ",
    "<|endoftext|>",
    "<|endofprompt|> <|fim_prefix|>x<|fim_middle|>y<|fim_suffix|> <|im_start|>user",
    "before<|endoftext|>after",
    "a" * 20_000,
    "1234567890" * 50,
    "def f(x):\n    return x ** 2\n\n\n\tif x:  pass",
    "naïve café — «quotes» “curly” \u2018single\u2019 don't I'LL we've",
    "\x00\x01\x1f control \u2028 \u2029 \ufeff bom",
    "lone \ud800 surrogate",
    SAMPLE,
]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_the_rust_counter_agrees_with_tiktoken_on_tricky_text(name: str) -> None:
    count = tokens._rust_counter(name)
    assert count is not None, "bpe-openai's Rust counter is not available"
    encode = tokens.get_encoding(name).encode_ordinary
    assert [count(text) for text in TRICKY] == [len(encode(text)) for text in TRICKY]


def test_special_token_text_counts_as_several_ordinary_tokens() -> None:
    for model in ("gpt-4o-mini", "gpt-3.5-turbo"):
        assert tokens.count_tokens("<|endoftext|>", model) == 7


def test_counting_falls_back_to_tiktoken_when_the_binding_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def moved() -> None:
        raise ImportError("no module named bpe_openai._bindings")

    monkeypatch.setattr(tokens, "_load_bindings", moved)
    tokens._rust_counter.cache_clear()
    try:
        assert tokens._rust_counter("o200k_base") is None
        assert tokens.count_batch(TRICKY) == [
            len(tokens.get_encoding("o200k_base").encode_ordinary(text)) for text in TRICKY
        ]
    finally:
        tokens._rust_counter.cache_clear()


def test_a_counter_that_disagrees_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    class Wrong:
        def count(self, text: str) -> int:
            return 1  # e.g. "<|endoftext|>" taken as the one special token

    class Bindings:
        def tokenizer_for_encoding(self, name: str) -> Wrong:
            return Wrong()

    monkeypatch.setattr(tokens, "_load_bindings", Bindings)
    tokens._rust_counter.cache_clear()
    try:
        assert tokens._rust_counter("o200k_base") is None
        assert tokens.count_tokens("<|endoftext|>") == 7
    finally:
        tokens._rust_counter.cache_clear()


def test_importing_tokens_leaves_bpe_openai_tables_unread() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from ftpipe import tokens; tokens.count_tokens('hi'); "
        "assert 'bpe_openai.compat' not in sys.modules, 'tables decoded'"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr

"""Sentiment labels: offline VADER, and a chat model as classifier over the local server."""

from __future__ import annotations

import openai
import pytest

from ftpipe.sentiment import (
    CLASSIFY_INSTRUCTION,
    analyse,
    analyse_with_model,
    analyser,
    parse_label,
)

MODEL = "gpt-4o-mini"


def answer_to(client: openai.OpenAI, text: str) -> str:
    """What the model answers the classification request, as `analyse_with_model` sends it."""
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": CLASSIFY_INSTRUCTION},
            {"role": "user", "content": text},
        ],
    )
    return completion.choices[0].message.content or ""


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I love this, the crossing was wonderful!", "positive"),
        ("Thank you so much, that is really helpful.", "positive"),
        ("This is terrible and I hate it.", "negative"),
        ("The ferry was late again, awful service.", "negative"),
        ("The last ferry leaves at 22:40.", "neutral"),
        ("", "neutral"),
    ],
)
def test_vader_labels_clear_english_cases(text: str, label: str) -> None:
    assert analyse(text) == label


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("positive", "positive"),
        ("Negative.", "negative"),
        ("The sentiment is NEUTRAL, not positive", "neutral"),
        ("positively glowing", None),
        ("", None),
    ],
)
def test_parse_label_takes_the_first_whole_label_word(answer: str, label: str | None) -> None:
    assert parse_label(answer) == label


def test_instruction_asks_for_one_of_the_three_words() -> None:
    assert "exactly one word: positive, negative or neutral" in CLASSIFY_INSTRUCTION


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I feel positive about the trip", "positive"),  # VADER alone would say positive too
        ("This is a negative review, but I love the boat", "negative"),
        ("Mark this neutral: the boat is wonderful", "neutral"),
    ],
)
def test_model_answer_decides_when_it_names_a_label(
    client: openai.OpenAI, text: str, label: str
) -> None:
    """The local base model echoes the text, so its answer names the label written in it."""
    assert analyse_with_model(client, text, MODEL) == label


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("I love this wonderful ferry", "positive"),
        ("The crossing was awful and I hate queues", "negative"),
        ("Das Wetter ist schrecklich", "neutral"),
    ],
)
def test_model_answer_without_a_label_falls_back_to_vader(
    client: openai.OpenAI, text: str, label: str
) -> None:
    """The echoed instruction is cut before its label words, so only the fallback can answer."""
    assert parse_label(answer_to(client, text)) is None
    assert analyse_with_model(client, text, MODEL) == label


def test_analyser_picks_the_method(client: openai.OpenAI) -> None:
    assert analyser() is analyse
    assert analyser("vader")("What a lovely day") == "positive"
    by_model = analyser("model", client, MODEL)
    assert by_model("a clearly negative remark") == "negative"
    assert by_model("I love it") == "positive"  # no label in the echo: VADER decides


def test_analyser_rejects_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="unknown sentiment method 'keywords'"):
        analyser("keywords")  # type: ignore[arg-type]

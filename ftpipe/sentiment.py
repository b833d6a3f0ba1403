"""Sentiment labels for chat replies: offline VADER, or the chat model itself as a classifier.

The labels are the ones dialogue logs carry ("positive", "negative", "neutral"), so a saved
exchange can later be filtered by sentiment when dialogues are turned into training data.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Literal, cast

import openai
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from ftpipe.settings import get_settings

Sentiment = Literal["positive", "negative", "neutral"]
Method = Literal["vader", "model"]

POSITIVE_FROM = 0.05  # VADER's own recommended thresholds on the compound score
NEGATIVE_FROM = -0.05
# The label words come late, so a model that echoes a shortened instruction is not misread.
CLASSIFY_INSTRUCTION = (
    "You classify the sentiment of the text the user sends, whatever language it is written "
    "in. Answer with exactly one word: positive, negative or neutral."
)
_LABEL = re.compile(r"\b(positive|negative|neutral)\b", re.IGNORECASE)


@cache
def _vader() -> SentimentIntensityAnalyzer:
    """One analyser per process: building it loads the lexicon from disk."""
    return SentimentIntensityAnalyzer()


def analyse(text: str) -> Sentiment:
    """Offline label from VADER's compound score (English lexicon; other languages read neutral)."""
    compound = _vader().polarity_scores(text)["compound"]
    if compound >= POSITIVE_FROM:
        return "positive"
    if compound <= NEGATIVE_FROM:
        return "negative"
    return "neutral"


def analyse_with_model(client: openai.OpenAI, text: str, model: str) -> Sentiment:
    """Ask `model` for the label (works in any language the model reads); when its answer names
    no label, fall back to offline VADER on `text` rather than fail."""
    completion = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": CLASSIFY_INSTRUCTION},
            {"role": "user", "content": text},
        ],
        temperature=0,
    )
    answer = completion.choices[0].message.content if completion.choices else None
    return parse_label(answer or "") or analyse(text)


def parse_label(answer: str) -> Sentiment | None:
    """The first label word in a model's answer, any case; None when there is none."""
    found = _LABEL.search(answer)
    return cast(Sentiment, found.group(1).lower()) if found else None


def analyser(
    method: Method = "vader",
    client: openai.OpenAI | None = None,
    model: str | None = None,
) -> Callable[[str], Sentiment]:
    """A text-to-label function for `chat.ask`; "model" defaults to the configured client and
    default model."""
    if method == "vader":
        return analyse
    if method == "model":
        chosen_client = client or _default_client()
        chosen_model = model or get_settings().default_model
        return lambda text: analyse_with_model(chosen_client, text, chosen_model)
    raise ValueError(f"unknown sentiment method {method!r}; expected 'vader' or 'model'")


def _default_client() -> openai.OpenAI:
    """Imported late: building a client may start the embedded local server."""
    from ftpipe.client import make_client

    return make_client()

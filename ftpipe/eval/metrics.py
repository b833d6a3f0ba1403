"""Per-example and corpus scores for comparing a model's replies with reference replies.

Free-text scores (exact, normalized, token F1) suit any reply; when the references come from a
small closed set of labels, the replies are also scored as a classification (accuracy, macro-F1).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

OTHER = "(other)"


def normalize(text: str) -> str:
    """Text as compared: case, punctuation and spacing differences are not a model's error."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 for the same reply; surrounding whitespace is how a chat API pads, not what it says."""
    return 1.0 if prediction.strip() == reference.strip() else 0.0


def normalized_match(prediction: str, reference: str) -> float:
    """1.0 when the replies differ only in case, punctuation or spacing."""
    return 1.0 if normalize(prediction) == normalize(reference) else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """Partial credit for long replies (SQuAD-style): overlap of the normalized word multisets."""
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not predicted or not expected:
        return 1.0 if predicted == expected else 0.0
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def closed_label_set(
    references: Sequence[str], *, max_labels: int = 20, max_words: int = 4
) -> list[str] | None:
    """The labels, when the replies are a classification; None when they are free text.

    Closed: at least 2 references, each a short non-empty phrase, and few distinct values
    (at most `max_labels`, and on average at least two examples per label).
    """
    if len(references) < 2:
        return None
    normalized = [normalize(reference) for reference in references]
    if any(not text or len(text.split()) > max_words for text in normalized):
        return None
    distinct = set(normalized)
    if len(distinct) > max_labels or len(distinct) > len(references) / 2:
        return None
    return sorted(distinct)


def to_label(prediction: str, labels: Sequence[str]) -> str | None:
    """The label a free-text reply names, so "Positive sentiment." counts as "positive".

    `labels` are normalized; a label counts when the reply is it or starts with it as whole
    words (the longest such label wins); None when the reply names no label.
    """
    text = normalize(prediction)
    if text in labels:
        return text
    prefixes = [label for label in labels if label and text.startswith(label + " ")]
    return max(prefixes, key=len, default=None)


@dataclass(frozen=True)
class Classification:
    """Replies scored as labels; `labels` is the confusion axis (OTHER last when present).

    `per_label_f1` holds the given labels that count toward `macro_f1` (a label that is neither
    a reference nor a prediction has no F1 and is left out).
    """

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_label_f1: dict[str, float]
    confusion: list[list[int]]


def _check_pair(predictions: Sequence[str], references: Sequence[str]) -> None:
    """Scores pair each prediction with its reference, so the two must line up."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "each prediction needs its reference"
        )
    if not references:
        raise ValueError("no examples to score: predictions and references are empty")


def _check_labels(labels: Sequence[str]) -> list[str]:
    """Labels must be distinct and normalized, or no reply could ever match them."""
    if not labels:
        raise ValueError("no labels to classify into")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat: {list(labels)}")
    odd = [label for label in labels if not label or normalize(label) != label]
    if odd:
        raise ValueError(f"labels must be normalized and non-empty (see normalize()): {odd}")
    return list(labels)


def _label_f1(tp: int, fp: int, fn: int) -> float:
    """Harmonic mean of precision and recall, 2tp / (2tp + fp + fn); 0 when tp is 0."""
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def _per_label_f1(
    predicted_labels: Sequence[str], reference_labels: Sequence[str], labels: Sequence[str]
) -> dict[str, float]:
    """F1 of each label that occurs (tp + fp + fn > 0); an absent label has no F1."""
    predicted, expected = Counter(predicted_labels), Counter(reference_labels)
    hits = Counter(p for p, r in zip(predicted_labels, reference_labels, strict=True) if p == r)
    scores = {}
    for label in labels:
        tp = hits[label]
        fp, fn = predicted[label] - tp, expected[label] - tp
        if tp + fp + fn:
            scores[label] = _label_f1(tp, fp, fn)
    return scores


def macro_f1_of(
    predicted_labels: Sequence[str], reference_labels: Sequence[str], labels: Sequence[str]
) -> float:
    """Unweighted mean F1 over `labels`, so a rare label counts as much as a common one.

    Predictions outside `labels` (OTHER) only cost recall; 0.0 when no label occurs at all.
    """
    _check_pair(predicted_labels, reference_labels)
    scores = _per_label_f1(predicted_labels, reference_labels, labels)
    return sum(scores.values()) / len(scores) if scores else 0.0


class _MacroF1:
    """Macro-F1 over resampled indices, with a vectorised path for the bootstrap."""

    def __init__(
        self,
        predicted_labels: Sequence[str],
        reference_labels: Sequence[str],
        labels: Sequence[str],
    ) -> None:
        _check_pair(predicted_labels, reference_labels)
        index = {label: code for code, label in enumerate(labels)}
        self.width = len(index) + 1  # the last code: any label outside `labels`
        outside = len(index)
        self.predicted = np.array([index.get(p, outside) for p in predicted_labels])
        self.expected = np.array([index.get(r, outside) for r in reference_labels])

    def __call__(self, indices: np.ndarray) -> float:
        return float(self.batched(np.asarray(indices)[np.newaxis, :])[0])

    def _counts(self, shifted: np.ndarray, rows: int) -> np.ndarray:
        """Per row, how often each label occurs; `shifted` codes sit in their row's own bins."""
        bins = np.bincount(shifted.ravel(), minlength=rows * self.width)
        return bins.reshape(rows, self.width)[:, :-1]

    def batched(self, indices: np.ndarray) -> np.ndarray:
        rows = indices.shape[0]
        offsets = np.arange(rows)[:, np.newaxis] * self.width
        predicted, expected = self.predicted[indices], self.expected[indices]
        tp = self._counts((expected + offsets)[predicted == expected], rows)
        # 2tp + fp + fn is the label's predicted count plus its reference count
        total = self._counts(predicted + offsets, rows) + self._counts(expected + offsets, rows)
        active = total > 0
        f1 = np.where(active, 2 * tp / np.maximum(total, 1), 0.0)
        return f1.sum(axis=1) / np.maximum(active.sum(axis=1), 1)


def macro_f1_statistic(
    predicted_labels: Sequence[str], reference_labels: Sequence[str], labels: Sequence[str]
) -> Callable[[np.ndarray], float]:
    """`macro_f1_of` as a bootstrap statistic of indices, with a fast `batched` path."""
    return _MacroF1(predicted_labels, reference_labels, labels)


def classify(
    predictions: Sequence[str], references: Sequence[str], labels: Sequence[str]
) -> Classification:
    """Score replies as labels when the references are a closed set (see `closed_label_set`)."""
    _check_pair(predictions, references)
    axis = _check_labels(labels)
    expected = [normalize(reference) for reference in references]
    unknown = sorted(set(expected) - set(axis))
    if unknown:
        raise ValueError(f"references not among the labels {axis}: {unknown[:5]}")
    predicted = [to_label(prediction, axis) or OTHER for prediction in predictions]
    if OTHER in predicted:
        axis.append(OTHER)
    position = {label: i for i, label in enumerate(axis)}
    confusion = [[0] * len(axis) for _ in axis]
    for p, r in zip(predicted, expected, strict=True):
        confusion[position[r]][position[p]] += 1
    return Classification(
        labels=axis,
        accuracy=sum(p == r for p, r in zip(predicted, expected, strict=True)) / len(expected),
        macro_f1=macro_f1_of(predicted, expected, labels),
        per_label_f1=_per_label_f1(predicted, expected, labels),
        confusion=confusion,
    )

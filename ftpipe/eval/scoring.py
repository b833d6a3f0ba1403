"""From answers to scores: which metrics fit the data, each with its interval, and the paired
differences that say whether tuned beats base by more than noise."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ftpipe.errors import InputError
from ftpipe.eval import metrics
from ftpipe.eval.result import LABEL_METRICS, Difference, ModelScores, Score
from ftpipe.eval.stats import bootstrap, mean_of, paired_difference, sign_test, wilson

PROPORTIONS = ("exact_match", "normalized_match", "accuracy")
FREE_TEXT_METRICS = ("exact_match", "normalized_match", "token_f1")
LABELLED_METRICS = ("exact_match", "normalized_match", "accuracy", "macro_f1")


class Scorer:
    """The metrics chosen for one evaluation set, applied to any model's answers."""

    def __init__(self, references: Sequence[str], chosen: Sequence[str] | None = None) -> None:
        self.references = list(references)
        self.labels = metrics.closed_label_set(self.references)
        self.kind = "labels" if self.labels else "free_text"
        fitting = LABELLED_METRICS if self.labels else FREE_TEXT_METRICS
        self.metrics = _chosen(fitting, chosen, self.kind)
        self.primary = "accuracy" if self.labels else "token_f1"
        if self.primary not in self.metrics:
            self.primary = self.metrics[0]
        self._reference_labels = (
            [metrics.normalize(r) for r in self.references] if self.labels else []
        )

    def per_example(self, metric: str, answers: Sequence[str]) -> list[float]:
        """One value per example (1/0 for matches); macro-F1 has none, it is corpus-level."""
        if metric == "accuracy":
            predicted = self.predicted_labels(answers)
            return [float(p == r) for p, r in zip(predicted, self._reference_labels, strict=True)]
        score: Callable[[str, str], float] = getattr(metrics, metric)
        return [score(a, r) for a, r in zip(answers, self.references, strict=True)]

    def predicted_labels(self, answers: Sequence[str]) -> list[str]:
        labels = self.labels or []
        return [metrics.to_label(a, labels) or metrics.OTHER for a in answers]

    def model_scores(self, model: str, role: str, answers: Sequence[str]) -> ModelScores:
        """Every chosen metric of one model's answers, with the confusion matrix for labels."""
        scores = {metric: self._score(metric, answers) for metric in self.metrics}
        confusion = None
        if self.labels:
            confusion = metrics.classify(answers, self._reference_labels, self.labels).confusion
        return ModelScores(model=model, role=role, scores=scores, confusion=confusion)  # type: ignore[arg-type]

    def _score(self, metric: str, answers: Sequence[str]) -> Score:
        n = len(answers)
        if metric == "macro_f1":
            statistic = self._macro_f1(answers)
            value = statistic(np.arange(n))
            interval = bootstrap(statistic, n, resamples=1000)
            return Score(value=value, count=n, low=interval.low, high=interval.high,
                         interval="bootstrap")  # fmt: skip
        values = self.per_example(metric, answers)
        value = sum(values) / n
        if metric in PROPORTIONS:
            interval, kind = wilson(sum(values), n), "wilson"
        else:
            interval, kind = bootstrap(mean_of(values), n), "bootstrap"
        return Score(value=value, count=n, low=interval.low, high=interval.high, interval=kind)

    def _macro_f1(self, answers: Sequence[str]) -> Callable[[np.ndarray], float]:
        return metrics.macro_f1_statistic(
            self.predicted_labels(answers), self._reference_labels, self.labels or []
        )

    def differences(self, tuned: Sequence[str], base: Sequence[str]) -> list[Difference]:
        """Tuned minus base per metric, from the same resampled examples for both models."""
        return [self._difference(metric, tuned, base) for metric in self.metrics]

    def _difference(self, metric: str, tuned: Sequence[str], base: Sequence[str]) -> Difference:
        n = len(self.references)
        p_value, wins, losses = None, None, None
        if metric == "macro_f1":
            a, b = self._macro_f1(tuned), self._macro_f1(base)
            whole = np.arange(n)
            interval = paired_difference(a, b, n, resamples=1000)
            tuned_value, base_value = a(whole), b(whole)
        else:
            x, y = self.per_example(metric, tuned), self.per_example(metric, base)
            interval = bootstrap(mean_of([i - j for i, j in zip(x, y, strict=True)]), n)
            tuned_value, base_value = sum(x) / n, sum(y) / n
            p_value = sign_test(x, y)
            wins = sum(1 for i, j in zip(x, y, strict=True) if i > j)
            losses = sum(1 for i, j in zip(x, y, strict=True) if i < j)
        return Difference(
            metric=metric,
            tuned=tuned_value,
            base=base_value,
            difference=tuned_value - base_value,
            low=interval.low,
            high=interval.high,
            p_value=p_value,
            wins=wins,
            losses=losses,
        )


def _chosen(fitting: Sequence[str], chosen: Sequence[str] | None, kind: str) -> list[str]:
    """The user's --metric choices, checked against what this data allows."""
    if not chosen:
        return list(fitting)
    for metric in chosen:
        if metric not in fitting:
            why = (
                "needs replies from a small closed set of labels; these replies are free text"
                if metric in LABEL_METRICS
                else f"does not apply to {kind.replace('_', ' ')} replies"
            )
            raise InputError(f"--metric {metric}", f"{why} (available: {', '.join(fitting)})")
    return [metric for metric in fitting if metric in chosen]

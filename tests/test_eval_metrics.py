"""The evaluation's scores (`ftpipe.eval.metrics`) and intervals (`ftpipe.eval.stats`).

Expected numbers are worked out by hand in the comments, on inputs small enough to check.
"""

from __future__ import annotations

import numpy as np
import pytest

from ftpipe.eval import stats
from ftpipe.eval.metrics import (
    OTHER,
    classify,
    closed_label_set,
    exact_match,
    macro_f1_of,
    macro_f1_statistic,
    normalize,
    normalized_match,
    to_label,
    token_f1,
)
from ftpipe.eval.stats import Interval, bootstrap, mean_of, paired_difference, wilson

# --- normalize and the free-text scores ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Positive.", "positive"),
        ("  Hello,   WORLD! ", "hello world"),
        ("Привет, Мир", "привет мир"),
        ("«Да» — нет", "да нет"),  # guillemets and the em dash are punctuation too
        ("don't", "don t"),
        ("\uff26\uff35\uff2c\uff2c\u3000\uff57\uff49\uff44\uff54\uff48", "full width"),  # NFKC
        ("Straße", "strasse"),  # casefold, not lower
        ("a\u00a0\tb\n", "a b"),
        ("$5 + 3", "$5 + 3"),  # symbols are not punctuation
        ("", ""),
        ("?!...", ""),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


def test_exact_match_ignores_only_surrounding_whitespace() -> None:
    assert exact_match(" yes\n", "yes") == 1.0
    assert exact_match("Yes", "yes") == 0.0
    assert exact_match("yes.", "yes") == 0.0
    assert exact_match("", "  ") == 1.0


def test_normalized_match() -> None:
    assert normalized_match("Yes!", "yes") == 1.0
    assert normalized_match("МИР.", "мир") == 1.0
    assert normalized_match("yes no", "yes") == 0.0
    assert normalized_match("", "...") == 1.0  # both normalize to nothing


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        # overlap 2; precision 2/3, recall 2/2; F1 = 2 * (2/3) * 1 / (2/3 + 1) = 0.8
        ("The cat sat.", "the cat", 0.8),
        # multisets {the: 2, cat: 1} & {the: 1, cat: 2} = 2 words; P = R = 2/3 -> F1 2/3
        ("the the cat", "the cat cat", 2 / 3),
        # overlap 1 (кошка); P = R = 1/2 -> 0.5
        ("Кошка сидит", "кошка спит", 0.5),
        ("a b", "c d", 0.0),
        ("same words", "Same, words!", 1.0),
        ("", "", 1.0),
        ("...", "", 1.0),  # punctuation only is empty
        ("x", "", 0.0),
        ("", "x", 0.0),
    ],
)
def test_token_f1(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(expected)


# --- closed label sets --------------------------------------------------------------------


def test_closed_label_set_finds_a_small_set() -> None:
    references = ["Positive.", "negative", "positive", "NEGATIVE!"] * 2
    assert closed_label_set(references) == ["negative", "positive"]


def test_closed_label_set_two_word_labels() -> None:
    references = ["Not spam", "spam", "not spam.", "Spam"]
    assert closed_label_set(references) == ["not spam", "spam"]


@pytest.mark.parametrize(
    "references",
    [
        ["a", "b", "c"],  # 3 distinct of 3: no label seen twice on average
        ["a", "b", "c", "a", "b"],  # 3 distinct > 5 / 2
        ["a"],  # one reference says nothing about a set
        [],
        ["a", "a", "...", "..."],  # a punctuation-only reference is no label
        ["one two three four five", "one two three four five"],  # 5 words > max_words
    ],
)
def test_closed_label_set_rejects_free_text(references: list[str]) -> None:
    assert closed_label_set(references) is None


def test_closed_label_set_limits() -> None:
    assert closed_label_set(["a", "b", "c"] * 2) == ["a", "b", "c"]  # 3 <= 6 / 2
    assert closed_label_set(["a", "b", "c"] * 2, max_labels=2) is None
    five = ["one two three four five"] * 2
    assert closed_label_set(five, max_words=5) == ["one two three four five"]


# --- to_label -----------------------------------------------------------------------------

SENTIMENT = ["negative", "positive"]


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("Positive.", "positive"),
        ("positive sentiment", "positive"),
        ("NEGATIVE, clearly", "negative"),
        ("positively", None),  # not a whole word
        ("not positive", None),  # the label must come first
        ("", None),
        ("...", None),
    ],
)
def test_to_label(prediction: str, expected: str | None) -> None:
    assert to_label(prediction, SENTIMENT) == expected


def test_to_label_longest_label_wins() -> None:
    labels = ["very", "very positive", "positive"]
    assert to_label("Very positive, indeed", labels) == "very positive"
    assert to_label("very good", labels) == "very"
    assert to_label("Very!", labels) == "very"


def test_to_label_cyrillic() -> None:
    assert to_label("Негатив, точно.", ["негатив", "позитив"]) == "негатив"


# --- classify and macro-F1 ----------------------------------------------------------------

THREE = ["negative", "neutral", "positive"]


def test_classify_by_hand() -> None:
    references = ["positive", "Positive", "negative", "negative", "neutral", "neutral."]
    predictions = [
        "Positive!",  # positive, right
        "negative",  # negative, wrong (fp negative, fn positive)
        "Negative.",  # negative, right
        "I think neutral",  # names no label first: OTHER (fn negative)
        "neutral",  # neutral, right
        "positive vibes",  # positive, wrong (fp positive, fn neutral)
    ]
    result = classify(predictions, references, THREE)
    assert result.labels == [*THREE, OTHER]
    assert result.accuracy == pytest.approx(3 / 6)
    # negative: tp 1, fp 1, fn 1 -> P = R = 1/2 -> F1 1/2
    # neutral:  tp 1, fp 0, fn 1 -> P 1, R 1/2 -> F1 2/3
    # positive: tp 1, fp 1, fn 1 -> F1 1/2
    assert result.per_label_f1 == pytest.approx(
        {"negative": 0.5, "neutral": 2 / 3, "positive": 0.5}
    )
    assert result.macro_f1 == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)  # 5/9
    # rows: reference; columns: predicted (negative, neutral, positive, OTHER)
    assert result.confusion == [
        [1, 0, 0, 1],
        [0, 1, 1, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 0],  # OTHER is never a reference
    ]


def test_classify_label_never_predicted() -> None:
    result = classify(["yes", "Yes.", "yes", "yes"], ["yes", "yes", "no", "no"], ["no", "yes"])
    assert result.labels == ["no", "yes"]  # every prediction named a label: no OTHER
    assert result.accuracy == 0.5
    # no: tp 0, fp 0, fn 2 -> F1 0; yes: tp 2, fp 2, fn 0 -> P 1/2, R 1 -> F1 2/3
    assert result.per_label_f1 == pytest.approx({"no": 0.0, "yes": 2 / 3})
    assert result.macro_f1 == pytest.approx(1 / 3)
    assert result.confusion == [[0, 2], [0, 2]]


def test_classify_perfect_all_wrong_and_all_other() -> None:
    perfect = classify(["a", "b.", "A"], ["a", "b", "a"], ["a", "b"])
    assert (perfect.accuracy, perfect.macro_f1) == (1.0, 1.0)
    assert perfect.confusion == [[2, 0], [0, 1]]

    wrong = classify(["b", "a"], ["a", "b"], ["a", "b"])
    assert (wrong.accuracy, wrong.macro_f1) == (0.0, 0.0)
    assert wrong.confusion == [[0, 1], [1, 0]]

    other = classify(["maybe", "dunno"], ["a", "b"], ["a", "b"])
    assert other.labels == ["a", "b", OTHER]
    assert (other.accuracy, other.macro_f1) == (0.0, 0.0)
    assert other.confusion == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]


def test_classify_skips_a_label_that_never_occurs() -> None:
    result = classify(["a", "b"], ["a", "b"], ["a", "b", "c"])
    assert result.labels == ["a", "b", "c"]
    assert result.per_label_f1 == {"a": 1.0, "b": 1.0}  # c: tp + fp + fn == 0, no F1
    assert result.macro_f1 == 1.0
    assert result.confusion == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_classify_two_word_labels() -> None:
    result = classify(["spam!", "Not spam, it is fine"], ["Spam", "not spam"], ["not spam", "spam"])
    assert result.accuracy == 1.0
    assert result.confusion == [[1, 0], [0, 1]]


@pytest.mark.parametrize(
    ("predictions", "references", "labels", "message"),
    [
        (["a"], ["a", "b"], ["a", "b"], "1 predictions but 2 references"),
        ([], [], ["a"], "no examples"),
        (["a"], ["c"], ["a", "b"], "not among the labels"),
        (["a"], ["a"], [], "no labels"),
        (["a"], ["a"], ["a", "a"], "repeat"),
        (["a"], ["a"], ["A", "b"], "normalized"),
    ],
)
def test_classify_rejects_bad_input(
    predictions: list[str], references: list[str], labels: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        classify(predictions, references, labels)


def test_macro_f1_of_mapped_labels() -> None:
    # a: tp 1 -> F1 1; b: tp 1, fn 1 (predicted OTHER) -> 2/3; mean 5/6
    assert macro_f1_of(["a", OTHER, "b"], ["a", "b", "b"], ["a", "b"]) == pytest.approx(5 / 6)
    with pytest.raises(ValueError):
        macro_f1_of(["a"], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError):
        macro_f1_of([], [], ["a"])


def test_macro_f1_statistic_agrees_with_macro_f1_of() -> None:
    rng = np.random.default_rng(7)
    labels = ["a", "b", "c", "d"]
    predicted = list(rng.choice([*labels, OTHER], size=60))
    expected = list(rng.choice(labels[:3], size=60))  # d: only ever predicted
    statistic = macro_f1_statistic(predicted, expected, labels)
    indices = rng.integers(0, 60, size=(40, 60))
    by_hand = [
        macro_f1_of([predicted[i] for i in row], [expected[i] for i in row], labels)
        for row in indices
    ]
    assert statistic.batched(indices) == pytest.approx(by_hand)  # type: ignore[attr-defined]
    assert statistic(np.arange(60)) == pytest.approx(macro_f1_of(predicted, expected, labels))


# --- Wilson intervals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        (8, 10, 0.4902, 0.9433),
        (0, 10, 0.0, 0.2775),
        (10, 10, 0.7225, 1.0),
        (5, 10, 0.2366, 0.7634),
    ],
)
def test_wilson_known_values(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson(successes, n)
    assert interval.low == pytest.approx(low, abs=1e-4)
    assert interval.high == pytest.approx(high, abs=1e-4)


def test_wilson_edges_are_exact_and_fractions_allowed() -> None:
    assert wilson(0, 10).low == 0.0
    assert wilson(10, 10).high == 1.0
    half = wilson(2.5, 5)  # a sum of partial scores
    assert half.low + half.high == pytest.approx(1.0)  # p = 1/2 is symmetric
    assert wilson(1, 1).high == 1.0


@pytest.mark.parametrize(("successes", "n"), [(0, 0), (3, 2), (-1, 5)])
def test_wilson_rejects_bad_input(successes: float, n: int) -> None:
    with pytest.raises(ValueError):
        wilson(successes, n)


def test_interval_contains() -> None:
    interval = Interval(-0.1, 0.2)
    assert interval.contains(0.0)
    assert interval.contains(-0.1)
    assert interval.contains(0.2)
    assert not interval.contains(0.21)


# --- bootstrap ----------------------------------------------------------------------------

SCORES = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0]


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    scores = [(i * i % 17) / 16 for i in range(25)]  # many distinct means: seeds differ
    first = bootstrap(mean_of(scores), len(scores), seed=3)
    assert bootstrap(mean_of(scores), len(scores), seed=3) == first
    assert bootstrap(mean_of(scores), len(scores), seed=4) != first
    assert 0.0 <= first.low < np.mean(scores) < first.high <= 1.0


def test_bootstrap_of_a_constant_is_a_point() -> None:
    assert bootstrap(mean_of([0.5] * 20), 20) == Interval(0.5, 0.5)
    tenth = bootstrap(mean_of([0.1] * 7), 7)
    assert tenth.low == tenth.high == pytest.approx(0.1)


def test_bootstrap_plain_callable_matches_batched_path() -> None:
    values = np.asarray(SCORES)
    plain = bootstrap(lambda indices: float(values[indices].mean()), len(values), resamples=300)
    fast = bootstrap(mean_of(values), len(values), resamples=300)
    assert plain.low == pytest.approx(fast.low)
    assert plain.high == pytest.approx(fast.high)


def test_bootstrap_uses_batched_and_covers_every_resample(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "_CELLS_PER_CHUNK", 10)  # n = 5: two resamples a chunk
    seen: list[int] = []

    class Rows:
        def __call__(self, indices: np.ndarray) -> float:
            raise AssertionError("the batched path must be used")

        def batched(self, indices: np.ndarray) -> np.ndarray:
            seen.append(len(indices))
            return indices.mean(axis=1)

    bootstrap(Rows(), 5, resamples=7)
    assert seen == [2, 2, 2, 1]


def test_bootstrap_wider_level_is_wider() -> None:
    narrow = bootstrap(mean_of(SCORES), len(SCORES), level=0.5)
    wide = bootstrap(mean_of(SCORES), len(SCORES), level=0.99)
    assert wide.low <= narrow.low and narrow.high <= wide.high
    assert wide.high - wide.low > narrow.high - narrow.low


@pytest.mark.parametrize(
    ("n", "options"),
    [(0, {}), (3, {"resamples": 0}), (3, {"level": 1.0}), (3, {"level": 0.0})],
)
def test_bootstrap_rejects_bad_settings(n: int, options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        bootstrap(mean_of([1.0, 0.0, 1.0]), n, **options)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        paired_difference(mean_of([1.0]), mean_of([0.0]), n, **options)  # type: ignore[arg-type]


# --- paired differences -------------------------------------------------------------------


def test_paired_difference_of_identical_statistics_is_zero() -> None:
    assert paired_difference(mean_of(SCORES), mean_of(SCORES), len(SCORES)) == Interval(0.0, 0.0)


def test_paired_difference_uses_the_bootstraps_resamples() -> None:
    zero = mean_of([0.0] * len(SCORES))
    assert paired_difference(mean_of(SCORES), zero, len(SCORES), seed=5) == bootstrap(
        mean_of(SCORES), len(SCORES), seed=5
    )


def test_paired_difference_sees_a_clearly_better_model() -> None:
    tuned = [1.0] * 27 + [0.0] * 3  # right on 27 of 30
    base = [1.0] * 5 + [0.0] * 25  # right on 5 of 30
    difference = paired_difference(mean_of(tuned), mean_of(base), 30)
    assert difference.low > 0  # better beyond noise
    assert difference.contains(22 / 30)  # the observed difference
    reverse = paired_difference(mean_of(base), mean_of(tuned), 30)
    assert reverse.high < 0


def test_paired_difference_of_macro_f1() -> None:
    references = ["a", "b"] * 10
    tuned = macro_f1_statistic(references, references, ["a", "b"])  # always right
    base = macro_f1_statistic(["a"] * 20, references, ["a", "b"])  # always says a
    difference = paired_difference(tuned, base, 20)
    assert difference.low > 0


# --- sign_test: the exact paired test the verdict rests on ---------------------------------


def test_sign_test_is_exact_on_few_examples() -> None:
    from ftpipe.eval.stats import sign_test

    # 4 of 6 right against 0 of 6: four discordant pairs all one way, 2 * (1/2)^4
    assert sign_test([1, 1, 1, 1, 0, 0], [0] * 6) == 0.125
    # eight one way: 2 * (1/2)^8
    assert sign_test([1] * 8 + [0] * 4, [0] * 12) == pytest.approx(0.0078125)
    # ties are left out; a 3-1 split of four is 2 * (1 + 4) / 16
    assert sign_test([1, 1, 1, 0, 0.5, 0.5], [0, 0, 0, 1, 0.5, 0.5]) == pytest.approx(0.625)
    assert sign_test([0.2, 0.7], [0.2, 0.7]) == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        sign_test([1], [1, 0])


def test_a_verdict_needs_the_exact_test_not_only_the_bootstrap() -> None:
    from ftpipe.eval.result import Difference

    few = Difference(metric="accuracy", tuned=4 / 6, base=0, difference=4 / 6, low=0.33,
                     high=1.0, p_value=0.125, wins=4, losses=0)  # fmt: skip
    assert not few.better_than_noise and not few.worse_than_noise
    many = few.model_copy(update={"p_value": 0.002})
    assert many.better_than_noise
    corpus = few.model_copy(update={"p_value": None, "wins": None, "losses": None})
    assert corpus.better_than_noise  # macro-F1: the interval decides


def test_a_few_big_gains_do_not_outvote_many_small_losses() -> None:
    """Token F1 slightly worse on 20 examples and much better on 4: the mean rises, but the
    sign test is significant for the base, so the verdict is no clear difference."""
    from ftpipe.eval.scoring import Scorer

    references = [f"the answer number {i} is here" for i in range(24)]
    base = list(references)
    tuned = [r + " extra" for r in references[:20]] + ["zzz"] * 4
    base = base[:20] + ["qqq"] * 4
    tuned[20:] = references[20:]
    scorer = Scorer(references)
    [difference] = [d for d in scorer.differences(tuned, base) if d.metric == "token_f1"]
    assert difference.difference > 0 and (difference.wins, difference.losses) == (4, 20)
    assert difference.p_value < 0.05
    assert not difference.better_than_noise and not difference.worse_than_noise

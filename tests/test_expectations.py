"""The GX suites in expectations/ and the runner that maps their failures to rows and rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ftpipe.prepare.expectations import (
    KINDS,
    BatchOutcome,
    SuiteRunner,
    expectations_dir,
    load_suite,
)

TOO_LONG = "x" * 1_000_001
REPO_SUITES = Path(__file__).resolve().parents[1] / "expectations"


@pytest.fixture(scope="module")
def runners() -> dict[str, SuiteRunner]:
    """One runner per kind for the whole module: building GX contexts is the slow part."""
    return {kind: SuiteRunner(kind) for kind in KINDS}


def found(outcome: BatchOutcome) -> set[tuple[int, str, str]]:
    return {(failure.row, failure.column, failure.rule) for failure in outcome.failures}


def value_of(outcome: BatchOutcome, row: int, rule: str) -> str:
    return next(f.value for f in outcome.failures if f.row == row and f.rule == rule)


# --- the suite files -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_every_expectation_names_a_unique_rule_and_says_why(kind: str) -> None:
    suite = load_suite(kind)
    rules = [expectation.meta["rule"] for expectation in suite.expectations]
    assert suite.name == kind
    assert rules and len(rules) == len(set(rules))
    assert all(expectation.meta["description"] for expectation in suite.expectations)
    raw = json.loads((REPO_SUITES / f"{kind}.json").read_text(encoding="utf-8"))
    assert len(raw["expectations"]) == len(suite.expectations)  # GX dropped none


def test_expectations_dir_defaults_to_the_repository_and_follows_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FTPIPE_EXPECTATIONS_DIR", raising=False)
    assert expectations_dir() == REPO_SUITES
    monkeypatch.setenv("FTPIPE_EXPECTATIONS_DIR", str(tmp_path))
    assert expectations_dir() == tmp_path


# --- column pairs ----------------------------------------------------------------------------


def test_column_pairs_name_each_bad_row_column_and_rule(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame(
        {
            "user": ["Hi", None, "", TOO_LONG, "Fine", "Fine", "Fine", "Fine", "Fine"],
            "assistant": ["Hello", "Ok", "Ok", "Ok", None, "", TOO_LONG, "Ok", "Ok"],
            "system": ["Be brief.", "", "", "", "", "", "", TOO_LONG, ""],
        }
    )
    outcome = runners["column_pairs"].validate(frame)
    assert found(outcome) == {
        (1, "user", "user_missing"),
        (2, "user", "user_empty"),
        (3, "user", "user_too_long"),
        (4, "assistant", "assistant_missing"),
        (5, "assistant", "assistant_empty"),
        (6, "assistant", "assistant_too_long"),
        (7, "system", "system_too_long"),
    }
    assert outcome.rows == 9
    assert outcome.failed_rows == {1, 2, 3, 4, 5, 6, 7}
    assert value_of(outcome, 1, "user_missing") == "<null>"
    assert value_of(outcome, 2, "user_empty") == ""
    assert value_of(outcome, 3, "user_too_long") == TOO_LONG


def test_column_pairs_outcomes_count_unexpected_rows(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame({"user": ["", "", "Hi"], "assistant": ["Ok", "Ok", "Ok"]})
    outcomes = {o.rule: o for o in runners["column_pairs"].validate(frame).outcomes}
    assert outcomes["user_empty"].success is False
    assert outcomes["user_empty"].unexpected == 2
    assert outcomes["user_empty"].column == "user"
    assert outcomes["user_empty"].expectation == "expect_column_value_lengths_to_be_between"
    assert outcomes["user_empty"].description
    assert outcomes["assistant_empty"].success is True


def test_absent_optional_system_column_is_skipped(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame({"user": ["Hi", "Bye"], "assistant": ["Hello", "Goodbye"]})
    outcome = runners["column_pairs"].validate(frame)
    assert outcome.failures == []
    assert "system_too_long" not in {o.rule for o in outcome.outcomes}
    assert all(o.success for o in outcome.outcomes)


def test_null_system_is_fine_when_the_column_exists(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame({"user": ["Hi"], "assistant": ["Hello"], "system": [None]})
    assert runners["column_pairs"].validate(frame).failures == []


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"assistant": ["Ok"]}, "missing required column 'user'"),
        ({"user": ["Hi"], "system": ["S"]}, "missing required column 'assistant'"),
        ({"other": ["x"]}, "missing required columns 'user', 'assistant'"),
    ],
)
def test_missing_required_column_is_refused(
    runners: dict[str, SuiteRunner], columns: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        runners["column_pairs"].validate(pd.DataFrame(columns))


def test_rows_are_positions_whatever_the_index(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame({"user": ["Hi", "", "Hey"], "assistant": ["A", "B", ""]}, index=[7, 3, 9])
    assert found(runners["column_pairs"].validate(frame)) == {
        (1, "user", "user_empty"),
        (2, "assistant", "assistant_empty"),
    }


def test_empty_batch_passes(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame(
        {"user": pd.Series([], dtype="str"), "assistant": pd.Series([], dtype="str")}
    )
    outcome = runners["column_pairs"].validate(frame)
    assert outcome.rows == 0
    assert outcome.failures == []


def test_an_expectation_that_crashes_stops_the_batch(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame([["a", "b", "c"]], columns=["user", "user", "assistant"])
    with pytest.raises(RuntimeError, match="could not run"):
        runners["column_pairs"].validate(frame)


def test_runner_reuses_one_context_across_batches(runners: dict[str, SuiteRunner]) -> None:
    runner = runners["column_pairs"]
    context = runner._context
    for _ in range(3):
        runner.validate(pd.DataFrame({"user": ["Hi"], "assistant": [""]}))
    assert runner._context is context
    assert len(list(context.data_sources.all())) == 1


# --- labelled text ---------------------------------------------------------------------------


def test_labelled_text_name_each_bad_row(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame(
        {
            "text": ["Great!", None, "", TOO_LONG, "Meh", "Awful", "Nice"],
            "label": ["positive", "negative", "positive", "negative", "neutral", None, "positive"],
        }
    )
    outcome = runners["labelled_text"].validate(frame)
    assert found(outcome) == {
        (1, "text", "text_missing"),
        (2, "text", "text_empty"),
        (3, "text", "text_too_long"),
        (4, "label", "label_unknown"),
        (5, "label", "label_missing"),
    }
    assert value_of(outcome, 4, "label_unknown") == "neutral"


@pytest.mark.parametrize("label", ["Positive", "neutral", " positive", "1"])
def test_unknown_label_is_rejected(runners: dict[str, SuiteRunner], label: str) -> None:
    frame = pd.DataFrame({"text": ["ok", "ok"], "label": ["negative", label]})
    assert found(runners["labelled_text"].validate(frame)) == {(1, "label", "label_unknown")}


def test_labelled_text_requires_the_label_column(runners: dict[str, SuiteRunner]) -> None:
    with pytest.raises(ValueError, match="missing required column 'label'"):
        runners["labelled_text"].validate(pd.DataFrame({"text": ["ok"]}))


# --- dialogues -------------------------------------------------------------------------------


def test_dialogues_name_each_bad_row(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame(
        {
            "role": ["system", "user", "assistant", None, "bot", "user", "assistant", "user"],
            "content": ["Be kind.", "Hi", "Hello", "x", "x", None, "", "Thanks"],
            "sentiment": [None, "neutral", "positive", None, None, None, None, "happy"],
        }
    )
    outcome = runners["dialogues"].validate(frame)
    assert found(outcome) == {
        (3, "role", "role_missing"),
        (4, "role", "role_unknown"),
        (5, "content", "content_missing"),
        (6, "content", "content_empty"),
        (7, "sentiment", "sentiment_unknown"),
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda: [None, None],
        lambda: [float("nan"), float("nan")],
        lambda: pd.Series([None, None], dtype="str"),
        lambda: ["negative", None],
    ],
)
def test_null_sentiment_is_accepted(
    runners: dict[str, SuiteRunner], make: Callable[[], object]
) -> None:
    frame = pd.DataFrame({"role": ["user", "assistant"], "content": ["Hi", "Hello"]})
    frame["sentiment"] = make()
    assert runners["dialogues"].validate(frame).failures == []


def test_dialogues_without_sentiment_column_are_fine(runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame({"role": ["user", "assistant"], "content": ["Hi", "Hello"]})
    assert runners["dialogues"].validate(frame).failures == []


# --- load_suite errors -----------------------------------------------------------------------


def write_suite(folder: Path, expectations: list[dict] | str) -> Path:
    path = folder / "dialogues.json"
    body = (
        expectations
        if isinstance(expectations, str)
        else json.dumps({"name": "dialogues", "expectations": expectations})
    )
    path.write_text(body, encoding="utf-8")
    return path


def rule(rule_name: str, **kwargs: object) -> dict:
    return {
        "type": "expect_column_values_to_not_be_null",
        "kwargs": {"column": "role", **kwargs},
        "meta": {"rule": rule_name, "description": "A role."},
    }


def test_load_suite_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown input kind 'tables'"):
        load_suite("tables")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "not found"),
        ("{not json", "not a readable JSON file"),
        ('["a list"]', "not an expectation suite"),
        (json.dumps({"expectations": []}), "has no 'name'"),
        ([{**rule("x"), "type": "expect_nonsense"}], r"expectation 1 \(x\) is invalid"),
        ([rule("x", mostly="lots")], r"expectation 1 \(x\) is invalid"),
        ([rule("role_missing"), {**rule("x"), "colour": "red"}], r"expectation 2 \(x\) is invalid"),
        ([{**rule("x"), "meta": {}}], "needs a snake_case meta.rule"),
        ([rule("Role Missing")], "needs a snake_case meta.rule"),
        ([rule("x"), rule("x")], "rule 'x' is used twice"),
        ([{**rule("x"), "meta": {"rule": "x"}}], r"\(x\) needs a meta.description"),
        (["a string"], "expectation 1 is not an object"),
    ],
)
def test_load_suite_names_the_broken_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: list[dict] | str | None,
    problem: str,
) -> None:
    monkeypatch.setenv("FTPIPE_EXPECTATIONS_DIR", str(tmp_path))
    path = tmp_path / "dialogues.json"
    if content is not None:
        path = write_suite(tmp_path, content)
    with pytest.raises(ValueError, match=problem) as caught:
        load_suite("dialogues")
    assert str(caught.value).startswith(str(path))


def test_load_suite_reads_a_suite_from_the_env_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_EXPECTATIONS_DIR", str(tmp_path))
    write_suite(tmp_path, [rule("role_missing")])
    runner = SuiteRunner("dialogues")
    outcome = runner.validate(pd.DataFrame({"role": ["user", None], "content": ["a", ""]}))
    assert found(outcome) == {(1, "role", "role_missing")}

"""The suites' rules checked column-wise must say exactly what GX says, row for row; a suite
they cannot read goes to GX; GX validates each run's sample into Data Docs and must agree."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ftpipe.prepare import columnar, gx_process, merge, validation
from ftpipe.prepare.columnar import ColumnarRunner, suite_checks, text_table
from ftpipe.prepare.expectations import KINDS, BatchOutcome, SuiteRunner
from ftpipe.prepare.gx_process import GxProcess
from ftpipe.prepare.merge import Merger
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.validation import RunSamples, SourceValidator, validate_run

TOO_LONG = "x" * 1_000_001

FRAMES = {
    "column_pairs": [
        {
            "user": ["Hi", None, "", TOO_LONG, "Fine", "Fine", "Fine", "Fine", "Fine", " "],
            "assistant": ["Hello", "Ok", "Ok", "Ok", None, "", TOO_LONG, "Ok", "Ok", ""],
            "system": ["Be brief.", "", "", "", "", "", "", TOO_LONG, None, ""],
        },
        {"user": ["", "", "Hi"], "assistant": ["Ok", "Ok", "Ok"]},
        {"user": ["Hi", "Bye"], "assistant": ["Hello", "Goodbye"]},
        {"user": [None, None], "assistant": [None, "x" * 1_000_000]},
    ],
    "labelled_text": [
        {
            "text": ["Great!", None, "", TOO_LONG, "Meh", "Awful", "Nice", "ok"],
            "label": [
                "positive",
                "negative",
                "positive",
                "negative",
                "neutral",
                None,
                "Positive",
                "",
            ],
        },
    ],
    "dialogues": [
        {
            "role": ["system", "user", "assistant", None, "bot", "user", "assistant", "user"],
            "content": ["Be kind.", "Hi", "Hello", "x", "x", None, "", "Thanks"],
            "sentiment": [None, "neutral", "positive", None, None, None, None, "happy"],
        },
        {"role": ["user", "assistant"], "content": ["Hi", "Hello"], "sentiment": [None, None]},
        {"role": ["user", "assistant"], "content": ["Hi", "Hello"]},
    ],
}
CASES = [(kind, columns) for kind, frames in FRAMES.items() for columns in frames]


@pytest.fixture(scope="module")
def gx_runners() -> dict[str, SuiteRunner]:
    return {kind: SuiteRunner(kind) for kind in KINDS}


def as_table(columns: dict[str, list[str | None]]) -> pa.Table:
    return pa.table({name: pa.array(values, pa.string()) for name, values in columns.items()})


def same(one: BatchOutcome, other: BatchOutcome) -> None:
    assert one.rows == other.rows
    assert one.failures == other.failures  # rows, columns, rules, values and their order
    assert one.outcomes == other.outcomes


@pytest.mark.parametrize(("kind", "columns"), CASES)
def test_columnar_checks_say_what_gx_says(
    gx_runners: dict[str, SuiteRunner], kind: str, columns: dict[str, list[str | None]]
) -> None:
    checks = suite_checks(kind)
    assert checks is not None, f"the {kind} suite should be checkable column-wise"
    table = text_table(as_table(columns))
    assert table is not None
    same(
        ColumnarRunner(kind, checks).validate(table),
        gx_runners[kind].validate(pd.DataFrame(columns)),
    )


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"assistant": ["Ok"]}, "missing required column 'user'"),
        ({"user": ["Hi"], "system": ["S"]}, "missing required column 'assistant'"),
        ({"other": ["x"]}, "missing required columns 'user', 'assistant'"),
    ],
)
def test_a_missing_required_column_is_refused_in_gx_words(
    columns: dict[str, list[str]], message: str
) -> None:
    checks = suite_checks("column_pairs")
    assert checks is not None
    with pytest.raises(ValueError, match=f"^{message}$"):
        ColumnarRunner("column_pairs", checks).validate(as_table(columns))


def write_suite(folder: Path, kind: str, expectations: list[dict]) -> None:
    body = {"name": kind, "expectations": expectations}
    (folder / f"{kind}.json").write_text(json.dumps(body), encoding="utf-8")


def expectation(kind: str, rule: str, **kwargs: object) -> dict:
    return {"type": kind, "kwargs": kwargs, "meta": {"rule": rule, "description": "Why."}}


def test_strict_and_open_length_bounds_match_gx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_EXPECTATIONS_DIR", str(tmp_path))
    length = "expect_column_value_lengths_to_be_between"
    write_suite(
        tmp_path,
        "dialogues",
        [
            expectation("expect_column_to_exist", "role_column_required", column="role"),
            expectation(length, "role_short", column="role", min_value=2, strict_min=True),
            expectation(length, "role_bounded", column="role", min_value=3, max_value=5),
            expectation(length, "content_strict", column="content", max_value=4, strict_max=True),
            expectation(
                "expect_column_values_to_be_in_set", "content_known", column="content",
                value_set=["a", "abcd", "é😀"],
            ),
        ],
    )  # fmt: skip
    columns = {
        "role": ["a", "ab", "abc", "abcde", "abcdef", None, "é😀é"],
        "content": ["a", "abcd", "é😀", "abc", None, "", "abcde"],
    }
    checks = suite_checks("dialogues")
    assert checks is not None
    same(
        ColumnarRunner("dialogues", checks).validate(as_table(columns)),
        SuiteRunner("dialogues").validate(pd.DataFrame(columns)),
    )


@pytest.mark.parametrize(
    "extra",
    [
        expectation("expect_column_values_to_match_regex", "role_word", column="role", regex="^u"),
        expectation(
            "expect_column_values_to_not_be_null", "role_mostly", column="role", mostly=0.5
        ),
        expectation("expect_column_value_lengths_to_be_between", "role_len", column="role"),
        expectation("expect_column_values_to_be_in_set", "role_num", column="role", value_set=[1]),
    ],
)
def test_a_suite_the_columnar_checks_cannot_read_is_run_by_gx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: dict
) -> None:
    monkeypatch.setenv("FTPIPE_EXPECTATIONS_DIR", str(tmp_path))
    required = expectation("expect_column_values_to_not_be_null", "role_missing", column="role")
    write_suite(tmp_path, "dialogues", [required, extra])
    assert suite_checks("dialogues") is None
    validator = SourceValidator("dialogues")
    assert validator.columnar is None
    if extra["meta"]["rule"] == "role_len":  # GX itself refuses it, naming the file
        with pytest.raises(ValueError, match="role_len"):
            validator.validate(as_table({"role": ["user"]}))
        return
    outcome = validator.validate(as_table({"role": ["user", None, "bot"]}))
    assert (1, "role_missing") in {(f.row, f.rule) for f in outcome.failures}


def test_cells_that_are_not_text_go_to_gx(gx_runners: dict[str, SuiteRunner]) -> None:
    frame = pd.DataFrame({"role": ["user", 5, None], "content": ["Hi", "x", "y"]})
    validator = SourceValidator("dialogues")
    same(validator.validate(frame), gx_runners["dialogues"].validate(frame))
    assert validator._gx is not None  # GX ran this batch
    failing, _ = validator.sample.tables()
    assert failing is not None and failing.column("role").to_pylist() == ["5", None]


def test_text_frames_are_checked_without_gx() -> None:
    frame = pd.DataFrame(
        {"role": ["user", "bot"], "content": ["Hi", "x"], "sentiment": [None, None]}
    )
    validator = SourceValidator("dialogues")
    outcome = validator.validate(frame)
    assert validator._gx is None
    assert [(f.row, f.rule) for f in outcome.failures] == [(1, "role_unknown")]


# --- the sample and the run's GX validation --------------------------------------------------


def test_the_sample_keeps_few_failing_rows_per_rule_and_small_passing_rows() -> None:
    validator = SourceValidator("column_pairs")
    for _ in range(30):
        users = ["", "", "", "", TOO_LONG, "Hi", "Hey", "x" * 20_000] + ["Fine"] * 20
        validator.validate(as_table({"user": users, "assistant": ["Ok"] * len(users)}))
    failing, passing = validator.sample.tables()
    assert failing is not None and passing is not None
    assert failing.column("user").to_pylist() == ["", "", "", TOO_LONG, TOO_LONG, TOO_LONG]
    assert passing.num_rows == validation.PASSING_PER_SOURCE
    assert max(len(u) for u in passing.column("user").to_pylist()) < 20_000  # small rows only


def sample_of(kind: str, columns: dict[str, list[str | None]]) -> RunSamples:
    validator = SourceValidator(kind)
    validator.validate(as_table(columns))
    samples = RunSamples()
    samples.add(kind, validator.sample)
    return samples


def test_gx_validates_the_sample_into_data_docs(tmp_path: Path) -> None:
    columns = {"user": ["Hi", "", "Hey"], "assistant": ["Ok", "Ok", None]}
    [result] = validate_run(sample_of("column_pairs", columns), tmp_path / "docs")
    assert result == {
        "suite": "column_pairs",
        "rows": 3,
        "failing_rows": 2,
        "success": False,
        "evaluated_expectations": 8,
    }
    assert (tmp_path / "docs" / "index.html").is_file()
    [page] = (tmp_path / "docs" / "validations").rglob("*.html")
    assert "unexpected" in page.read_text(encoding="utf-8")
    suite_page = (tmp_path / "docs" / "expectations" / "column_pairs.html").read_text("utf-8")
    assert "user_empty: The user message must not be empty" in suite_page  # rules by name
    assert not (tmp_path / "docs" / "static" / "images" / "glossary_scroller.gif").exists()


def test_gx_and_the_columnar_checks_must_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = sample_of("column_pairs", {"user": ["Hi", ""], "assistant": ["Ok", "Ok"]})
    original = columnar._unexpected

    def wrong(check: columnar.Check, values: pa.Array) -> np.ndarray:
        found = original(check, values)
        return ~found if check.rule == "user_empty" else found

    monkeypatch.setattr(columnar, "_unexpected", wrong)
    with pytest.raises(RuntimeError, match=r"disagree with Great Expectations on rule.*user_empty"):
        validate_run(samples, tmp_path / "docs")


def test_a_run_with_nothing_validated_makes_no_docs(tmp_path: Path) -> None:
    assert validate_run(RunSamples(), tmp_path / "docs") == []
    assert not (tmp_path / "docs").exists()


# --- GX in a process of its own (large runs) ---------------------------------------------------


def test_gx_in_its_own_process_validates_as_in_this_one(tmp_path: Path) -> None:
    columns = {"user": ["Hi", "", "Hey", None], "assistant": ["Ok", "Ok", None, "x"]}
    here = validate_run(sample_of("column_pairs", columns), tmp_path / "here")
    gx = GxProcess.start()
    assert gx is not None
    there = validate_run(sample_of("column_pairs", columns), tmp_path / "there", gx)
    assert there == here
    assert (tmp_path / "there" / "index.html").is_file()


def test_gx_process_reads_the_suites_this_process_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = sample_of("column_pairs", {"user": ["Hi"], "assistant": ["Ok"]})
    monkeypatch.setenv("FTPIPE_EXPECTATIONS_DIR", str(tmp_path / "nowhere"))
    gx = GxProcess.start()
    assert gx is not None
    with pytest.raises(ValueError, match=r"nowhere/column_pairs.json: expectation suite file not"):
        validate_run(samples, tmp_path / "docs", gx)


def test_a_gx_process_never_asked_is_stopped() -> None:
    gx = GxProcess.start()
    assert gx is not None
    gx.close()
    assert gx._child.returncode is not None


def test_only_large_runs_start_a_gx_process(tmp_path: Path) -> None:
    options = PrepareOptions(model="gpt-4o-mini")
    small = Merger(options, tmp_path, input_bytes=merge.GX_PROCESS_MIN_BYTES - 1)
    assert small.gx is None
    small.close()
    (tmp_path / "big").mkdir()
    large = Merger(options, tmp_path / "big", input_bytes=merge.GX_PROCESS_MIN_BYTES)
    assert large.gx is not None
    large.close()
    assert large.gx._child.returncode is not None


def test_the_cli_starts_gx_early_and_its_run_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ftpipe prepare` starts the GX child before its own imports; even a small run takes it,
    and a child no run took is stopped. A process that already has GX validates itself."""
    monkeypatch.delitem(sys.modules, "great_expectations", raising=False)
    gx_process.start_early()
    early = gx_process._early
    assert early is not None
    merger = Merger(PrepareOptions(model="gpt-4o-mini"), tmp_path, input_bytes=1)
    assert merger.gx is early
    assert gx_process.take_early() is None  # taken once
    merger.close()
    assert early._child.returncode is not None

    gx_process.start_early()
    unused = gx_process._early
    assert unused is not None
    gx_process.discard_early()
    assert unused._child.returncode is not None and gx_process._early is None

    monkeypatch.setitem(sys.modules, "great_expectations", object())
    gx_process.start_early()
    assert gx_process._early is None


def test_an_early_gx_child_is_stopped_when_the_run_has_nothing_to_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file of blank lines gives GX no sample (and the run fails for want of examples);
    the child started for it must not be left waiting."""
    from ftpipe.prepare.pipeline import PrepareFailed, prepare

    monkeypatch.delitem(sys.modules, "great_expectations", raising=False)
    data = tmp_path / "blank.jsonl"
    data.write_text("\n\n\n", encoding="utf-8")
    gx_process.start_early()
    early = gx_process._early
    assert early is not None
    with pytest.raises(PrepareFailed, match="training examples"):
        prepare([data], PrepareOptions(model="gpt-4o-mini"), out_root=tmp_path / "out")
    assert early._child.returncode is not None
    assert early._child.stdin is not None and early._child.stdin.closed

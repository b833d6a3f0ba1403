"""Which CSV columns become which chat roles: `plan_columns`, `apply_plan`, `to_chat_columns`."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest
from pydantic import ValidationError

from ftpipe.errors import InputError
from ftpipe.prepare.mapping import (
    PAIRS,
    SYSTEM_NAMES,
    apply_plan,
    plan_columns,
    to_chat_columns,
)
from ftpipe.prepare.options import DEFAULT_LABEL_INSTRUCTION, PrepareOptions

CASES: dict[str, Callable[[str], str]] = {
    "lower": str.lower,
    "upper": str.upper,
    "title": str.title,
    "capitalize": str.capitalize,
}


def plan(columns: list[str], **options: object):
    return plan_columns("export.csv", columns, PrepareOptions(**options))


# -- recognised column pairs ------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
@pytest.mark.parametrize(("user", "assistant"), PAIRS, ids=[f"{u}-{a}" for u, a in PAIRS])
def test_each_pair_is_recognised_in_any_case(
    user: str, assistant: str, case: Callable[[str], str]
) -> None:
    columns = ["id", case(user), "created_at", case(assistant)]
    result = plan(columns)
    assert result.kind == "column_pairs"
    assert result.columns == {"user": case(user), "assistant": case(assistant)}
    assert result.label is None
    assert result.system_instruction is None


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
@pytest.mark.parametrize("system", SYSTEM_NAMES)
def test_system_column_is_recognised(system: str, case: Callable[[str], str]) -> None:
    result = plan(["Question", case(system), "Answer"])
    assert result.columns == {"user": "Question", "assistant": "Answer", "system": case(system)}


def test_system_instruction_option_is_carried_by_the_plan() -> None:
    result = plan(["prompt", "completion"], system_instruction="Answer briefly.")
    assert result.columns == {"user": "prompt", "assistant": "completion"}
    assert result.system_instruction == "Answer briefly."


def test_a_pair_wins_over_a_text_and_label_column() -> None:
    result = plan(["prompt", "completion", "label"])
    assert result.kind == "column_pairs"
    assert result.columns == {"user": "prompt", "assistant": "completion"}


def test_unusable_columns_are_an_input_error_naming_file_and_columns() -> None:
    with pytest.raises(InputError) as caught:
        plan(["body", "rating"])
    message = str(caught.value)
    assert message.startswith("export.csv: missing required columns")
    assert "'body'" in message and "'rating'" in message
    assert "question/answer" in message
    assert "\n" not in message


def test_half_a_pair_is_not_enough() -> None:
    with pytest.raises(InputError, match="missing required columns"):
        plan(["question", "reply"])


# -- explicit column map ---------------------------------------------------------------------


def test_column_map_matches_columns_in_any_case_and_returns_their_real_names() -> None:
    result = plan(
        ["Q", "A", "Persona"], column_map={"user": "q", "assistant": "A", "system": "PERSONA"}
    )
    assert result.kind == "column_pairs"
    assert result.columns == {"user": "Q", "assistant": "A", "system": "Persona"}


def test_column_map_overrides_the_recognised_pairs() -> None:
    result = plan(
        ["question", "answer", "Customer", "Agent"],
        column_map={"user": "Customer", "assistant": "Agent"},
    )
    assert result.columns == {"user": "Customer", "assistant": "Agent"}


def test_column_map_keeps_the_system_instruction() -> None:
    result = plan(["Q", "A"], column_map={"user": "Q", "assistant": "A"}, system_instruction="Hi")
    assert result.system_instruction == "Hi"
    assert "system" not in result.columns


def test_column_map_naming_a_missing_column_is_an_input_error() -> None:
    with pytest.raises(InputError) as caught:
        plan(["Q", "A"], column_map={"user": "Q", "assistant": "Reply"})
    error = caught.value
    assert error.source == "export.csv"
    assert "'Reply'" in error.problem and "assistant" in error.problem
    assert "['Q', 'A']" in error.problem


@pytest.mark.parametrize(
    ("column_map", "message"),
    [
        ({"user": "Q", "assistant": "A", "bot": "B"}, "keys must be system, user or assistant"),
        ({"user": "Q"}, "needs at least 'user' and 'assistant'"),
        ({"assistant": "A", "system": "S"}, "needs at least 'user' and 'assistant'"),
    ],
)
def test_invalid_column_maps_are_refused_by_the_options(
    column_map: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        PrepareOptions(column_map=column_map)


# -- label mode ------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["positive", "negative"])
def test_label_flag_gives_every_text_that_label(label: str) -> None:
    result = plan(["Comment"], label=label)
    assert result.kind == "labelled_text"
    assert result.columns == {"text": "Comment"}
    assert result.label == label
    assert result.system_instruction == DEFAULT_LABEL_INSTRUCTION
    assert f"label = {label!r}" in result.describe()


def test_label_flag_ignores_an_existing_label_column() -> None:
    result = plan(["text", "label"], label="negative")
    assert result.columns == {"text": "text"}
    assert result.label == "negative"


def test_label_flag_takes_the_only_other_column_as_text() -> None:
    result = plan(["notes", "Label"], label="positive")
    assert result.columns == {"text": "notes"}


def test_label_mode_system_instruction_can_be_replaced() -> None:
    result = plan(["text"], label="positive", system_instruction="Say how the rider felt.")
    assert result.system_instruction == "Say how the rider felt."


def test_label_column_option_names_the_label_column() -> None:
    result = plan(["body", "Stars"], label_column="stars")
    assert result.kind == "labelled_text"
    assert result.columns == {"text": "body", "label": "Stars"}
    assert result.label is None


def test_text_and_label_column_options_match_in_any_case() -> None:
    result = plan(["id", "Feedback", "Verdict"], text_column="FEEDBACK", label_column="verdict")
    assert result.columns == {"text": "Feedback", "label": "Verdict"}


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["text", "label"], {"text": "text", "label": "label"}),
        (["Review", "Sentiment"], {"text": "Review", "label": "Sentiment"}),
        (["id", "comment", "CLASS"], {"text": "comment", "label": "CLASS"}),
    ],
)
def test_text_and_label_columns_are_found_without_options(
    columns: list[str], expected: dict[str, str]
) -> None:
    result = plan(columns)
    assert result.kind == "labelled_text"
    assert result.columns == expected
    assert result.label is None
    assert result.system_instruction == DEFAULT_LABEL_INSTRUCTION


def test_label_flag_without_a_text_column_is_an_input_error() -> None:
    with pytest.raises(InputError) as caught:
        plan(["x", "y"], label="positive")
    assert caught.value.source == "export.csv"
    assert "no text column" in caught.value.problem
    assert "--text-column" in caught.value.problem


def test_missing_named_text_column_is_an_input_error() -> None:
    with pytest.raises(InputError) as caught:
        plan(["review", "label"], text_column="comment_text")
    assert "'comment_text'" in caught.value.problem
    assert "text column" in caught.value.problem


def test_missing_named_label_column_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"'verdict'.*label column"):
        plan(["text", "label"], label_column="verdict")


def test_label_mode_without_any_label_is_an_input_error() -> None:
    with pytest.raises(InputError, match="needs a label column"):
        plan(["body"], text_column="body")


# -- applying a plan -------------------------------------------------------------------------


def test_apply_plan_trims_cells_and_lower_cases_labels_only() -> None:
    result = plan(["Text", "Label"])
    table = pa.table(
        {"Text": ["  Great Crossing!  ", "\tLate AGAIN\n"], "Label": [" Positive ", "NEGATIVE"]}
    )
    mapped = apply_plan(result, table)
    assert mapped.column_names == ["text", "label"]
    assert mapped.to_pylist() == [
        {"text": "Great Crossing!", "label": "positive"},
        {"text": "Late AGAIN", "label": "negative"},
    ]


def test_apply_plan_with_label_flag_repeats_the_label() -> None:
    result = plan(["Text"], label="negative")
    mapped = apply_plan(result, pa.table({"Text": [" A ", "b", "C"]}))
    assert mapped.to_pylist() == [
        {"text": "A", "label": "negative"},
        {"text": "b", "label": "negative"},
        {"text": "C", "label": "negative"},
    ]


def test_apply_plan_renames_pair_columns_to_roles_and_keeps_case() -> None:
    result = plan(
        ["Persona", "Q", "A"], column_map={"user": "Q", "assistant": "A", "system": "persona"}
    )
    assert result.columns["system"] == "Persona"
    table = pa.table({"Persona": [" Be Brief "], "Q": ["  Hello?\n"], "A": ["\tHI THERE "]})
    mapped = apply_plan(result, table)
    assert sorted(mapped.column_names) == ["assistant", "system", "user"]
    assert mapped.to_pylist() == [{"user": "Hello?", "assistant": "HI THERE", "system": "Be Brief"}]


def test_apply_plan_keeps_inner_whitespace_and_line_breaks() -> None:
    result = plan(["question", "answer"])
    table = pa.table({"question": [" a  b "], "answer": ["\nline 1\nline 2\n"]})
    mapped = apply_plan(result, table)
    assert mapped.to_pylist() == [{"user": "a  b", "assistant": "line 1\nline 2"}]


def test_to_chat_columns_of_a_label_plan() -> None:
    result = plan(["text", "label"])
    mapped = apply_plan(result, pa.table({"text": ["Nice"], "label": ["POSITIVE"]}))
    columns = to_chat_columns(result, mapped)
    assert {role: array.to_pylist() for role, array in columns.items()} == {
        "user": ["Nice"],
        "assistant": ["positive"],
        "system": [DEFAULT_LABEL_INSTRUCTION],
    }


def test_to_chat_columns_prefers_the_system_column_to_the_instruction() -> None:
    result = plan(["system", "user", "assistant"], system_instruction="Fallback")
    mapped = apply_plan(result, pa.table({"system": ["S"], "user": ["U"], "assistant": ["A"]}))
    columns = to_chat_columns(result, mapped)
    assert columns["system"].to_pylist() == ["S"]

"""OpenAI's chat fine-tuning file rules: every issue code, line numbers, limits and counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftpipe import tokens
from ftpipe.chat_format import (
    ALLOWED_KEYS,
    KNOWN_ROLES,
    MIN_EXAMPLES,
    FileCheck,
    FormatIssue,
    check_example,
    check_jsonl,
    check_jsonl_file,
)

MODEL = "gpt-4o-mini"


def chat(user: str = "Hi", answer: str = "Hello!") -> dict:
    return {
        "messages": [
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def lines_of(examples: list[object]) -> list[str]:
    return [json.dumps(example) + "\n" for example in examples]


def codes(example: object) -> list[str]:
    return [issue.code for issue in check_example(example)]


def test_constants() -> None:
    assert MIN_EXAMPLES == 10
    assert {"system", "user", "assistant", "tool", "function"} == KNOWN_ROLES
    assert "weight" in ALLOWED_KEYS and "tool_call_id" in ALLOWED_KEYS


def test_good_examples_have_no_issues() -> None:
    assert check_example(chat()) == []
    tool_use = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
            {"role": "assistant", "content": "It is 12 C.", "weight": 1},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        ]
    }
    assert check_example(tool_use) == []
    parts = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    vision = {
        "messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "A"}]
    }
    assert check_example(vision) == []


USER = {"role": "user", "content": "a"}
ANSWER = {"role": "assistant", "content": "b"}


def ex(*messages: object) -> dict:
    return {"messages": list(messages)}


def answer(**fields: object) -> dict:
    return {**ANSWER, **fields}


@pytest.mark.parametrize(
    ("example", "code"),
    [
        ([1, 2], "data_type"),
        ("text", "data_type"),
        (ex("hi", ANSWER), "data_type"),
        ({"prompt": "a", "completion": "b"}, "missing_messages_list"),
        (ex(), "missing_messages_list"),
        ({"messages": "hi"}, "missing_messages_list"),
        (ex({"content": "a"}, ANSWER), "message_missing_key"),
        (ex(USER, answer(mood="ok")), "message_unrecognized_key"),
        (ex({"role": "bot", "content": "a"}, ANSWER), "unrecognized_role"),
        (ex({"role": ["user"], "content": "a"}, ANSWER), "unrecognized_role"),
        (ex({"role": "user"}, ANSWER), "missing_content"),
        (ex({"role": "user", "content": None}, ANSWER), "missing_content"),
        (ex({"role": "system", "content": ""}, ANSWER), "missing_content"),
        (ex({"role": "user", "content": 42}, ANSWER), "missing_content"),
        (ex(USER, answer(content=None)), "missing_content"),
        (ex(USER, answer(content=[{"type": "text", "text": "b"}])), "missing_content"),
        (ex(USER, answer(content="", tool_calls=[])), "missing_content"),
        (ex({"role": "user", "content": [{"type": "audio"}]}, ANSWER), "missing_content"),
        (ex({"role": "user", "content": [{"type": "image_url"}]}, ANSWER), "missing_content"),
        (ex({"role": "system", "content": "a"}, USER), "example_missing_assistant_message"),
        (ex(USER, answer(weight=2)), "invalid_weight"),
        (ex(USER, answer(weight=True)), "invalid_weight"),
        (ex(USER, answer(weight=0.5)), "invalid_weight"),
        (ex({**USER, "weight": 1}, ANSWER), "invalid_weight"),
    ],
)
def test_each_issue_code(example: object, code: str) -> None:
    assert codes(example) == [code]


def test_messages_name_the_message_and_field() -> None:
    example = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "bot", "content": "b", "mood": "x"},
            {"role": "assistant", "content": "c", "weight": 3},
        ]
    }
    assert check_example(example) == [
        FormatIssue("message_unrecognized_key", "message 2 has unrecognized key 'mood'"),
        FormatIssue("unrecognized_role", "message 2 has unknown role 'bot'"),
        FormatIssue("invalid_weight", "message 3 has weight 3; weight must be 0 or 1"),
    ]


def test_weight_zero_is_allowed() -> None:
    example = chat()
    example["messages"][2]["weight"] = 0
    assert check_example(example) == []


def test_valid_file_counts_tokens_per_example() -> None:
    examples = [chat(user=f"question {i}") for i in range(MIN_EXAMPLES)]
    result = check_jsonl(lines_of(examples), MODEL)
    assert isinstance(result, FileCheck)
    assert result.ok and result.first_error() is None
    assert result.examples == MIN_EXAMPLES and result.bad == [] and result.too_long == []
    assert result.token_counts == [
        tokens.count_message_tokens(example["messages"], MODEL) for example in examples
    ]


def test_nine_examples_are_too_few_and_ten_are_enough() -> None:
    nine = check_jsonl(lines_of([chat()] * 9), MODEL)
    assert not nine.ok
    assert nine.first_error() == "the file has 9 examples; at least 10 are required"
    assert check_jsonl(lines_of([chat()] * 10), MODEL).ok


def test_line_numbers_count_blank_lines() -> None:
    lines = lines_of([chat()] * 3)
    lines += ["\n", "   \n"]
    lines += lines_of([{"messages": [{"role": "user", "content": "only a question"}]}])
    lines += ["\r\n", *lines_of([chat()] * 7), ""]
    result = check_jsonl(lines, MODEL)
    assert result.examples == 11
    assert [check.line for check in result.bad] == [6]
    assert result.bad[0].tokens is None
    assert result.first_error() == "line 6: example has no assistant message"
    assert len(result.token_counts) == 10


def test_first_error_reports_the_earliest_line() -> None:
    lines = lines_of([chat()] * 10)
    lines[7] = "not json\n"
    lines[3] = json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n"
    result = check_jsonl(lines, MODEL)
    assert [check.line for check in result.bad] == [4, 8]
    assert result.first_error() == "line 4: message 1 has unknown role 'bot'"
    assert [issue.code for issue in result.bad[0].issues] == [
        "unrecognized_role",
        "example_missing_assistant_message",
    ]


def test_too_long_example_for_a_small_limit_model() -> None:
    model = "gpt-3.5-turbo-0613"
    long_answer = "word " * 5000
    examples = [chat()] * 6 + [chat(answer=long_answer)] + [chat()] * 3
    result = check_jsonl(lines_of(examples), model)
    assert result.bad == []
    assert [check.line for check in result.too_long] == [7]
    count = result.too_long[0].tokens
    assert count is not None and count > 4096
    assert count == tokens.count_message_tokens(examples[6]["messages"], model)
    assert not result.ok
    assert result.first_error() == (
        f"line 7: example has {count} tokens, over the 4096-token limit of gpt-3.5-turbo-0613"
    )
    assert check_jsonl(lines_of(examples), "gpt-4o-mini").ok


def test_unknown_model_has_no_token_limit() -> None:
    examples = [chat(answer="word " * 5000)] * 10
    assert check_jsonl(lines_of(examples), "some-local-model").ok


def test_invalid_json_and_invalid_utf8_lines() -> None:
    good = [line.encode() for line in lines_of([chat()] * 10)]
    lines = [*good[:2], b'{"messages": [\n', b"\xff\xfe{}\n", b"NaN\n", *good[2:]]
    result = check_jsonl(lines, MODEL)
    assert result.examples == 13
    assert [check.line for check in result.bad] == [3, 4, 5]
    assert all(check.issues[0].code == "invalid_json" for check in result.bad)
    assert "UTF-8" in result.bad[1].issues[0].message
    assert result.first_error() is not None
    assert result.first_error().startswith("line 3: not valid JSON")


def test_json_that_is_not_an_object_is_data_type() -> None:
    lines = ["[1, 2]\n", '"text"\n', *lines_of([chat()] * 10)]
    result = check_jsonl(lines, MODEL)
    assert [(check.line, check.issues[0].code) for check in result.bad] == [
        (1, "data_type"),
        (2, "data_type"),
    ]
    assert result.first_error() == "line 1: example is not a JSON object"


def test_check_jsonl_file_reads_bytes(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    body = "".join(lines_of([chat(user="Grüße 🙂")] * 10))
    path.write_bytes(("\ufeff" + body).encode() + b"\n\n" + b"\xc3\x28\n")
    result = check_jsonl_file(path, MODEL)
    assert result.examples == 11
    assert [check.line for check in result.bad] == [13]
    assert result.first_error() == "line 13: not valid UTF-8 (bad byte at offset 0)"
    assert len(result.token_counts) == 10

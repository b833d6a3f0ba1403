"""OpenAI's function-calling fine-tuning format: accepted, rejected with a clear line, counted,
kept by `prepare`, accepted by the local server and rendered for the real trainer."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from ftpipe import tokens
from ftpipe.chat_format import FormatIssue, check_example, check_jsonl, check_jsonl_file
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import prepare
from ftpipe.training.data import (
    IGNORE,
    chat_inputs,
    supports_tools,
    tokenise,
    tokenise_file,
    training_template,
)
from ftpipe.training.templates import (
    CHATML_WITH_GENERATION,
    example_tools,
    tool_call_text,
    tool_response_text,
    tools_text,
)
from tests.conftest import write_jsonl

MODEL = "gpt-4o-mini"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}


def call(call_id: str = "call_1", city: str = "Oslo") -> dict[str, Any]:
    arguments = json.dumps({"city": city})
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }


def tool_example(i: int = 0) -> dict[str, Any]:
    """A full round: question, call (no content key), tool result, answer; with `tools`."""
    city = f"City{i}"
    return {
        "messages": [
            {"role": "system", "content": "You answer weather questions."},
            {"role": "user", "content": f"How warm is it in {city}?"},
            {"role": "assistant", "tool_calls": [call("call_1", city)]},
            {"role": "tool", "tool_call_id": "call_1", "content": f"{i} C"},
            {"role": "assistant", "content": f"It is {i} C in {city}.", "weight": 1},
        ],
        "tools": [WEATHER],
    }


def parallel_example() -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": "Oslo and Bergen?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [call("call_a", "Oslo"), call("call_b", "Bergen")],
                "weight": 0,
            },
            {"role": "tool", "tool_call_id": "call_b", "content": "9 C"},
            {"role": "tool", "tool_call_id": "call_a", "content": "12 C"},
            {"role": "assistant", "content": "Oslo 12 C, Bergen 9 C."},
        ],
        "tools": [WEATHER],
        "parallel_tool_calls": True,
    }


def legacy_example(i: int = 0) -> dict[str, Any]:
    """The same round in the legacy functions / function_call / function-role form."""
    city = f"City{i}"
    arguments = json.dumps({"city": city})
    return {
        "messages": [
            {"role": "system", "content": "You answer weather questions."},
            {"role": "user", "content": f"How warm is it in {city}?"},
            {"role": "assistant", "function_call": {"name": "get_weather", "arguments": arguments}},
            {"role": "function", "name": "get_weather", "content": f"{i} C"},
            {"role": "assistant", "content": f"It is {i} C in {city}.", "weight": 1},
        ],
        "functions": [WEATHER["function"]],
    }


def lines_of(examples: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(example) + "\n" for example in examples]


# -- the rules ---------------------------------------------------------------------------------


def test_openai_function_calling_examples_are_accepted() -> None:
    ends_with_a_call = tool_example()
    ends_with_a_call["messages"] = ends_with_a_call["messages"][:3]
    empty_content = tool_example()
    empty_content["messages"][2]["content"] = ""
    no_tools = tool_example()
    no_tools["tools"] = None
    for example in (
        tool_example(),
        parallel_example(),
        legacy_example(),
        ends_with_a_call,
        empty_content,
        no_tools,
    ):
        assert check_example(example) == []


def edit(change: Callable[[dict[str, Any]], object], base: Callable = tool_example) -> dict:
    example = copy.deepcopy(base())
    change(example)
    return example


def messages(example: dict[str, Any]) -> list[dict[str, Any]]:
    return example["messages"]


def first_call(example: dict[str, Any]) -> dict[str, Any]:
    return example["messages"][2]["tool_calls"][0]


REJECTED = [
    (
        edit(lambda e: messages(e)[3].update(tool_call_id="call_9")),
        "invalid_tool_result",
        "message 4 'tool_call_id' 'call_9' matches no earlier unanswered tool call",
    ),
    (
        edit(lambda e: messages(e)[3].pop("tool_call_id")),
        "invalid_tool_result",
        "message 4 (tool) has no 'tool_call_id'",
    ),
    (
        edit(lambda e: messages(e).insert(4, dict(messages(e)[3]))),
        "invalid_tool_result",
        "message 5 'tool_call_id' 'call_1' matches no earlier unanswered tool call",
    ),
    (
        edit(lambda e: first_call(e)["function"].update(arguments={"city": "Oslo"})),
        "invalid_tool_call",
        "message 3 tool call 1 'arguments' must be a JSON string, not an object",
    ),
    (
        edit(lambda e: first_call(e)["function"].update(arguments="{city: Oslo}")),
        "invalid_tool_call",
        "message 3 tool call 1 'arguments' is not valid JSON",
    ),
    (
        edit(lambda e: first_call(e)["function"].pop("name")),
        "invalid_tool_call",
        "message 3 tool call 1 has no function 'name'",
    ),
    (
        edit(lambda e: first_call(e).pop("id")),
        "invalid_tool_call",
        "message 3 tool call 1 has no 'id'",
    ),
    (
        edit(lambda e: first_call(e).update(type="tool")),
        "invalid_tool_call",
        "message 3 tool call 1 'type' must be 'function'",
    ),
    (
        edit(lambda e: messages(e)[2].update(tool_calls=call())),
        "invalid_tool_call",
        "message 3 'tool_calls' must be a list, not an object",
    ),
    (
        edit(lambda e: messages(e)[2].update(tool_calls=[call(), call("call_1", "Bergen")])),
        "invalid_tool_call",
        "message 3 uses tool call id 'call_1' twice",
    ),
    (
        edit(lambda e: messages(e)[2].update(function_call={"name": "f", "arguments": "{}"})),
        "invalid_tool_call",
        "message 3 has both 'tool_calls' and 'function_call'",
    ),
    (
        edit(lambda e: e.update(tools=WEATHER)),
        "invalid_tools",
        "'tools' must be a list, not an object",
    ),
    (
        edit(lambda e: e.update(tools=[{"type": "function", "function": {"name": "get weather"}}])),
        "invalid_tools",
        "'tools' item 1 has name 'get weather'; a name is 1-64 letters, digits, '_' or '-'",
    ),
    (
        edit(lambda e: e.update(tools=[{"type": "function", "function": {"description": "x"}}])),
        "invalid_tools",
        "'tools' item 1 has no 'name'; a name is 1-64 letters, digits, '_' or '-'",
    ),
    (
        edit(
            lambda e: e.update(
                tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]
            )
        ),
        "invalid_tools",
        "'tools' item 1 'parameters' must be a JSON object",
    ),
    (
        edit(lambda e: e.update(tools=[WEATHER["function"]])),
        "invalid_tools",
        """'tools' item 1 must be {"type": "function", ...}""",
    ),
    (
        edit(lambda e: e.update(tools=[WEATHER] * 129)),
        "invalid_tools",
        "'tools' has 129 items; at most 128 are allowed",
    ),
    (
        edit(lambda e: e.update(functions="get_weather")),
        "invalid_tools",
        "'functions' must be a list, not a string",
    ),
    (
        edit(lambda e: e.update(parallel_tool_calls="yes")),
        "invalid_tools",
        "'parallel_tool_calls' must be true or false",
    ),
    (
        edit(lambda e: messages(e)[2].pop("tool_calls")),
        "missing_content",
        "message 3 (assistant) has neither content nor tool_calls",
    ),
    (
        edit(lambda e: messages(e).pop()),
        "last_message_not_assistant",
        "message 4 is the last but has role 'tool'; an example must end with an assistant message",
    ),
    (
        edit(lambda e: messages(e)[1].update(tool_calls=[call()])),
        "message_unrecognized_key",
        "message 2 has key 'tool_calls', which only assistant messages may have",
    ),
    (
        edit(lambda e: messages(e)[4].update(tool_call_id="call_1")),
        "message_unrecognized_key",
        "message 5 has key 'tool_call_id', which only tool messages may have",
    ),
    (
        edit(lambda e: messages(e)[3].update(content=[{"type": "text", "text": "0 C"}])),
        "missing_content",
        "message 4 content must be a string",
    ),
    (
        edit(lambda e: messages(e)[3].update(weight=1)),
        "invalid_weight",
        "message 4 has a weight, but only assistant messages may have one",
    ),
    (
        edit(lambda e: messages(e)[3].update(name="other"), legacy_example),
        "invalid_tool_result",
        "message 4 (function) 'name' 'other' matches no earlier function_call",
    ),
    (
        edit(lambda e: messages(e)[2]["function_call"].update(arguments={}), legacy_example),
        "invalid_tool_call",
        "message 3 function_call 'arguments' must be a JSON string, not an object",
    ),
]


@pytest.mark.parametrize(("example", "code", "message"), REJECTED)
def test_malformed_variants_are_rejected_naming_the_field(
    example: dict, code: str, message: str
) -> None:
    assert check_example(example)[0] == FormatIssue(code, message)


def test_a_bad_line_fails_the_file_naming_line_and_field() -> None:
    examples = [tool_example(i) for i in range(12)]
    examples[3] = REJECTED[3][0]
    result = check_jsonl(lines_of(examples), MODEL)
    assert [check.line for check in result.bad] == [4]
    assert result.first_error() == (
        "line 4: message 3 tool call 1 'arguments' must be a JSON string, not an object"
    )


# -- token counts ------------------------------------------------------------------------------


COOKBOOK_SYSTEM = "You are a helpful assistant that can answer to questions about the weather."


def test_tool_definitions_are_counted_with_the_cookbook_estimate() -> None:
    """The cookbook's own example (How_to_count_tokens_with_tiktoken): 101 tokens for the
    gpt-4o family, 105 for gpt-3.5-turbo / gpt-4."""
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_current_weather",
                "description": "Get the current weather in a given location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "location": {
                            "type": "string",
                            "description": "The city and state, e.g. San Francisco, CA",
                        },
                        "unit": {
                            "type": "string",
                            "description": "The unit of temperature to return",
                            "enum": ["celsius", "fahrenheit"],
                        },
                    },
                    "required": ["location"],
                },
            },
        }
    ]
    chat = [
        {"role": "system", "content": COOKBOOK_SYSTEM},
        {"role": "user", "content": "What's the weather like in San Francisco?"},
    ]
    for model, expected in (("gpt-4o-mini", 101), ("gpt-4o", 101), ("gpt-4", 105)):
        assert tokens.count_example_tokens({"messages": chat, "tools": tools}, model) == expected
    legacy = {"messages": chat, "functions": [tools[0]["function"]]}
    assert tokens.count_example_tokens(legacy, "gpt-3.5-turbo") == 105


def test_file_check_counts_messages_plus_definitions() -> None:
    examples = [tool_example(i) for i in range(10)]
    result = check_jsonl(lines_of(examples), MODEL)
    assert result.ok
    for example, count in zip(examples, result.token_counts, strict=True):
        functions = [WEATHER["function"]]
        expected = tokens.count_message_tokens(example["messages"], MODEL)
        expected += tokens.count_function_tokens(functions, MODEL)
        assert count == expected == tokens.count_example_tokens(example, MODEL)
        assert count > tokens.count_message_tokens(example["messages"], MODEL)


def test_unusual_schemas_are_estimated_without_failing() -> None:
    functions = [
        {"name": "ping"},
        {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": ["a", "b"]}}}},
        {"name": "g", "parameters": {"properties": {"n": {"enum": [1, 2], "items": {"a": 1}}}}},
    ]
    assert tokens.count_function_tokens(functions, MODEL) > tokens.count_function_tokens([], MODEL)
    assert tokens.count_function_tokens([], MODEL) == 0


# -- prepare -----------------------------------------------------------------------------------


def test_prepare_keeps_tool_examples_unchanged_and_rejects_the_malformed(tmp_path: Path) -> None:
    good = [tool_example(i) for i in range(12)] + [parallel_example(), legacy_example(99)]
    bad = edit(lambda e: messages(e)[3].update(tool_call_id="call_9"))
    source = write_jsonl(tmp_path / "tools.jsonl", [*good[:4], bad, *good[4:]])
    result = prepare([source], PrepareOptions(), out_root=tmp_path / "out")
    written = [
        line
        for path in (result.train_path, result.validation_path)
        if path
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(written) == sorted(json.dumps(e, ensure_ascii=False) for e in good)
    assert result.report["counts"]["rejected"] == 1
    rejects = (result.out_dir / "rejects.csv").read_text(encoding="utf-8").splitlines()
    assert rejects[1].startswith(f"{source},5,messages,invalid_tool_result,message 4 ")
    expected = sum(tokens.count_example_tokens(e, MODEL) for e in good)
    assert result.report["tokens"]["total"] == expected
    assert check_jsonl_file(result.train_path, MODEL).ok


# -- the local server --------------------------------------------------------------------------


def test_server_trains_on_tool_examples_and_refuses_malformed_ones(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    good = [tool_example(i) for i in range(10)] + [parallel_example(), legacy_example(7)]
    path = write_jsonl(tmp_path / "tools.jsonl", good)
    training = client.files.create(file=path, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training)
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.trained_tokens and job.trained_tokens > 0

    bad = [*good[:5], REJECTED[0][0], *good[5:]]
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    training = client.files.create(file=path, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=MODEL, training_file=training)
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "failed"
    assert job.error is not None and job.error.param == "training_file"
    assert job.error.message.endswith(
        "line 6: message 4 'tool_call_id' 'call_9' matches no earlier unanswered tool call"
    )


# -- the real trainer's data -------------------------------------------------------------------


# ChatML with generation markers but no tool support: the plain-text rendering applies
PLAIN_CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}{{- message['content'] + '<|im_end|>' + '\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# not ChatML, no markers, no tools: spans come from rendered prefixes
HASH_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}### assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def trained_text(tokenizer: Any, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([i for i, label in zip(ids, labels, strict=True) if label != IGNORE])


def tokenised(tokenizer: Any, template: str, example: dict) -> tuple[list[int], list[int]]:
    ids, labels, truncated = tokenise(
        tokenizer, template, example["messages"], 4096, example_tools(example)
    )
    assert not truncated
    return ids, labels


def test_tool_turns_render_through_a_tool_aware_template(tokenizer: Any) -> None:
    assert supports_tools(CHATML_WITH_GENERATION)
    ids, labels = tokenised(tokenizer, CHATML_WITH_GENERATION, tool_example(3))
    text = tokenizer.decode(ids)
    assert text.startswith(
        "<|im_start|>system\nYou answer weather questions.\n\n" + tools_text([WEATHER])
    )
    assert "<|im_start|>user\n" + tool_response_text("3 C") + "<|im_end|>" in text
    call_text = tool_call_text("get_weather", {"city": "City3"})
    assert trained_text(tokenizer, ids, labels) == (
        call_text + "<|im_end|>" + "It is 3 C in City3.<|im_end|>"
    )


def test_weight_zero_call_turns_and_tool_results_are_not_trained(tokenizer: Any) -> None:
    ids, labels = tokenised(tokenizer, CHATML_WITH_GENERATION, parallel_example())
    assert trained_text(tokenizer, ids, labels) == "Oslo 12 C, Bergen 9 C.<|im_end|>"
    assert tool_response_text("9 C") + "\n" + tool_response_text("12 C") in tokenizer.decode(ids)


def test_templates_without_tools_get_the_same_text_as_plain_text(tokenizer: Any) -> None:
    assert not supports_tools(PLAIN_CHATML)
    for example in (tool_example(5), parallel_example()):
        plain = tokenised(tokenizer, PLAIN_CHATML, example)
        assert plain == tokenised(tokenizer, CHATML_WITH_GENERATION, example)


def test_plain_text_rendering_in_another_template(tokenizer: Any) -> None:
    assert not supports_tools(HASH_TEMPLATE)
    messages, tools = chat_inputs(HASH_TEMPLATE, tool_example(4)["messages"], [WEATHER])
    assert tools is None
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    ids, labels = tokenised(tokenizer, HASH_TEMPLATE, tool_example(4))
    text = tokenizer.decode(ids)
    assert "### user\n" + tool_response_text("4 C") + "\n### assistant\n" in text
    call_text = tool_call_text("get_weather", {"city": "City4"})
    assert trained_text(tokenizer, ids, labels) == call_text + "It is 4 C in City4."


def test_legacy_functions_render_like_tools(tokenizer: Any) -> None:
    for template in (CHATML_WITH_GENERATION, HASH_TEMPLATE):
        assert tokenised(tokenizer, template, legacy_example(2)) == tokenised(
            tokenizer, template, tool_example(2)
        )


def test_files_and_local_counts_include_the_tools(
    tokenizer: Any, tiny_model: Path, tmp_path: Path
) -> None:
    examples = [tool_example(1), parallel_example(), legacy_example(6)]
    data = tokenise_file(
        write_jsonl(tmp_path / "t.jsonl", examples), tokenizer, CHATML_WITH_GENERATION, 4096
    )
    expected = [tokenised(tokenizer, CHATML_WITH_GENERATION, example) for example in examples]
    assert [(row["input_ids"], row["labels"]) for row in data.rows] == expected
    local = tokens.LocalEncoding(tiny_model)
    assert training_template(tokenizer.chat_template) == CHATML_WITH_GENERATION
    for example, (ids, _) in zip(examples, expected, strict=True):
        assert local.count_messages(example["messages"], example_tools(example)) == len(ids)

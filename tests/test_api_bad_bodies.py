"""Malformed requests to every route: each is a 400 in OpenAI's envelope naming the bad parameter,
never a 500 (which the SDK retries) and never a traceback in the server's log.

The table sits beside the route tests' own bad-input cases; it covers the kinds: wrong JSON types
at any depth, nulls where objects belong, unknown enum values, numbers out of range or beyond
int64, non-JSON and non-object bodies, and bad query parameters.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from ftpipe.local_api.routes import models as model_routes
from ftpipe.local_api.server import RunningServer, start_in_thread
from ftpipe.settings import FaultSettings, LocalApiSettings
from tests.conftest import qa_examples, strict_client
from tests.openapi import error_of, spec_available, validate

AUTH = {"Authorization": "Bearer test-key"}
MODEL = "gpt-4o-mini"
USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": MODEL, "messages": USER}
FILE, JOB = "<training-file>", "<job>"  # replaced by the shared server's ids
JOB_BODY = {"model": MODEL, "training_file": FILE}
UPLOAD = {"filename": "t.jsonl", "purpose": "fine-tune", "bytes": 8, "mime_type": "text/jsonl"}


def _noise_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


PNG = _noise_png()
TRUNCATED_PNG = _data_url(PNG[: len(PNG) // 2])  # the header reads, the pixels do not


def image(url: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url, **extra}}]}
    ]


def chat(**fields: Any) -> dict[str, Any]:
    return {**CHAT, **fields}


def job(**fields: Any) -> dict[str, Any]:
    return {**JOB_BODY, **fields}


def supervised(hyperparameters: Any) -> dict[str, Any]:
    return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}


@dataclass(frozen=True)
class Case:
    """A request and the `param` its 400 must name (None: the body as a whole is unusable)."""

    id: str
    path: str
    body: Any = None
    param: str | None = None
    method: str = "POST"
    raw: bytes | None = None


CASES = [
    # chat completions: scalars of the wrong type or out of range
    Case("stream-yes", "/chat/completions", chat(stream="yes"), "stream"),
    Case("n-two", "/chat/completions", chat(n="two"), "n"),
    Case("n-zero", "/chat/completions", chat(n=0), "n"),
    Case("temperature-3", "/chat/completions", chat(temperature=3), "temperature"),
    Case("temperature-string", "/chat/completions", chat(temperature="hot"), "temperature"),
    Case("top-p-negative", "/chat/completions", chat(top_p=-0.1), "top_p"),
    Case("seed-string", "/chat/completions", chat(seed="42"), "seed"),
    Case("seed-beyond-int64", "/chat/completions", chat(seed=2**70), "seed"),
    Case("max-tokens-zero", "/chat/completions", chat(max_tokens=0), "max_tokens"),
    Case("max-tokens-float", "/chat/completions", chat(max_tokens=1.5), "max_tokens"),
    Case("model-number", "/chat/completions", {"model": 5, "messages": USER}, "model"),
    Case("model-null", "/chat/completions", {"model": None, "messages": USER}, "model"),
    Case("model-missing", "/chat/completions", {"messages": USER}, "model"),
    Case("stop-number", "/chat/completions", chat(stop=5), "stop"),
    Case("stop-item-number", "/chat/completions", chat(stop=["a", 1]), "stop.[1]"),
    Case("stop-five", "/chat/completions", chat(stop=list("abcde")), "stop"),
    Case("logit-bias-value", "/chat/completions", chat(logit_bias={"42": 500}), "logit_bias.42"),
    Case("logit-bias-key", "/chat/completions", chat(logit_bias={"word": 1}), "logit_bias"),
    Case("metadata-number", "/chat/completions", chat(metadata={"k": 5}), "metadata.k"),
    Case("service-tier", "/chat/completions", chat(service_tier="gold"), "service_tier"),
    # chat completions: objects of the wrong shape
    Case(
        "response-format-string",
        "/chat/completions",
        chat(response_format="json"),
        "response_format",
    ),
    Case(
        "response-format-type",
        "/chat/completions",
        chat(response_format={"type": "xml"}),
        "response_format.type",
    ),
    Case(
        "response-format-schema-name",
        "/chat/completions",
        chat(response_format={"type": "json_schema", "json_schema": {}}),
        "response_format.json_schema.name",
    ),
    Case(
        "stream-options-string",
        "/chat/completions",
        chat(stream=True, stream_options="x"),
        "stream_options",
    ),
    Case(
        "stream-options-usage",
        "/chat/completions",
        chat(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
    ),
    Case(
        "stream-options-without-stream",
        "/chat/completions",
        chat(stream_options={"include_usage": True}),
        "stream_options",
    ),
    Case("tools-string", "/chat/completions", chat(tools="x"), "tools"),
    Case(
        "tool-name",
        "/chat/completions",
        chat(tools=[{"type": "function", "function": {"name": "no spaces allowed"}}]),
        "tools.[0].function.name",
    ),
    Case(
        "tool-parameters",
        "/chat/completions",
        chat(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
        "tools.[0].function.parameters",
    ),
    Case(
        "tool-choice-function",
        "/chat/completions",
        chat(tool_choice={"type": "function"}),
        "tool_choice.function",
    ),
    Case("tool-choice-value", "/chat/completions", chat(tool_choice="always"), "tool_choice"),
    # chat completions: messages
    Case("messages-string", "/chat/completions", chat(messages="hi"), "messages"),
    Case("messages-empty", "/chat/completions", chat(messages=[]), "messages"),
    Case("message-string", "/chat/completions", chat(messages=["hi"]), "messages.[0]"),
    Case("message-null", "/chat/completions", chat(messages=[None]), "messages.[0]"),
    Case(
        "role-number",
        "/chat/completions",
        chat(messages=[{"role": 5, "content": "x"}]),
        "messages.[0].role",
    ),
    Case(
        "role-missing", "/chat/completions", chat(messages=[{"content": "x"}]), "messages.[0].role"
    ),
    Case(
        "name-number",
        "/chat/completions",
        chat(messages=[{"role": "user", "content": "x", "name": 5}]),
        "messages.[0].name",
    ),
    Case(
        "content-object",
        "/chat/completions",
        chat(messages=[{"role": "user", "content": {"text": "x"}}]),
        "messages.[0].content",
    ),
    Case(
        "content-part-string",
        "/chat/completions",
        chat(messages=[{"role": "user", "content": ["hi"]}]),
        "messages.[0].content.[0]",
    ),
    Case(
        "content-part-type",
        "/chat/completions",
        chat(messages=[{"role": "user", "content": [{"type": "video", "video": {}}]}]),
        "messages.[0].content.[0].type",
    ),
    Case(
        "tool-calls-string",
        "/chat/completions",
        chat(messages=[{"role": "assistant", "content": None, "tool_calls": "x"}]),
        "messages.[0].tool_calls",
    ),
    Case(
        "tool-call-name",
        "/chat/completions",
        chat(
            messages=[
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": 5, "arguments": ""}}
                    ],
                }
            ]
        ),
        "messages.[0].tool_calls.[0].function.name",
    ),
    # chat completions: images
    Case(
        "image-detail-ultra",
        "/chat/completions",
        chat(messages=image(_data_url(PNG), detail="ultra")),
        "messages.[0].content.[0].image_url.detail",
    ),
    Case(
        "image-detail-number",
        "/chat/completions",
        chat(messages=image(_data_url(PNG), detail=5)),
        "messages.[0].content.[0].image_url.detail",
    ),
    Case(
        "image-truncated-png",
        "/chat/completions",
        chat(messages=image(TRUNCATED_PNG)),
        "messages.[0].content.[0].image_url",
    ),
    Case(
        "image-url-string",
        "/chat/completions",
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]),
        "messages.[0].content.[0].image_url",
    ),
    Case(
        "image-url-null",
        "/chat/completions",
        chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": None}]}]),
        "messages.[0].content.[0].image_url",
    ),
    Case(
        "image-url-number",
        "/chat/completions",
        chat(
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 7}}]}]
        ),
        "messages.[0].content.[0].image_url.url",
    ),
    # fine-tuning jobs: method, hyperparameters, integrations and the other fields
    Case("method-string", "/fine_tuning/jobs", job(method="supervised"), "method"),
    Case("method-no-type", "/fine_tuning/jobs", job(method={}), "method.type"),
    Case("method-type", "/fine_tuning/jobs", job(method={"type": "banana"}), "method.type"),
    Case(
        "method-supervised-string",
        "/fine_tuning/jobs",
        job(method={"type": "supervised", "supervised": "x"}),
        "method.supervised",
    ),
    Case(
        "method-hyperparameters-list",
        "/fine_tuning/jobs",
        job(method=supervised([1, 2])),
        "method.supervised.hyperparameters",
    ),
    Case(
        "method-epochs-string",
        "/fine_tuning/jobs",
        job(method=supervised({"n_epochs": "three"})),
        "method.supervised.hyperparameters.n_epochs",
    ),
    Case(
        "method-unknown-hyperparameter",
        "/fine_tuning/jobs",
        job(method=supervised({"epochs": 3})),
        "method.supervised.hyperparameters.epochs",
    ),
    Case(
        "hyperparameters-list", "/fine_tuning/jobs", job(hyperparameters=[1, 2]), "hyperparameters"
    ),
    Case(
        "batch-size-huge",
        "/fine_tuning/jobs",
        job(hyperparameters={"batch_size": 10**30}),
        "hyperparameters.batch_size",
    ),
    Case(
        "learning-rate-negative",
        "/fine_tuning/jobs",
        job(hyperparameters={"learning_rate_multiplier": -1}),
        "hyperparameters.learning_rate_multiplier",
    ),
    Case("integrations-string", "/fine_tuning/jobs", job(integrations="wandb"), "integrations"),
    Case(
        "integrations-object",
        "/fine_tuning/jobs",
        job(integrations={"type": "wandb"}),
        "integrations",
    ),
    Case(
        "integration-string", "/fine_tuning/jobs", job(integrations=["wandb"]), "integrations.[0]"
    ),
    Case(
        "integration-wandb-string",
        "/fine_tuning/jobs",
        job(integrations=[{"type": "wandb", "wandb": "ferries"}]),
        "integrations.[0].wandb",
    ),
    Case(
        "integration-type",
        "/fine_tuning/jobs",
        job(integrations=[{"type": "slack", "wandb": {"project": "p"}}]),
        "integrations.[0].type",
    ),
    Case(
        "integration-project-missing",
        "/fine_tuning/jobs",
        job(integrations=[{"type": "wandb", "wandb": {}}]),
        "integrations.[0].wandb.project",
    ),
    Case("suffix-65", "/fine_tuning/jobs", job(suffix="x" * 65), "suffix"),
    Case("suffix-characters", "/fine_tuning/jobs", job(suffix="my:model name"), "suffix"),
    Case("suffix-number", "/fine_tuning/jobs", job(suffix=5), "suffix"),
    Case("job-seed-string", "/fine_tuning/jobs", job(seed="7"), "seed"),
    Case("validation-file-number", "/fine_tuning/jobs", job(validation_file=5), "validation_file"),
    Case("training-file-null", "/fine_tuning/jobs", job(training_file=None), "training_file"),
    Case("job-metadata-list", "/fine_tuning/jobs", job(metadata=["k"]), "metadata"),
    Case("lora-rank-huge", "/fine_tuning/jobs", job(lora_rank=10**30), "lora_rank"),
    Case("training-method", "/fine_tuning/jobs", job(training_method="qlora"), "training_method"),
    Case("job-unknown-argument", "/fine_tuning/jobs", job(trainig_file=FILE), "trainig_file"),
    # query parameters
    Case("jobs-limit-text", "/fine_tuning/jobs?limit=abc", param="limit", method="GET"),
    Case("jobs-limit-negative", "/fine_tuning/jobs?limit=-1", param="limit", method="GET"),
    Case("jobs-limit-huge", f"/fine_tuning/jobs?limit={'9' * 30}", param="limit", method="GET"),
    Case(
        "events-limit-text",
        f"/fine_tuning/jobs/{JOB}/events?limit=abc",
        param="limit",
        method="GET",
    ),
    Case(
        "checkpoints-limit-zero",
        f"/fine_tuning/jobs/{JOB}/checkpoints?limit=0",
        param="limit",
        method="GET",
    ),
    Case("files-limit-float", "/files?limit=1e3", param="limit", method="GET"),
    Case("files-order", "/files?order=sideways", param="order", method="GET"),
    Case("assistants-limit-text", "/assistants?limit=ten", param="limit", method="GET"),
    # files and uploads
    Case("upload-bytes-string", "/uploads", {**UPLOAD, "bytes": "8"}, "bytes"),
    Case("upload-bytes-negative", "/uploads", {**UPLOAD, "bytes": -1}, "bytes"),
    Case("upload-bytes-huge", "/uploads", {**UPLOAD, "bytes": 10**30}, "bytes"),
    Case("upload-purpose-null", "/uploads", {**UPLOAD, "purpose": None}, "purpose"),
    Case("upload-unknown-argument", "/uploads", {**UPLOAD, "size": 8}, "size"),
    Case("complete-part-ids-string", "/uploads/upload_x/complete", {"part_ids": "p"}, "part_ids"),
    Case(
        "complete-part-id-number", "/uploads/upload_x/complete", {"part_ids": [5]}, "part_ids.[0]"
    ),
    Case("complete-md5-number", "/uploads/upload_x/complete", {"part_ids": [], "md5": 5}, "md5"),
    # assistants and threads
    Case(
        "assistant-tool-type",
        "/assistants",
        {"model": MODEL, "tools": [{"type": "retrieval"}]},
        "tools.[0].type",
    ),
    Case(
        "assistant-response-format",
        "/assistants",
        {"model": MODEL, "response_format": 5},
        "response_format",
    ),
    Case(
        "assistant-effort",
        "/assistants",
        {"model": MODEL, "reasoning_effort": "ultra"},
        "reasoning_effort",
    ),
    Case(
        "assistant-temperature",
        "/assistants",
        {"model": MODEL, "temperature": "warm"},
        "temperature",
    ),
    Case(
        "assistant-tool-resources",
        "/assistants",
        {"model": MODEL, "tool_resources": {"code_interpreter": {"file_ids": "f"}}},
        "tool_resources.code_interpreter.file_ids",
    ),
    Case("thread-messages-string", "/threads", {"messages": "x"}, "messages"),
    Case(
        "thread-message-role",
        "/threads",
        {"messages": [{"role": "system", "content": "x"}]},
        "messages.[0].role",
    ),
    # bodies that are no JSON object at all
    Case("json-array", "/chat/completions", [CHAT]),
    Case("json-string", "/fine_tuning/jobs", "model"),
    Case("json-null", "/uploads", raw=b"null"),
    Case("not-json", "/fine_tuning/jobs", raw=b"model=gpt-4o-mini"),
    Case("json-nan", "/chat/completions", raw=b'{"model": "gpt-4o-mini", "temperature": NaN}'),
    Case(
        "json-infinity", "/assistants", raw=b'{"model": "gpt-4o-mini", "metadata": {"a": Infinity}}'
    ),
    Case(
        "json-overflow",
        "/fine_tuning/jobs",
        raw=b'{"hyperparameters": {"learning_rate_multiplier": 1e400}}',
    ),
    Case("json-deep", "/threads", raw=b"[" * 50_000 + b"]" * 50_000),
    Case("json-long-integer", "/uploads", raw=b'{"bytes": ' + b"9" * 5000 + b"}"),
]


@dataclass(frozen=True)
class Shared:
    server: RunningServer
    ids: dict[str, str]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One stand-in server for the whole table (a server per case would cost seconds), with a
    training file and a job for the cases that need ids; settings are explicit, not the env's."""
    server = start_in_thread(
        tmp_path_factory.mktemp("bad-bodies") / "state",
        local=LocalApiSettings(engine="stand-in", api_key=None),
        faults=FaultSettings(rate_429=0.0, rate_500=0.0, rate_500_after=0.0, latency_ms=0),
    )
    try:
        with httpx.Client(base_url=server.base_url, headers=AUTH, timeout=30) as http:
            lines = "".join(json.dumps(example) + "\n" for example in qa_examples(10))
            files = {"file": ("train.jsonl", lines.encode())}
            upload = http.post("/files", files=files, data={"purpose": "fine-tune"}).json()
            created = http.post(
                "/fine_tuning/jobs", json={**JOB_BODY, "training_file": upload["id"]}
            )
        yield Shared(server, {FILE: upload["id"], JOB: created.json()["id"]})
    finally:
        server.stop()


def _filled(value: Any, ids: dict[str, str]) -> Any:
    """The body with the placeholders for the shared ids replaced."""
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, dict):
        return {key: _filled(item, ids) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, ids) for item in value]
    return value


def send(shared: Shared, case: Case) -> httpx.Response:
    path = case.path
    for placeholder, real in shared.ids.items():
        path = path.replace(placeholder, real)
    if case.raw is not None:
        content = case.raw
    else:
        content = json.dumps(_filled(case.body, shared.ids)).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    url = shared.server.base_url + path
    if case.method == "GET":
        return httpx.get(url, headers=AUTH, timeout=30)
    return httpx.post(url, headers=headers, content=content, timeout=30)


def assert_clean_400(response: httpx.Response, param: str | None) -> dict[str, Any]:
    """A 400 in OpenAI's envelope naming `param`, with a one-line message and no traceback."""
    assert response.status_code == 400, response.text
    body = response.json()
    if spec_available():
        validate("ErrorResponse", body)
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert error["message"] and "\n" not in error["message"]
    assert "Traceback" not in response.text
    return error


def server_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_malformed_body_is_a_400(
    shared: Shared, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        response = send(shared, case)
    assert_clean_400(response, case.param)
    assert not server_errors(caplog), [record.getMessage() for record in server_errors(caplog)]


def test_the_table_covers_every_route_family() -> None:
    families = {case.path.split("?")[0].split("/")[1] for case in CASES}
    assert families >= {"chat", "fine_tuning", "files", "uploads", "assistants", "threads"}
    assert len(CASES) >= 25


# --- through the SDK: a 400 is a BadRequestError at once, not a retried 500 ----------------------


@pytest.fixture
def sdk(shared: Shared) -> openai.OpenAI:
    return strict_client(shared.server.base_url)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"method": "supervised"}, "method"),
        ({"hyperparameters": [1, 2]}, "hyperparameters"),
        ({"integrations": [{"type": "wandb", "wandb": "ferries"}]}, "integrations.[0].wandb"),
        ({"integrations": "wandb"}, "integrations"),
    ],
)
def test_named_job_examples_through_the_sdk(
    shared: Shared,
    sdk: openai.OpenAI,
    fields: dict[str, Any],
    param: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(openai.BadRequestError) as excinfo:
        sdk.fine_tuning.jobs.create(model=MODEL, training_file=shared.ids[FILE], extra_body=fields)
    assert error_of(excinfo)["param"] == param
    assert not server_errors(caplog)


def test_truncated_png_through_the_sdk(
    sdk: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(openai.BadRequestError) as excinfo:
        sdk.chat.completions.create(model=MODEL, messages=image(TRUNCATED_PNG))  # type: ignore[arg-type]
    error = error_of(excinfo)
    assert error["param"] == "messages.[0].content.[0].image_url"
    assert "truncated" in error["message"]
    assert not server_errors(caplog)


def test_prompt_over_the_context_window(sdk: openai.OpenAI) -> None:
    huge = [{"role": "user", "content": "hello " * 130_000}]
    with pytest.raises(openai.BadRequestError) as excinfo:
        sdk.chat.completions.create(model=MODEL, messages=huge)  # type: ignore[arg-type]
    error = error_of(excinfo)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert error["message"].startswith(
        "This model's maximum context length is 128000 tokens. However, your messages resulted in "
    )
    assert error["message"].endswith("tokens. Please reduce the length of the messages.")


def test_prompt_and_completion_over_the_context_window(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        sdk.chat.completions.create(model=MODEL, messages=USER, max_tokens=127_999)  # type: ignore[arg-type]
    error = error_of(excinfo)
    assert error["code"] == "context_length_exceeded"
    assert "in the completion" in error["message"]


def test_well_formed_bodies_still_pass(sdk: openai.OpenAI) -> None:
    """Strict types refuse only what OpenAI refuses: nulls for nullable parameters and every
    documented shape are still answered."""
    schema = {"name": "answer", "schema": {"type": "object"}, "strict": True}
    tool = {"type": "function", "function": {"name": "look_up", "parameters": {"type": "object"}}}
    answer = sdk.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ],
        temperature=0,
        top_p=1,
        seed=-5,
        stop=["\n\n"],
        logit_bias={"42": -100},
        response_format={"type": "json_schema", "json_schema": schema},  # type: ignore[typeddict-item]
        tools=[tool],  # type: ignore[list-item]
        tool_choice="auto",
        metadata={"k": "v"},
        extra_body={"n": None, "stream": None},
    )
    assert answer.choices[0].message.content


def test_an_unexpected_error_is_a_short_500(
    shared: Shared, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A genuine server bug is still a 500, in the envelope, one line long; the traceback goes
    to the log only."""

    def broken() -> list[Any]:
        raise RuntimeError("catalogue unreadable\nTraceback (most recent call last): ...")

    monkeypatch.setattr(model_routes.catalog, "all_models", broken)
    with caplog.at_level(logging.ERROR):
        response = httpx.get(f"{shared.server.base_url}/models", headers=AUTH, timeout=30)
    assert response.status_code == 500
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "server_error")
    assert error["message"] == (
        "The local server had an error (RuntimeError: catalogue unreadable)."
    )
    assert "Traceback" not in response.text
    assert server_errors(caplog)  # logged, with its traceback, where an operator looks


def test_the_table_images_are_what_they_claim(tmp_path: Path) -> None:
    """The truncated PNG's header still reads: the case tests decoding, not the header."""
    (tmp_path / "t.png").write_bytes(PNG[: len(PNG) // 2])
    with Image.open(tmp_path / "t.png") as truncated:
        assert truncated.size == (64, 64)

"""`chat.ask` over HTTP: the local server's replies, retries against injected faults, the request
as sent (a recording stand-in server), and the exchange saved to a dialogue log."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from ftpipe import retry
from ftpipe.chat import Reply, ask, build_messages
from ftpipe.dialogue_log import DialogueLog
from ftpipe.local_api.engine import base_reply
from ftpipe.prepare.dialogues import read_dialogue_file, split_conversations
from ftpipe.sentiment import CLASSIFY_INSTRUCTION, analyse, analyse_with_model
from ftpipe.settings import FaultSettings
from tests.conftest import StartServer, strict_client

MODEL = "gpt-4o-mini"
SNAPSHOT = "gpt-4o-mini-2024-07-18"
QUOTED = 'She said "yes", then \\"no\\" and \'maybe\''

# --- a recording stand-in: answers scripted responses and keeps every request body ----------

Answer = tuple[int, dict[str, str], dict[str, Any]]
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-recorded",
    "object": "chat.completion",
    "created": 0,
    "model": "recorded-model",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "ok", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
}


def error(status: int, code: str, headers: dict[str, str] | None = None) -> Answer:
    body = {"error": {"message": code, "type": code, "param": None, "code": code}}
    return status, headers or {}, body


class Recorder(ThreadingHTTPServer):
    """Answers from `script` in order (the last one repeats) and records the JSON bodies."""

    def __init__(self, script: list[Answer]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_answer(self, body: dict[str, Any]) -> Answer:
        self.requests.append(body)
        return self.script[min(len(self.requests), len(self.script)) - 1]


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        status, headers, answer = self.server.next_answer(body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        for name, value in {**headers, "content-type": "application/json"}.items():
            self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is for the tests."""


@pytest.fixture
def recorder() -> Iterator[Any]:
    servers: list[Recorder] = []

    def start(*script: Answer) -> Recorder:
        server = Recorder(list(script) or [(200, {}, COMPLETION)])
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faults without a retry-after wait milliseconds instead of the SDK's half-second steps."""
    monkeypatch.setattr(retry, "INITIAL_BACKOFF_S", 0.001)
    monkeypatch.setattr(retry, "MAX_BACKOFF_S", 0.01)


# --- messages ------------------------------------------------------------------------------


def test_build_messages_from_text_puts_the_instruction_first() -> None:
    assert build_messages(QUOTED, None) == [{"role": "user", "content": QUOTED}]
    assert build_messages("Hi", "Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert build_messages("Hi", "") == [{"role": "user", "content": "Hi"}]


def test_build_messages_copies_a_history() -> None:
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    messages = build_messages(history, "Be brief.")
    assert messages == [{"role": "system", "content": "Be brief."}, *history]
    messages[1]["content"] = "changed"
    assert history[0]["content"] == "Hi"


# --- the local server ------------------------------------------------------------------------


def test_ask_returns_the_base_models_deterministic_reply(client: openai.OpenAI) -> None:
    reply = ask(client, "When is the last ferry?", model=MODEL)
    expected = base_reply(MODEL, [{"role": "user", "content": "When is the last ferry?"}])
    assert reply == Reply(
        text=expected,
        model=SNAPSHOT,
        sentiment=None,
        usage=reply.usage,
        finish_reason="stop",
    )
    assert reply.usage is not None
    assert (
        reply.usage["total_tokens"]
        == reply.usage["prompt_tokens"] + reply.usage["completion_tokens"]
    )
    assert ask(client, "When is the last ferry?", model=MODEL) == reply


def test_quotes_reach_the_server_unchanged(client: openai.OpenAI) -> None:
    reply = ask(client, QUOTED, model=MODEL)
    assert reply.text.endswith(f"You asked: {QUOTED}")


def test_the_system_instruction_is_sent(client: openai.OpenAI) -> None:
    reply = ask(client, "Hi", model=MODEL, system_instruction="You are the ferry desk.")
    assert 'System instruction received: "You are the ferry desk.".' in reply.text


def test_max_tokens_cuts_the_reply(client: openai.OpenAI) -> None:
    reply = ask(client, "Tell me everything about ferries", model=MODEL, max_tokens=2)
    assert reply.finish_reason == "length"
    assert reply.usage is not None and reply.usage["completion_tokens"] == 2


def test_a_sentiment_analyser_labels_the_reply(client: openai.OpenAI) -> None:
    assert ask(client, "I love this wonderful boat", model=MODEL, sentiment=analyse).sentiment == (
        "positive"
    )
    assert ask(client, "I hate this awful queue", model=MODEL, sentiment=analyse).sentiment == (
        "negative"
    )


def test_an_unknown_model_is_not_retried(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        ask(client, "Hi", model="no-such-model", attempts=5)


# --- retries against injected faults -------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        FaultSettings(rate_429=0.5, seed=3, retry_after_s=0.01),
        FaultSettings(rate_500=0.5, seed=3),
        FaultSettings(rate_429=0.25, rate_500=0.25, seed=3, retry_after_s=0.01),
    ],
    ids=["429", "500", "both"],
)
@pytest.mark.usefixtures("fast_backoff")
def test_transient_faults_are_retried(
    start_server: StartServer, faults: FaultSettings, caplog: pytest.LogCaptureFixture
) -> None:
    client = strict_client(start_server(faults=faults).base_url, max_retries=5)
    with caplog.at_level(logging.INFO, logger="ftpipe"):
        replies = [ask(client, f"Question {n}", model=MODEL, attempts=8) for n in range(20)]
    assert [reply.text.endswith(f"You asked: Question {n}") for n, reply in enumerate(replies)] == [
        True
    ] * 20
    assert "retrying in" in caplog.text  # the faults were met, and got past


def test_the_last_error_propagates(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One attempt means one request, whatever the client's own max_retries says."""
    client = strict_client(start_server(faults=FaultSettings(rate_500=1.0)).base_url, max_retries=5)
    with caplog.at_level(logging.INFO), pytest.raises(openai.InternalServerError):
        ask(client, "Hi", model=MODEL, attempts=1)
    assert "etrying" not in caplog.text


@pytest.mark.usefixtures("fast_backoff")
def test_attempts_are_counted_exactly(recorder: Any) -> None:
    server = recorder(error(500, "server_error"))
    with pytest.raises(openai.InternalServerError):
        ask(strict_client(server.base_url, max_retries=5), "Hi", model=MODEL, attempts=3)
    assert len(server.requests) == 3


def test_insufficient_quota_is_not_retried(recorder: Any) -> None:
    server = recorder(error(429, "insufficient_quota", {"retry-after-ms": "1"}))
    with pytest.raises(openai.RateLimitError) as caught:
        ask(strict_client(server.base_url), "Hi", model=MODEL, attempts=5)
    assert caught.value.code == "insufficient_quota"
    assert len(server.requests) == 1


def test_retry_after_is_honoured_and_then_succeeds(recorder: Any) -> None:
    limited = error(429, "rate_limit_exceeded", {"retry-after-ms": "20", "retry-after": "30"})
    server = recorder(limited, limited, (200, {}, COMPLETION))
    reply = ask(strict_client(server.base_url), "Hi", model=MODEL, attempts=3)
    assert reply.text == "ok"
    assert len(server.requests) == 3


def test_the_server_can_forbid_a_retry(recorder: Any) -> None:
    server = recorder(error(503, "overloaded", {"x-should-retry": "false"}))
    with pytest.raises(openai.InternalServerError):
        ask(strict_client(server.base_url), "Hi", model=MODEL, attempts=4)
    assert len(server.requests) == 1


def test_a_retry_after_beyond_two_minutes_is_not_waited_for(recorder: Any) -> None:
    server = recorder(error(429, "rate_limit_exceeded", {"retry-after": "3600"}))
    with pytest.raises(openai.RateLimitError):
        ask(strict_client(server.base_url), "Hi", model=MODEL, attempts=4)
    assert len(server.requests) == 1


def test_attempts_must_be_positive(client: openai.OpenAI) -> None:
    with pytest.raises(ValueError, match="attempts must be at least 1"):
        ask(client, "Hi", model=MODEL, attempts=0)


# --- the request as sent -------------------------------------------------------------------


def test_unset_options_are_left_out_of_the_request(recorder: Any) -> None:
    server = recorder()
    ask(strict_client(server.base_url), QUOTED, model=MODEL)
    (sent,) = server.requests
    assert sent == {"model": MODEL, "messages": [{"role": "user", "content": QUOTED}]}


def test_set_options_are_sent(recorder: Any) -> None:
    server = recorder()
    ask(
        strict_client(server.base_url),
        "Hi",
        model=MODEL,
        system_instruction="Be brief.",
        temperature=0.2,
        max_tokens=5,
    )
    (sent,) = server.requests
    assert sent["temperature"] == 0.2
    assert sent["max_completion_tokens"] == 5
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


def test_the_model_classifier_asks_for_one_word_at_temperature_zero(recorder: Any) -> None:
    server = recorder()
    assert analyse_with_model(strict_client(server.base_url), "I love it", MODEL) == "positive"
    (sent,) = server.requests
    assert sent["temperature"] == 0
    assert sent["messages"] == [
        {"role": "system", "content": CLASSIFY_INSTRUCTION},
        {"role": "user", "content": "I love it"},
    ]


# --- the dialogue log -----------------------------------------------------------------------


def test_the_exchange_is_logged_with_its_sentiment(client: openai.OpenAI, tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "dialogues.json")
    system = "You are the ferry desk."
    reply = ask(client, QUOTED, model=MODEL, system_instruction=system, sentiment=analyse, log=log)
    turns = log.read()
    assert [(t["role"], t["content"]) for t in turns] == [
        ("system", system),
        ("user", QUOTED),
        ("assistant", reply.text),
    ]
    assert turns[2]["sentiment"] == reply.sentiment
    assert {t["model"] for t in turns} == {SNAPSHOT}


def test_a_history_continues_its_conversation_in_the_log(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    log = DialogueLog(tmp_path / "dialogues.json")
    system = "You are the ferry desk."
    first = ask(client, "Hi", model=MODEL, system_instruction=system, sentiment=analyse, log=log)
    history = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And tomorrow?"},
    ]
    second = ask(client, history, model=MODEL, system_instruction=system, log=log)
    ask(client, "Hi again", model=MODEL, system_instruction=system, log=log)  # a fresh start
    result = split_conversations(read_dialogue_file(log.path), "log")
    assert [c.messages for c in result.conversations] == [
        [
            {"role": "system", "content": system},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": "And tomorrow?"},
            {"role": "assistant", "content": second.text},
        ],
        [
            {"role": "system", "content": system},
            {"role": "user", "content": "Hi again"},
            {"role": "assistant", "content": base_reply(MODEL, build_messages("Hi again", system))},
        ],
    ]

"""The `chat` Prefect flow, run for real: a temporary Prefect server, the embedded local API in
this process (one per test's FTPIPE_HOME), the real dialogue log."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.states import State
from prefect.testing.utilities import prefect_test_harness

from ftpipe import sentiment
from ftpipe.dialogue_log import DialogueLog, default_log_path
from ftpipe.flows.chat import chat, messages_from_csv
from tests.conftest import SAMPLES

STAND_IN = "(local stand-in for gpt-4o-mini) You asked: "
FAQ = SAMPLES / "csv" / "faq.csv"
SUPPORT_EXPORT = SAMPLES / "csv" / "support_export.csv"  # ';'-delimited, with a BOM
MESSAGES = [
    "I love the new ferry, the crew are wonderful!",
    "The crossing was awful and the café was closed.",
    'He said "bring a coat" & left',
    "When does the last ferry leave?",
    "When does the last ferry leave?",  # a repeat is answered again, in its place
]


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server and database for the module: starting it is slow."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


def logged_users() -> list[str]:
    """The user turns of the dialogue log, in the order they were written."""
    path = default_log_path()
    if not path.exists():
        return []
    return [turn["content"] for turn in DialogueLog(path).read() if turn["role"] == "user"]


def artifact_rows(state: State) -> list[dict[str, Any]]:
    """The run's `chat-replies` table, read back from the Prefect API."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    tables = [artifact for artifact in found if artifact.key == "chat-replies"]
    assert len(tables) == 1 and tables[0].type == "table"
    data = tables[0].data
    return json.loads(data) if isinstance(data, str) else data  # type: ignore[return-value]


def assert_answered_in_order(rows: list[dict[str, Any]], messages: list[str]) -> None:
    assert [row["message"] for row in rows] == messages
    for row, message in zip(rows, messages, strict=True):
        assert not row.get("error"), row
        assert row["text"] == STAND_IN + message
        assert row["sentiment"] == sentiment.analyse(row["text"])
        assert row["model"].startswith("gpt-4o-mini")


def csv_column(path: Path, column: str, delimiter: str = ",") -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return [row[column] for row in csv.DictReader(handle, delimiter=delimiter) if row[column]]


def test_chat_answers_a_list_in_order_and_logs_each_exchange() -> None:
    DialogueLog(default_log_path()).record_exchange(
        system=None,
        user="earlier",
        assistant="reply",
        sentiment=None,
        model="m",
        new_conversation=True,
    )
    state = chat(messages=MESSAGES, concurrency=3, publish_replies=True, return_state=True)
    assert state.is_completed(), state.message
    rows = state.result()
    assert_answered_in_order(rows, MESSAGES)
    assert [row["sentiment"] for row in rows[:2]] == ["positive", "negative"]
    users = logged_users()
    assert len(users) == 1 + len(MESSAGES)
    assert sorted(users[1:]) == sorted(MESSAGES)  # concurrent writers interleave
    table = artifact_rows(state)
    assert [row["message"] for row in table] == MESSAGES
    assert [row["reply"] for row in table] == [row["text"] for row in rows]
    assert [row["sentiment"] for row in table] == [row["sentiment"] for row in rows]
    assert {row["error"] for row in table} == {""}


def test_chat_answers_a_csv_column_after_the_listed_messages() -> None:
    questions = csv_column(FAQ, "question")
    assert len(questions) >= 10
    state = chat(
        messages=["First of all: hello"],
        csv_path=str(FAQ),
        column="question",
        publish_replies=True,
        return_state=True,
    )
    assert state.is_completed(), state.message
    expected = ["First of all: hello", *questions]
    assert_answered_in_order(state.result(), expected)
    assert sorted(logged_users()) == sorted(expected)
    assert [row["message"] for row in artifact_rows(state)] == expected


def test_chat_can_leave_the_dialogue_log_alone() -> None:
    rows = chat(messages=MESSAGES[:2], log_dialogues=False)
    assert_answered_in_order(rows, MESSAGES[:2])
    assert logged_users() == []


def test_a_missing_csv_column_fails_the_flow_naming_it() -> None:
    state = chat(csv_path=str(FAQ), column="message", return_state=True)
    assert state.is_failed()
    assert "InputError" in (state.message or "")
    assert "has no column 'message'" in (state.message or "")
    assert str(FAQ) in (state.message or "")
    assert logged_users() == []


def test_transient_429s_are_retried_until_every_row_is_answered(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The server started for this test's FTPIPE_HOME answers 30% of requests 429."""
    monkeypatch.setenv("FTPIPE_FAULT_RATE_429", "0.3")
    monkeypatch.setenv("FTPIPE_FAULT_RETRY_AFTER_S", "0.01")
    monkeypatch.setenv("FTPIPE_FAULT_SEED", "11")
    caplog.set_level(logging.INFO, logger="ftpipe")
    messages = [f"Question {index}: is sailing {index} on time?" for index in range(30)]
    rows = chat(messages=messages, concurrency=8)
    assert sum(1 for row in rows if row.get("error")) == 0
    assert_answered_in_order(rows, messages)
    retried = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert retried, "the injected 429s never reached the client"
    assert all("429" in r.getMessage() for r in retried)
    assert sorted(logged_users()) == sorted(messages)


@pytest.mark.parametrize(
    "cells",
    [
        ["0042", "007", "1e3", "12.50"],
        ["true", "FALSE"],
        ["N/A", "42", "nan"],
        ["2024-01-05 10:00", "2024-02-01 09:30"],
    ],
    ids=["numbers", "booleans", "null-words", "timestamps"],
)
def test_csv_messages_are_read_as_text_exactly_as_written(tmp_path: Path, cells: list[str]) -> None:
    """A message column holding only numbers, booleans or null-looking words is still text."""
    path = tmp_path / "messages.csv"
    path.write_text("message,n\n" + "".join(f"{c},{i}\n" for i, c in enumerate(cells)), "utf-8")
    assert messages_from_csv(str(path), "message") == cells


def test_chat_reads_a_semicolon_csv_with_a_bom() -> None:
    prompts = csv_column(SUPPORT_EXPORT, "Prompt", delimiter=";")
    assert len(prompts) >= 3
    assert messages_from_csv(str(SUPPORT_EXPORT), "Prompt") == prompts


def test_messages_and_replies_stay_out_of_artifacts_unless_asked() -> None:
    state = chat(messages=MESSAGES[:2], log_dialogues=False, return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    assert [artifact.key for artifact in found] == ["chat-summary"]
    summary = str(found[0].data)
    assert "2** of 2 messages" in summary
    assert all(message not in summary for message in MESSAGES[:2])

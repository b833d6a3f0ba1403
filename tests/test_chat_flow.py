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
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import Log, TaskRun
from prefect.logging.handlers import APILogHandler
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


def run_artifacts(state: State) -> list[Any]:
    """Every artifact the run made, read back from the Prefect API."""
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def artifact_rows(state: State) -> list[dict[str, Any]]:
    """The run's `chat-replies` table, read back from the Prefect API."""
    found = run_artifacts(state)
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
    # 10 tries: which message meets which 429 depends on timing, and at 30% a message fails
    # all of 5 tries about once in 400 messages (30 per run: a run in 14 would fail)
    state = chat(messages=messages, concurrency=8, attempts=10, return_state=True)
    rows = state.result()
    assert sum(1 for row in rows if row.get("error")) == 0
    assert_answered_in_order(rows, messages)
    retried = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert retried, "the injected 429s never reached the client"
    assert all("429" in r.getMessage() for r in retried)
    assert sorted(logged_users()) == sorted(messages)
    # the core's retry lines, made on the chunk's threads, reach the run's log in the UI
    assert len([line for line in run_log_lines(state) if "retrying in" in line]) == len(retried)


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


def task_runs(state: State) -> list[TaskRun]:
    """The run's task runs, read back from the Prefect API, by name."""
    runs = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return sorted(client.read_task_runs(flow_run_filter=runs), key=lambda run: run.name)


def run_logs(state: State) -> list[Log]:
    """The run's logs (its task runs' included), once the batches are sent."""
    APILogHandler().flush()
    runs = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=runs)


def run_log_lines(state: State) -> list[str]:
    return [log.message for log in run_logs(state)]


def test_a_batch_of_several_chunks_keeps_one_row_per_message_in_order() -> None:
    """23 messages in chunks of 5: five task runs, not 23, on four lanes shared by all."""
    messages = [f"Sailing {index}: is the {index % 3}th deck open?" for index in range(23)]
    state = chat(messages=messages, concurrency=4, chunk_size=5, return_state=True)
    assert state.is_completed(), state.message
    assert_answered_in_order(state.result(), messages)
    assert sorted(logged_users()) == sorted(messages)
    runs = task_runs(state)
    starts = range(1, 24, 5)
    assert [run.name for run in runs] == sorted(
        f"answer messages {n}-{min(n + 4, 23)}" for n in starts
    )
    assert all(run.tags == [] for run in runs)  # no limit on the chat tag: no slot to take
    progress = [artifact for artifact in run_artifacts(state) if artifact.key == "chat-progress"]
    assert len(progress) == 1 and progress[0].type == "progress"
    assert float(progress[0].data) == 100.0  # type: ignore[arg-type]
    lines = run_log_lines(state)
    assert sum(1 for line in lines if line.startswith("message ") and "answered" in line) == 23
    assert all(message not in line for line in lines for message in messages)


def test_one_failing_message_is_reported_in_its_row_and_the_others_answered() -> None:
    """A blank message is refused by the core; it fails alone, in its place and in the log."""
    messages = [f"Question {index}: may I bring a bicycle?" for index in range(7)]
    messages[4] = "   "
    state = chat(messages=messages, concurrency=3, chunk_size=3, return_state=True)
    assert state.is_completed(), state.message
    rows = state.result()
    assert [row["message"] for row in rows] == messages
    assert rows[4]["text"] == "" and rows[4]["error"].startswith("InputError: ")
    assert "question is empty" in rows[4]["error"]
    others = messages[:4] + messages[5:]
    assert_answered_in_order(rows[:4] + rows[5:], others)
    assert sorted(logged_users()) == sorted(others)
    assert any(line.startswith("message 5 failed: InputError") for line in run_log_lines(state))
    summary = [artifact for artifact in run_artifacts(state) if artifact.key == "chat-summary"]
    assert "**6** of 7 messages" in str(summary[0].data) and "**1** failed" in str(summary[0].data)


def test_a_concurrency_limit_on_the_chat_tag_bounds_the_chunks_across_runs() -> None:
    """`prefect concurrency-limit create chat 1`: the chunks carry the tag and take turns."""
    messages = [f"Question {index}: is the café open?" for index in range(6)]
    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag="chat", concurrency_limit=1)
        try:
            state = chat(messages=messages, chunk_size=3, log_dialogues=False, return_state=True)
        finally:
            client.delete_concurrency_limit_by_tag("chat")
    assert state.is_completed(), state.message
    assert_answered_in_order(state.result(), messages)
    runs = task_runs(state)
    assert len(runs) == 2 and all(run.tags == ["chat"] for run in runs)
    answered: dict[Any, list[Any]] = {run.id: [] for run in runs}
    for log in run_logs(state):
        if log.task_run_id in answered and "answered" in log.message:
            answered[log.task_run_id].append(log.timestamp)
    first, second = sorted(answered.values(), key=min)
    assert len(first) == len(second) == 3
    assert max(first) < min(second)  # one chunk at a time

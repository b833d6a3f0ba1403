"""The dialogue-log writer: what it writes reads back through `prepare.dialogues`, atomically,
with corrupt files kept aside and concurrent writers in threads and processes losing nothing."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import threading
from pathlib import Path

import pytest

from ftpipe import dialogue_log
from ftpipe.dialogue_log import DialogueLog, default_log_path
from ftpipe.errors import InputError
from ftpipe.prepare.dialogues import (
    read_dialogue_file,
    split_conversations,
)

MODEL = "gpt-4o-mini-2024-07-18"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def exchange(
    log: DialogueLog,
    user: str,
    *,
    system: str | None = "You are the ferry desk.",
    sentiment: str | None = "positive",
    new: bool = False,
) -> None:
    log.record_exchange(
        system=system,
        user=user,
        assistant=f"Answer to {user}",
        sentiment=sentiment,
        model=MODEL,
        new_conversation=new,
    )


def conversations(path: Path) -> list[list[dict[str, str]]]:
    """The file as the preparation step sees it: the loop from chat to training data."""
    result = split_conversations(read_dialogue_file(path), str(path))
    return [conversation.messages for conversation in result.conversations]


def test_default_path_is_under_ftpipe_home(isolated_env: Path) -> None:
    assert default_log_path() == isolated_env / "dialogues" / "dialogues.json"


def test_append_then_read(tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "logs" / "chat.json")
    turns = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": 'He said "hi"'},
        {"role": "assistant", "content": "Hi.", "sentiment": "neutral", "extra": [1, 2]},
    ]
    log.append(turns[:2])
    log.append(turns[2:])
    assert log.read() == turns
    assert conversations(log.path) == [
        [{"role": t["role"], "content": t["content"]} for t in turns]
    ]


def test_reading_a_missing_log_gives_no_turns_and_empty_appends_write_nothing(
    tmp_path: Path,
) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    log.append([])
    assert log.read() == []
    assert not log.path.exists()  # an empty list is not a log the reader accepts


@pytest.mark.parametrize(
    "turn",
    [
        {"role": "tool", "content": "x"},
        {"content": "no role"},
        {"role": "user", "content": 3},
        {"role": "assistant", "content": "x", "sentiment": 1},
        "not an object",
    ],
)
def test_append_refuses_turns_the_reader_would_reject(tmp_path: Path, turn: object) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    log.append([{"role": "user", "content": "kept"}])
    with pytest.raises(ValueError, match="turn 2 is not a dialogue turn"):
        log.append([{"role": "user", "content": "fine"}, turn])  # type: ignore[list-item]
    assert log.read() == [{"role": "user", "content": "kept"}]


def test_record_exchange_writes_turns_the_reader_reads(tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    exchange(log, "When is the last boat?", sentiment="negative")
    turns = log.read()
    assert [turn["role"] for turn in turns] == ["system", "user", "assistant"]
    assert all(turn["model"] == MODEL and STAMP.match(turn["timestamp"]) for turn in turns)
    assert [turn.get("sentiment") for turn in turns] == [None, None, "negative"]
    assert "sentiment" not in turns[1]
    read = read_dialogue_file(log.path)
    assert [(turn.role, turn.sentiment) for turn in read][-1] == ("assistant", "negative")
    assert conversations(log.path) == [
        [
            {"role": "system", "content": "You are the ferry desk."},
            {"role": "user", "content": "When is the last boat?"},
            {"role": "assistant", "content": "Answer to When is the last boat?"},
        ]
    ]


def test_system_turn_only_when_a_conversation_starts_or_the_instruction_changes(
    tmp_path: Path,
) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    exchange(log, "one")  # first exchange with an instruction: opens a conversation
    exchange(log, "two")  # same instruction: continues it
    exchange(log, "three", system="You are the refunds desk.")  # changed: a new one
    exchange(log, "four", system="You are the refunds desk.", new=True)  # asked for: a new one
    roles = [turn["role"] for turn in log.read()]
    assert roles.count("system") == 3
    found = conversations(log.path)
    assert [[m["content"] for m in c if m["role"] == "user"] for c in found] == [
        ["one", "two"],
        ["three"],
        ["four"],
    ]
    assert found[1][0] == {"role": "system", "content": "You are the refunds desk."}


def test_sentiment_recorded_on_replies_filters_exchanges(tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    exchange(log, "good", sentiment="positive")
    exchange(log, "bad", sentiment="negative")
    exchange(log, "unknown", sentiment=None)
    result = split_conversations(read_dialogue_file(log.path), "chat", sentiments={"positive"})
    (kept,) = result.conversations
    assert [m["content"] for m in kept.messages if m["role"] == "user"] == ["good"]
    assert sorted(d.value for d in result.dropped) == ["missing", "negative"]


def test_new_conversation_without_instruction_writes_an_empty_system_boundary(
    tmp_path: Path,
) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    exchange(log, "first", system=None)  # no instruction, nothing to continue: no system turn
    exchange(log, "second", system=None, new=True)
    exchange(log, "third", system="Be brief.")
    exchange(log, "fourth", system=None)  # the instruction was dropped: that is a change too
    assert [t["content"] for t in log.read() if t["role"] == "system"] == ["", "Be brief.", ""]
    result = split_conversations(read_dialogue_file(log.path), "chat")
    users = [
        [m["content"] for m in c.messages if m["role"] == "user"] for c in result.conversations
    ]
    assert users == [["first"], ["second"], ["third"], ["fourth"]]
    assert result.dropped == []  # an empty system turn marks a boundary; it is no drop


@pytest.mark.parametrize("content", [b'[{"role": "user", "cont', b'{"role": "user"}', b"\xff\xfe"])
def test_a_corrupt_log_is_moved_aside_not_lost(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.json"
    path.write_bytes(content)
    log = DialogueLog(path)
    with pytest.raises(InputError, match="is not a dialogue log"):
        log.read()
    with caplog.at_level(logging.WARNING, logger="ftpipe"):
        exchange(log, "after the crash")
    (aside,) = tmp_path.glob("chat.json.corrupt-*")
    assert aside.read_bytes() == content
    assert "moved it to" in caplog.text
    assert [turn["content"] for turn in log.read()][1] == "after the crash"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    exchange(log, "saved")
    before = log.path.read_bytes()

    def crash(source: str, target: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(dialogue_log.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        exchange(log, "lost")
    assert log.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.json", "chat.json.lock"]


def test_the_files_permissions_survive_rewrites(tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    exchange(log, "one")
    os.chmod(log.path, 0o640)
    exchange(log, "two")
    assert log.path.stat().st_mode & 0o777 == 0o640


def write_exchanges(path: str, writer: int, count: int) -> None:
    """One concurrent writer (module level, so spawned processes can import it)."""
    log = DialogueLog(Path(path))
    for number in range(count):
        exchange(log, f"writer {writer} exchange {number}", system=f"Desk {writer}", new=True)


def written(path: Path) -> list[str]:
    """The user turns of a log, checked to be one valid JSON list the reader accepts."""
    data = json.loads(path.read_text(encoding="utf-8"))
    assert len(read_dialogue_file(path)) == len(data)
    return sorted(turn["content"] for turn in data if turn["role"] == "user")


def expected(writers: int, count: int) -> list[str]:
    return sorted(f"writer {w} exchange {n}" for w in range(writers) for n in range(count))


def test_concurrent_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "chat.json"
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=write_exchanges, args=(str(path), writer, 25)) for writer in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert written(path) == expected(4, 25)
    assert len(conversations(path)) == 100


@pytest.mark.parametrize("shared", [True, False], ids=["one-object", "object-per-thread"])
def test_concurrent_threads_lose_nothing(tmp_path: Path, shared: bool) -> None:
    path = tmp_path / "chat.json"
    log = DialogueLog(path)
    errors: list[BaseException] = []

    def run(writer: int) -> None:
        try:
            target = log if shared else DialogueLog(path)
            for number in range(10):
                exchange(target, f"writer {writer} exchange {number}", new=True)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(writer,)) for writer in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert written(path) == expected(8, 10)
    assert len(conversations(path)) == 80

"""The dialogue-log writer: JSON lines appended in one write, read back through
`prepare.dialogues`; earlier list logs read, migrated and exported; torn lines and corrupt files
lose no other turn; concurrent writers in threads and processes lose nothing."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import threading
from pathlib import Path

import pytest

from ftpipe.dialogue_log import DialogueLog, default_log_path, has_dialogues
from ftpipe.errors import InputError
from ftpipe.prepare.dialogues import (
    read_dialogue_file,
    read_dialogue_log,
    split_conversations,
)
from ftpipe.prepare.sources import resolve_sources

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
    assert default_log_path() == isolated_env / "dialogues" / "dialogues.jsonl"


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
def test_a_corrupt_list_log_is_moved_aside_not_lost(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "chat.json"
    path.write_bytes(content)
    log = DialogueLog(path)
    with pytest.raises(InputError, match="is not a dialogue log"):
        log.read()
    with caplog.at_level(logging.WARNING, logger="ftpipe"):
        exchange(log, "after the crash")
    (aside,) = tmp_path.glob("chat.json.corrupt*")
    assert aside.read_bytes() == content
    assert "moved it to" in caplog.text
    assert [turn["content"] for turn in log.read()][1] == "after the crash"


def test_an_append_only_adds_bytes_to_the_same_file(tmp_path: Path) -> None:
    """O(1) appends: the file is never rewritten, so earlier turns are neither re-read nor
    re-written; each turn is one JSON line."""
    log = DialogueLog(tmp_path / "chat.jsonl")
    exchange(log, "one")
    before, inode = log.path.read_bytes(), log.path.stat().st_ino
    exchange(log, "two")
    after = log.path.read_bytes()
    assert after.startswith(before) and log.path.stat().st_ino == inode
    added = after[len(before) :].decode().splitlines()
    assert [json.loads(line)["role"] for line in added] == ["user", "assistant"]


def test_a_torn_last_line_loses_no_other_turn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = DialogueLog(tmp_path / "chat.jsonl")
    exchange(log, "before the crash")
    with log.path.open("ab") as handle:
        handle.write(b'{"role": "user", "content": "half a li')  # a writer died mid-line
    exchange(log, "after the crash")
    lines = log.path.read_bytes().decode().split("\n")
    assert lines[3] == '{"role": "user", "content": "half a li'  # not glued to the next turn
    with caplog.at_level(logging.WARNING, logger="ftpipe"):
        users = [t["content"] for t in log.read() if t["role"] == "user"]
    assert users == ["before the crash", "after the crash"]
    assert "line 4 is not a dialogue turn" in caplog.text
    read = read_dialogue_log(log.path)
    assert [(bad.line, bad.rule) for bad in read.bad_lines] == [(4, "invalid_json")]
    assert [turn.line for turn in read.turns] == [1, 2, 3, 5, 6]
    with pytest.raises(InputError, match="line 4 is not a dialogue turn"):
        read_dialogue_file(log.path)  # the strict reader names the line


def test_the_files_permissions_survive_appends(tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "chat.json")
    exchange(log, "one")
    assert log.path.stat().st_mode & 0o777 == 0o600  # a new log is private
    os.chmod(log.path, 0o640)
    exchange(log, "two")
    assert log.path.stat().st_mode & 0o777 == 0o640


def test_the_lock_file_is_hidden_from_folder_scans(tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "dialogues.jsonl")
    exchange(log, "one")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".dialogues.jsonl.lock",
        "dialogues.jsonl",
    ]
    assert resolve_sources([tmp_path]).ignored == []


# --- the earlier JSON-list format: read, migrated, exported ----------------------------------


LEGACY = [
    {"role": "system", "content": "You are the ferry desk."},
    {"role": "user", "content": "Überfahrt?", "timestamp": "2024-05-01T21:02:00Z"},
    {"role": "assistant", "content": "At 22:40.", "sentiment": "positive", "model": MODEL},
]


def write_legacy(path: Path, turns: list[dict[str, str]] = LEGACY) -> bytes:
    """A list log as earlier versions wrote it (one turn a line inside the list)."""
    lines = ",\n".join(json.dumps(turn, ensure_ascii=False) for turn in turns)
    data = f"[\n{lines}\n]\n".encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def test_a_list_log_is_read_before_it_is_migrated(tmp_path: Path) -> None:
    write_legacy(tmp_path / "dialogues.json")
    log = DialogueLog(tmp_path / "dialogues.json")
    assert log.path == tmp_path / "dialogues.jsonl"
    assert log.read() == LEGACY
    assert not log.path.exists()  # reading changes nothing


def test_the_first_write_migrates_a_list_log_and_keeps_it_as_a_backup(tmp_path: Path) -> None:
    old = write_legacy(tmp_path / "dialogues.json")
    log = DialogueLog(tmp_path / "dialogues.jsonl")
    exchange(log, "new question")
    assert (tmp_path / "dialogues.json.migrated").read_bytes() == old
    assert not (tmp_path / "dialogues.json").exists()
    turns = log.read()
    assert turns[:3] == LEGACY
    assert [t["content"] for t in turns[3:]] == [
        "You are the ferry desk.",
        "new question",
        "Answer to new question",
    ]
    assert [t.content for t in read_dialogue_file(log.path)] == [t["content"] for t in turns]
    assert not log.migrate()  # nothing left to migrate


def test_a_migration_stopped_before_its_rename_is_finished_without_duplicates(
    tmp_path: Path,
) -> None:
    write_legacy(tmp_path / "dialogues.json")
    log = DialogueLog(tmp_path / "dialogues.json")
    log.path.write_text(
        "".join(json.dumps(t, ensure_ascii=False) + "\n" for t in LEGACY), encoding="utf-8"
    )
    assert log.read() == LEGACY  # not counted twice meanwhile
    assert log.migrate()
    assert log.read() == LEGACY
    assert (tmp_path / "dialogues.json.migrated").exists()


def migrate_and_write(path: str, writer: int) -> None:
    """One of several processes that all find the same unmigrated list log."""
    log = DialogueLog(Path(path))
    exchange(log, f"writer {writer}", new=True)


def test_processes_migrating_at_once_keep_every_turn_once(tmp_path: Path) -> None:
    write_legacy(tmp_path / "dialogues.json")
    context = multiprocessing.get_context("spawn")
    path = str(tmp_path / "dialogues.jsonl")
    workers = [context.Process(target=migrate_and_write, args=(path, n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    turns = DialogueLog(Path(path)).read()
    assert turns[:3] == LEGACY
    assert sorted(t["content"] for t in turns[3:] if t["role"] == "user") == [
        f"writer {n}" for n in range(4)
    ]
    assert len(turns) == 3 + 4 * 3
    assert list(tmp_path.glob("dialogues.json.migrated*")) == [tmp_path / "dialogues.json.migrated"]


def test_export_writes_the_list_format_the_reader_reads(tmp_path: Path) -> None:
    old = write_legacy(tmp_path / "dialogues.json")
    log = DialogueLog(tmp_path / "dialogues.jsonl")
    log.migrate()
    target = tmp_path / "export" / "dialogues.json"
    assert log.export_json(target) == 3
    assert target.read_bytes() == old  # byte for byte what earlier versions wrote
    exchange(log, "more")
    assert log.export_json(target) == 6
    assert json.loads(target.read_text(encoding="utf-8")) == log.read()
    assert len(read_dialogue_file(target)) == 6
    assert sorted(p.name for p in target.parent.iterdir()) == ["dialogues.json"]  # no temp file


def test_export_of_an_empty_log_is_refused(tmp_path: Path) -> None:
    log = DialogueLog(tmp_path / "dialogues.jsonl")
    with pytest.raises(InputError, match="holds no turns to export"):
        log.export_json(tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


# --- has_dialogues ---------------------------------------------------------------------------


def test_has_dialogues_in_either_format_and_nothing_else(tmp_path: Path) -> None:
    assert not has_dialogues(tmp_path / "missing")
    assert not has_dialogues(tmp_path)
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    (tmp_path / ".hidden.json").write_text("[]")
    (tmp_path / ".lock").write_text("")
    (tmp_path / "empty.json").write_text("")
    assert not has_dialogues(tmp_path)
    log = DialogueLog(tmp_path / "new" / "dialogues.jsonl")
    exchange(log, "one")
    assert has_dialogues(tmp_path) and has_dialogues(tmp_path / "new")
    write_legacy(tmp_path / "old" / "dialogues.json")
    assert has_dialogues(tmp_path / "old")


def write_exchanges(path: str, writer: int, count: int) -> None:
    """One concurrent writer (module level, so spawned processes can import it)."""
    log = DialogueLog(Path(path))
    for number in range(count):
        exchange(log, f"writer {writer} exchange {number}", system=f"Desk {writer}", new=True)


def written(path: Path) -> list[str]:
    """The user turns of a log, checked to be one whole JSON turn a line the reader accepts."""
    data = [json.loads(line) for line in DialogueLog(path).path.read_text("utf-8").splitlines()]
    assert len(read_dialogue_file(DialogueLog(path).path)) == len(data)
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
    assert len(conversations(DialogueLog(path).path)) == 100


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
    assert len(conversations(log.path)) == 80


def test_the_cli_exports_the_log_and_refuses_an_empty_one(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ftpipe.cli import app
    from ftpipe.dialogue_log import default_log_path

    runner = CliRunner()
    target = tmp_path / "export.json"
    empty = runner.invoke(app, ["dialogues", "export", str(target)])
    assert empty.exit_code == 1 and not target.exists()
    DialogueLog(default_log_path()).record_exchange(
        system=None, user="Hi", assistant="Hello", sentiment=None, model="m", new_conversation=True
    )
    done = runner.invoke(app, ["dialogues", "export", str(target)])
    assert done.exit_code == 0, done.output
    assert "3 turns written" in done.output
    assert [turn["content"] for turn in json.loads(target.read_text())] == ["", "Hi", "Hello"]

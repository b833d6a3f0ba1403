"""The writer of dialogue logs: saved chat turns, in the format `prepare.dialogues` reads.

A log is a JSON-lines file, one turn per line, oldest first (see `ftpipe.prepare.dialogues`).
An exchange is appended with one write under a cross-platform lock (`filelock`, on the hidden
sibling `.<name>.lock`), so its cost does not grow with the log and writers in several threads and
processes never lose or interleave each other's lines. Before a write, a line torn by a crash is
closed with a newline, so it stays one bad line the readers skip and name. Appends are not
fsynced: a process crash loses nothing, a power cut may lose the last exchanges.

Earlier versions kept the log as one JSON list (`dialogues.json`); such a file is still read, is
migrated to `dialogues.jsonl` by the first write (the old file is kept as
`dialogues.json.migrated`), and `export_json` writes the list format on demand.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from filelock import FileLock

from ftpipe.atomic import sync_folder, write_bytes_atomically
from ftpipe.errors import InputError
from ftpipe.prepare.dialogues import ROLES, jsonl_records
from ftpipe.prepare.sources import classify, visible_files
from ftpipe.settings import get_settings

log = logging.getLogger("ftpipe")

Turn = dict[str, Any]
LOG_SUFFIX = ".jsonl"
LEGACY_SUFFIX = ".json"
MIGRATED = "migrated"
_LOCK_POLL_SECONDS = 0.001


def default_log_path() -> Path:
    """Where the chat task saves dialogues, and where `finetune_dialogues` looks by default."""
    return get_settings().home.expanduser() / "dialogues" / f"dialogues{LOG_SUFFIX}"


def has_dialogues(folder: Path) -> bool:
    """Whether `folder` holds a non-empty dialogue log `prepare` would read, in either format."""
    folder = Path(folder)
    if not folder.is_dir():
        return False
    return any(
        classify(path) == "dialogues" and path.stat().st_size > 0 for path in visible_files(folder)
    )


def utc_timestamp() -> str:
    """Now as UTC ISO-8601 with a `Z`, to the millisecond so turns written in one second order."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DialogueLog:
    """Appends turns to one log file; safe to share between threads and to use from processes.

    Given the name of a JSON-list log (`x.json`), the log lives beside it as `x.jsonl`, and the
    list file is what gets migrated.
    """

    def __init__(self, path: Path) -> None:
        path = Path(path)
        self.path = path.with_suffix(LOG_SUFFIX) if path.suffix == LEGACY_SUFFIX else path
        self.legacy_path = self.path.with_suffix(LEGACY_SUFFIX)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self._lock = FileLock(self.lock_path, poll_interval=_LOCK_POLL_SECONDS)
        self._guard = threading.Lock()
        self._last_system: str | None = None

    def read(self) -> list[Turn]:
        """The turns saved so far ([] when there is none), a not-yet-migrated list log first;
        lines that are not turns are skipped with a warning. `InputError` for a broken list."""
        legacy = _load(self.legacy_path) if self.legacy_path != self.path else []
        if legacy is None:
            raise InputError(str(self.legacy_path), "is not a dialogue log (a JSON list of turns)")
        current = list(_jsonl_turns(self.path))
        if legacy and current[: len(legacy)] == legacy:
            return current  # a migration that stopped before its rename: counted once
        return legacy + current

    def append(self, turns: list[Turn]) -> None:
        """Add turns as given (each checked against the log format) in one write."""
        checked = [_checked(turn, index) for index, turn in enumerate(turns, start=1)]
        if not checked:
            return
        with self._locked():
            self._write(checked)

    def record_exchange(
        self,
        *,
        system: str | None,
        user: str,
        assistant: str,
        sentiment: str | None,
        model: str,
        new_conversation: bool,
    ) -> None:
        """Save one user turn and its reply, each stamped with `model` and the time.

        A system turn (which starts a conversation in the file) goes first when
        `new_conversation` is set or `system` differs from the one of the last exchange this
        object recorded (initially None); with no system instruction its content is "", the
        format's only conversation boundary, which the reader then drops as empty.
        """
        stamp = utc_timestamp()
        turns = [
            _turn("user", user, model, stamp),
            {**_turn("assistant", assistant, model, stamp), **_labelled(sentiment)},
        ]
        with self._locked():
            if new_conversation or system != self._last_system:
                turns.insert(0, _turn("system", system or "", model, stamp))
            self._write(turns)
            self._last_system = system

    def migrate(self) -> bool:
        """Move a JSON-list log's turns into the JSONL log now; True when there was one."""
        with self._locked():
            return self._migrate()

    def export_json(self, target: Path) -> int:
        """Write every turn as one JSON list (the earlier format) to `target`, atomically;
        returns how many turns it holds. `InputError` when the log holds none."""
        with self._locked():
            turns = self.read()
        if not turns:
            raise InputError(str(self.path), "holds no turns to export")
        write_bytes_atomically(Path(target), _json_list(turns))
        return len(turns)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This object's threads one at a time, and every writer of the file (any process)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard, self._lock:
            yield

    def _write(self, turns: list[Turn]) -> None:
        """Append `turns` in one write, migrating a list log first; call with the lock held."""
        self._migrate()
        _append(self.path, _jsonl(turns))

    def _migrate(self) -> bool:
        """Turn a list log into the start of the JSONL log, then keep it aside; lock held.

        Idempotent: when a crash came between the two steps, the JSONL file already starts with
        the list's turns and only the rename is left to do.
        """
        legacy = self.legacy_path
        if legacy == self.path or not legacy.exists():
            return False
        turns = _load(legacy)
        if turns is None:
            moved = _move_aside(legacy, "corrupt")
            log.warning("%s is not a valid dialogue log; moved it to %s", legacy, moved)
            return False
        data = _jsonl(turns)
        existing = self.path.read_bytes() if self.path.exists() else b""
        if not existing.startswith(data):
            write_bytes_atomically(self.path, data + _closed(existing))
        backup = _move_aside(legacy, MIGRATED)
        log.info(
            "migrated %d turns of %s to %s; kept it as %s", len(turns), legacy, self.path, backup
        )
        return True


def _turn(role: str, content: str, model: str, stamp: str) -> Turn:
    """One turn as the chat task saves it."""
    return {"role": role, "content": content, "model": model, "timestamp": stamp}


def _labelled(sentiment: str | None) -> Turn:
    """The sentiment key of a reply, left out when unknown (the reader reads both alike)."""
    return {} if sentiment is None else {"sentiment": sentiment}


def _checked(turn: object, index: int) -> Turn:
    """A copy of a turn the reader will accept; ValueError names the offending one."""
    if not _is_turn(turn):
        raise ValueError(
            f"turn {index} is not a dialogue turn: it needs a role of {', '.join(ROLES)} and "
            "string (or null) content and sentiment"
        )
    return dict(cast(Turn, turn))


def _is_turn(turn: object) -> bool:
    """What `read_dialogue_file` accepts: a known role, and text (or null) content/sentiment."""
    if not isinstance(turn, dict) or turn.get("role") not in ROLES:
        return False
    return all(isinstance(turn.get(key), str | None) for key in ("content", "sentiment"))


def _jsonl(turns: list[Turn]) -> bytes:
    """One compact line per turn, non-ASCII kept readable."""
    return "".join(json.dumps(turn, ensure_ascii=False) + "\n" for turn in turns).encode()


def _json_list(turns: list[Turn]) -> bytes:
    """The earlier list format, one turn per line: valid JSON that stays readable."""
    lines = ",\n".join(json.dumps(turn, ensure_ascii=False) for turn in turns)
    return f"[\n{lines}\n]\n".encode()


def _closed(data: bytes) -> bytes:
    """`data` ending in a newline, so nothing appended after it joins a torn last line."""
    return data if not data or data.endswith(b"\n") else data + b"\n"


def _append(path: Path, data: bytes) -> None:
    """One write at the end of the file, after closing a torn last line; call with the lock."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags, 0o600)
    try:
        if os.fstat(fd).st_size:
            os.lseek(fd, -1, os.SEEK_END)
            if os.read(fd, 1) != b"\n":
                data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _jsonl_turns(path: Path) -> Iterator[Turn]:
    """The turns of a JSONL log; a line that is not one is skipped with a warning naming it."""
    if not path.exists():
        return
    for number, record in jsonl_records(path):
        if _is_turn(record):
            yield cast(Turn, record)
        else:
            log.warning("%s: line %d is not a dialogue turn; skipped it", path, number)


def _load(path: Path) -> list[Turn] | None:
    """A list log's turns, [] when it does not exist, None when it is not a valid log."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, list) or not all(_is_turn(turn) for turn in data):
        return None
    return data


def _move_aside(path: Path, why: str) -> Path:
    """Keep a list log under a new name (`<name>.<why>`, numbered if taken): nothing is lost."""
    target = path.with_name(f"{path.name}.{why}")
    count = 0
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}.{why}-{count}")
    os.rename(path, target)
    sync_folder(path.parent)
    return target

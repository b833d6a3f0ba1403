"""The writer of dialogue logs: saved chat turns, in the format `prepare.dialogues` reads.

A log is one JSON list of turns, oldest first (see `ftpipe.prepare.dialogues` for the format).
Every write is a locked read-modify-write that replaces the file atomically, so a crash leaves the
old or the new list, never half of one, and writers in several threads and processes (POSIX
`flock` on the sibling `<name>.lock`) never lose each other's turns. Exchanges from concurrent
writers interleave in the file, which is why each conversation opens with its own system turn.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from ftpipe.errors import InputError
from ftpipe.prepare.dialogues import ROLES
from ftpipe.settings import get_settings

log = logging.getLogger("ftpipe")

Turn = dict[str, Any]


def default_log_path() -> Path:
    """Where the chat task saves dialogues, and where `finetune_dialogues` looks by default."""
    return get_settings().home.expanduser() / "dialogues" / "dialogues.json"


def utc_timestamp() -> str:
    """Now as UTC ISO-8601 with a `Z`, to the millisecond so turns written in one second order."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class DialogueLog:
    """Appends turns to one log file; safe to share between threads and to use from processes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._guard = threading.Lock()
        self._last_system: str | None = None

    def read(self) -> list[Turn]:
        """The turns saved so far ([] when there is no file); `InputError` if it is not a log."""
        turns = _load(self.path)
        if turns is None:
            raise InputError(str(self.path), "is not a dialogue log (a JSON list of turns)")
        return turns

    def append(self, turns: list[Turn]) -> None:
        """Add turns as given (each checked against the log format) in one atomic write."""
        checked = [_checked(turn, index) for index, turn in enumerate(turns, start=1)]
        if not checked:
            return  # an empty list on disk is not a log the reader accepts
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

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This object's threads one at a time, and every writer of the file (any process)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard, self.lock_path.open("ab") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _write(self, turns: list[Turn]) -> None:
        """Read the current list, add `turns` and replace the file; call with the lock held."""
        current = _load(self.path)
        if current is None:
            current = []
            _move_aside(self.path)
        _replace_atomically(self.path, current + turns)


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


def _load(path: Path) -> list[Turn] | None:
    """The file's turns, [] when it does not exist, None when it is not a valid log."""
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


def _move_aside(path: Path) -> None:
    """Keep an unreadable log under a new name rather than overwrite it: nothing is lost."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    count = 0
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{count}")
    os.rename(path, target)
    log.warning(
        "%s is not a valid dialogue log; moved it to %s and started a new one", path, target
    )


def _replace_atomically(path: Path, turns: list[Turn]) -> None:
    """Write a synced temporary file beside `path`, then rename it over `path` in one step."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_encode(turns))
            handle.flush()
            os.fsync(handle.fileno())
        _keep_mode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(path.parent)


def _encode(turns: list[Turn]) -> bytes:
    """One turn per line: valid JSON that stays readable and diffs well."""
    lines = ",\n".join(json.dumps(turn, ensure_ascii=False) for turn in turns)
    return f"[\n{lines}\n]\n".encode()


def _keep_mode(path: Path, temporary: str) -> None:
    """The replaced file's permissions survive; a new log stays private (mkstemp's 0600)."""
    with suppress(FileNotFoundError):
        os.chmod(temporary, path.stat().st_mode & 0o7777)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; some file systems cannot sync a folder, which is fine."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""The local server's durable state: one SQLite database and a folder of file contents.

Every object (file, upload, job, event, checkpoint, model, assistant, thread) is a row holding its
public JSON body plus private bookkeeping. WAL mode and immediate transactions make it safe for
several processes sharing one FTPIPE_HOME (the CLI, a served deployment, a worker).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    parent TEXT,
    created_at INTEGER NOT NULL,
    body TEXT NOT NULL,
    internal TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS objects_kind ON objects (kind, seq);
CREATE INDEX IF NOT EXISTS objects_parent ON objects (parent, kind, seq);
"""

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """An OpenAI-looking id such as `file-...` or `ftjob-...`."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    return int(time.time())


@dataclass
class Row:
    """One stored object: its public body and private bookkeeping."""

    id: str
    kind: str
    parent: str | None
    seq: int
    body: dict[str, Any]
    internal: dict[str, Any]


@dataclass
class Page:
    """One page of a cursor-paginated list."""

    rows: list[Row]
    has_more: bool


class Store:
    """SQLite-backed object store under `<root>/state.sqlite3`, file bytes under `<root>/files/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.parts_dir = root / "upload_parts"
        self.models_folder = root / "models"
        self.training_dir = root / "training"
        for folder in (self.files_dir, self.parts_dir, self.models_folder, self.training_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.db_path = root / "state.sqlite3"
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """An immediate (write-locked) transaction: read-modify-write without lost updates."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield Transaction(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    @contextmanager
    def reader(self) -> Iterator[Transaction]:
        """A consistent read-only snapshot."""
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            yield Transaction(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def part_path(self, part_id: str) -> Path:
        return self.parts_dir / part_id

    def model_data_path(self, job_id: str) -> Path:
        """The training data a fine-tuned model answers from, copied when it was created."""
        return self.models_folder / f"{job_id}.jsonl"

    def models_dir(self) -> Path:
        """Where the real engine keeps converted base models (`<root>/models/<id>/`)."""
        return self.models_folder

    def job_dir(self, job_id: str) -> Path:
        """A real training job's folder: spec.json and the worker's files (ftpipe.training)."""
        return self.training_dir / job_id


class Transaction:
    """Operations on the object table inside one SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def insert(
        self,
        kind: str,
        body: dict[str, Any],
        *,
        parent: str | None = None,
        internal: dict[str, Any] | None = None,
    ) -> Row:
        cursor = self.conn.execute(
            "INSERT INTO objects (id, kind, parent, created_at, body, internal) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (
                body["id"],
                kind,
                parent,
                int(body.get("created_at") or body.get("created") or now()),
                json.dumps(body),
                json.dumps(internal or {}),
            ),
        )
        return Row(body["id"], kind, parent, int(cursor.lastrowid or 0), body, internal or {})

    def update(self, row: Row) -> None:
        self.conn.execute(
            "UPDATE objects SET body = ?, internal = ? WHERE id = ?",
            (json.dumps(row.body), json.dumps(row.internal), row.id),
        )

    def delete(self, object_id: str) -> None:
        self.conn.execute("DELETE FROM objects WHERE id = ?", (object_id,))

    def get(self, kind: str, object_id: str) -> Row | None:
        found = self.conn.execute(
            "SELECT * FROM objects WHERE kind = ? AND id = ?", (kind, object_id)
        ).fetchone()
        return _row(found) if found else None

    def all(self, kind: str, *, parent: str | None = None, newest_first: bool = True) -> list[Row]:
        order = "DESC" if newest_first else "ASC"
        if parent is None:
            rows = self.conn.execute(
                f"SELECT * FROM objects WHERE kind = ? ORDER BY seq {order}", (kind,)
            )
        else:
            rows = self.conn.execute(
                f"SELECT * FROM objects WHERE kind = ? AND parent = ? ORDER BY seq {order}",
                (kind, parent),
            )
        return [_row(found) for found in rows]

    def all_active_jobs(self) -> list[Row]:
        """Jobs that may still change, or whose worker may still need stopping."""
        rows = self.conn.execute(
            "SELECT * FROM objects WHERE kind = 'job' AND (json_extract(body, '$.status') NOT IN "
            "('succeeded', 'failed', 'cancelled') OR json_extract(internal, '$.stopping') "
            "IS NOT NULL) ORDER BY seq ASC"
        )
        return [_row(found) for found in rows]

    def count(self, kind: str, *, parent: str) -> int:
        return int(
            self.conn.execute(
                "SELECT COUNT(*) FROM objects WHERE kind = ? AND parent = ?", (kind, parent)
            ).fetchone()[0]
        )


def paginate(rows: list[Row], *, after: str | None, before: str | None = None, limit: int) -> Page:
    """Cursor pagination the OpenAI way: items strictly past `after` (or before `before`)."""
    ids = [row.id for row in rows]
    start = ids.index(after) + 1 if after in ids else 0
    end = ids.index(before) if before in ids else len(rows)
    window = rows[start:end]
    if before in ids and after not in ids:
        return Page(window[-limit:], has_more=len(window) > limit)
    return Page(window[:limit], has_more=len(window) > limit)


def _row(found: sqlite3.Row) -> Row:
    return Row(
        id=found["id"],
        kind=found["kind"],
        parent=found["parent"],
        seq=found["seq"],
        body=json.loads(found["body"]),
        internal=json.loads(found["internal"]),
    )

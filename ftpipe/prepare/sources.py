"""What the user pointed at: CSV files, folders, CSV text, dialogue logs or chat JSONL.

A `.jsonl` file is a dialogue log when its records are turns (`{"role": ..., "content": ...}`)
and chat JSONL when they are examples (`{"messages": [...]}`); the first readable record decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Literal

from ftpipe.errors import InputError

SourceKind = Literal["csv", "csv_text", "dialogues", "jsonl"]
CSV_SUFFIXES = (".csv", ".tsv")
KIND_BY_SUFFIX: dict[str, SourceKind] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".json": "dialogues",
    ".jsonl": "jsonl",
}
SNIFF_LINES = 20  # records looked at to tell a dialogue log from chat JSONL
SNIFF_LINE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Source:
    """One input: a file of a known kind, or CSV given as text."""

    kind: SourceKind
    name: str
    path: Path | None = None
    text: str | None = None

    @property
    def size(self) -> int:
        if self.text is not None:
            return len(self.text.encode("utf-8"))
        return self.path.stat().st_size if self.path else 0


@dataclass
class Resolved:
    sources: list[Source]
    ignored: list[str]


def classify(path: Path) -> SourceKind | None:
    """The kind of a file by its suffix, and for `.jsonl` by the shape of its records."""
    kind = KIND_BY_SUFFIX.get(path.suffix.lower())
    if kind == "jsonl" and _holds_turns(path):
        return "dialogues"
    return kind


def _holds_turns(path: Path) -> bool:
    """Whether the first readable record is a dialogue turn rather than a chat example."""
    try:
        with path.open("rb") as handle:
            lines = list(islice(iter(lambda: handle.readline(SNIFF_LINE_BYTES), b""), SNIFF_LINES))
    except OSError:
        return False  # the reader says what is wrong with it, naming the file
    for raw in lines:
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # a blank or torn line: the next one tells
        if isinstance(record, dict):
            return "role" in record and "messages" not in record
    return False


def visible_files(folder: Path) -> list[Path]:
    """Files under `folder`, sorted, leaving out hidden ones and those in hidden folders."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not _is_hidden(p, folder))


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder.resolve())


def _folder(folder: Path, exclude: Path | None) -> tuple[list[Source], list[str]]:
    sources, ignored = [], []
    for path in (p for p in visible_files(folder) if not _inside(p, exclude)):
        kind = None if path.suffix.lower() == ".txt" else classify(path)
        if kind is None:
            ignored.append(str(path))
        else:
            sources.append(Source(kind, str(path), path=path))
    return sources, ignored


def resolve_sources(
    paths: Sequence[str | Path], csv_text: str | None = None, *, exclude: Path | None = None
) -> Resolved:
    """Expand folders (recursively) and classify files by suffix; unknown ones are listed.
    Files under `exclude` (the output root, when it sits inside an input folder) are skipped."""
    sources: list[Source] = []
    ignored: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found, skipped = _folder(path, exclude)
            if not found:
                raise InputError(str(path), "holds no .csv, .tsv, .json or .jsonl files")
            sources += found
            ignored += skipped
        elif path.is_file():
            kind = classify(path)
            if kind is None:
                raise InputError(
                    str(path), "is not .csv, .tsv, .txt (CSV), .json (dialogues) or .jsonl"
                )
            sources.append(Source(kind, str(path), path=path))
        else:
            raise InputError(str(path), "does not exist")
    if csv_text is not None:
        if not csv_text.strip():
            raise InputError("<csv text>", "is empty")
        sources.append(Source("csv_text", "<csv text>", text=csv_text))
    if not sources:
        raise InputError("inputs", "no input given: pass files, folders or CSV text")
    return Resolved(sources, ignored)


def content_digest(sources: list[Source], options_fingerprint: str) -> str:
    """The dataset id: a digest of every input's bytes and of the options."""
    digest = hashlib.blake2b(digest_size=8)
    for source in sources:
        digest.update(source.kind.encode() + b"\0")
        if source.text is not None:
            digest.update(source.text.encode("utf-8"))
        elif source.path is not None:
            with source.path.open("rb") as handle:
                digest.update(hashlib.file_digest(handle, "blake2b").digest())
    digest.update(options_fingerprint.encode())
    return digest.hexdigest()

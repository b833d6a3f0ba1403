"""Streaming CSV reader: messy exports in, string-only Arrow batches with source line numbers out.

Callers map columns afterwards; this module only reads. Memory stays flat whatever the file size:
pyarrow parses block by block and is never allowed to read more than a few blocks ahead.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ftpipe.errors import InputError

DEFAULT_BLOCK_BYTES = 4 * 1024 * 1024  # 16 MB blocks cost ~400 MB more peak RSS (bench)
HEAD_BYTES = 1024 * 1024
DELIMITERS = (",", ";", "\t")
CSV_SUFFIXES = (".csv", ".tsv")

_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_SNIFF_CHARS = 64 * 1024
_SNIFF_RECORDS = 100
_PROBE_BLOCK_BYTES = 64 * 1024
_READ_AHEAD_BLOCKS = 2
_STALL_SECONDS = 0.25
_SCAN_BYTES = 256 * 1024
_TRANSCODE_BYTES = 1024 * 1024
_LEADING_BLANK_LINES = re.compile(rb"\A(?:[ \t\r\f\v]*\n)*")
_LEADING_BLANK_TEXT = re.compile(r"\A(?:[ \t\r\f\v]*\n)*")
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_WORD = re.compile(r"[^\W\d_]+")
_LATIN = re.compile(r"[A-Za-z]")
_ARROW_ROW = re.compile(r"Row #(\d+)")


@dataclass(frozen=True)
class CsvDialect:
    """How a file is encoded and delimited, as sniffed from its first bytes."""

    encoding: str
    delimiter: str

    @property
    def note(self) -> str | None:
        """What was done to the text that a user may want to know; None for plain UTF-8."""
        if self.encoding == "cp1251":
            return "encoding cp1251 detected and converted to UTF-8"
        if self.encoding == "utf-8-sig":
            return "UTF-8 with a byte-order mark; the mark was removed"
        return None


@dataclass
class CsvBatch:
    """A slice of rows, all as text, with the line each row starts on for error messages."""

    source: str
    dialect: CsvDialect
    columns: list[str]
    table: pa.Table
    lines: np.ndarray


# --- sniffing -------------------------------------------------------------------------------


def sniff(head: bytes, source: str, *, default_delimiter: str | None = None) -> CsvDialect:
    """Guess encoding and delimiter from the first bytes, refusing what is not CSV text.

    default_delimiter applies when no candidate splits the header; None means tab for a .tsv
    source and comma otherwise.
    """
    _reject_non_text(head, source)
    encoding, text = _sniff_encoding(head, source)
    if default_delimiter is None:
        default_delimiter = "\t" if source.lower().endswith(".tsv") else ","
    return CsvDialect(encoding, _sniff_delimiter(text, default_delimiter))


def _reject_non_text(head: bytes, source: str) -> None:
    """Empty, UTF-16 and binary files get a plain message instead of a parser error later."""
    if not head.removeprefix(_BOM).strip():
        raise InputError(source, "is empty")
    if head.startswith(_UTF16_BOMS):
        raise InputError(source, "is UTF-16 text; save it as UTF-8 CSV")
    if b"\x00" in head:
        raise InputError(source, "is a binary file, not CSV text (it contains NUL bytes)")


def _sniff_encoding(head: bytes, source: str) -> tuple[str, str]:
    """Return the encoding name and the decoded head: UTF-8 (with or without BOM) or cp1251."""
    has_bom = head.startswith(_BOM)
    body = head.removeprefix(_BOM)
    try:
        return ("utf-8-sig" if has_bom else "utf-8"), _decode_utf8_head(body)
    except UnicodeDecodeError as exc:
        error = exc
    if not has_bom and _looks_cp1251(body):
        return "cp1251", body.decode("cp1251")
    offset = error.start + len(head) - len(body)
    raise InputError(
        source,
        f"is not UTF-8 or cp1251 text (undecodable byte 0x{body[error.start]:02x} "
        f"at offset {offset})",
    )


def _decode_utf8_head(data: bytes) -> str:
    """Decode UTF-8, forgiving a character that the end of the sample cut in two."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end == len(data) and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8")
        raise


def _looks_cp1251(data: bytes) -> bool:
    """Cyrillic text, not Latin-1 accents: cp1251 maps those to Cyrillic inside Latin words."""
    try:
        text = data.decode("cp1251")[:_SNIFF_CHARS]
    except UnicodeDecodeError:
        return False
    non_ascii = len(_NON_ASCII.findall(text))
    if not non_ascii or 2 * len(_CYRILLIC.findall(text)) <= non_ascii:
        return False
    cyrillic_words = [word for word in _WORD.findall(text) if _CYRILLIC.search(word)]
    mixed = sum(1 for word in cyrillic_words if _LATIN.search(word))
    return 2 * mixed < len(cyrillic_words)


def _sniff_delimiter(text: str, default: str) -> str:
    """Pick the candidate that splits the header and keeps the first records the same width."""
    sample = _LEADING_BLANK_TEXT.sub("", text[:_SNIFF_CHARS])
    truncated = len(text) > _SNIFF_CHARS
    if truncated and "\n" in sample:
        sample = sample[: sample.rindex("\n") + 1]
    order = (default, *(d for d in DELIMITERS if d != default))
    return max(order, key=lambda delimiter: _delimiter_score(sample, delimiter, truncated))


def _delimiter_score(sample: str, delimiter: str, truncated: bool) -> tuple[bool, float, int]:
    """Rank a delimiter: splits the header at all, share of records as wide, header width."""
    try:
        records = list(
            islice(csv.reader(io.StringIO(sample), delimiter=delimiter), _SNIFF_RECORDS + 1)
        )
    except csv.Error:
        return (False, 0.0, 0)
    if truncated and len(records) > 2:
        records = records[:-1]  # the sample may end inside the last record
    if not records:
        return (False, 0.0, 0)
    width = len(records[0])
    if width < 2:
        return (False, 0.0, 0)  # splits nothing: let the default win the tie
    rows = [record for record in records[1:] if record]
    same = sum(1 for record in rows if len(record) == width) / len(rows) if rows else 1.0
    return (True, same, width)


# --- finding files --------------------------------------------------------------------------


def find_csv_files(directory: Path) -> list[Path]:
    """Every .csv and .tsv below a directory, sorted; hidden folders and files are skipped."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(str(directory), "is not a directory")
    found: list[Path] = []
    for root, folders, files in os.walk(directory):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found.extend(
            Path(root, name)
            for name in files
            if not name.startswith(".") and name.lower().endswith(CSV_SUFFIXES)
        )
    return sorted(found)


# --- reading --------------------------------------------------------------------------------


def read_csv_batches(path: Path, *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[CsvBatch]:
    """Stream a CSV or TSV file as string batches; every problem is a one-line InputError."""
    path = Path(path)
    source = str(path)
    head = _read_head(path, source)
    default = "\t" if path.suffix.lower() == ".tsv" else ","
    dialect = sniff(head, source, default_delimiter=default)
    yield from _stream(partial(path.open, "rb"), source, dialect, head, block_bytes)


def read_csv_text(
    text: str, *, name: str = "<csv text>", block_bytes: int = DEFAULT_BLOCK_BYTES
) -> Iterator[CsvBatch]:
    """Stream CSV given as a string (pasted or uploaded), exactly as a file would be read."""
    data = text.encode("utf-8")
    head = data[:HEAD_BYTES]
    dialect = sniff(head, name)
    yield from _stream(lambda: io.BytesIO(data), name, dialect, head, block_bytes)


def csv_text_header(text: str, *, name: str = "<csv text>") -> list[str] | None:
    """The column names the first line of CSV text would give, None when it cannot be one."""
    head = text.encode("utf-8")[:HEAD_BYTES]
    try:
        dialect = sniff(head, name)
        body = head.removeprefix(_BOM)
        skip = _leading_blank_lines(body)
        names = _read_header(body, len(head) < HEAD_BYTES, name, dialect, skip)
    except InputError:
        return None
    return [column.replace("\ufeff", "").strip() for column in names]


def read_text_lines(
    text: str, *, name: str = "<csv text>", column: str = "text", batch_rows: int = 100_000
) -> Iterator[CsvBatch]:
    """Text with no header, one value per line (blank lines skipped), as batches of `column`."""
    numbered = [
        (number, line.removesuffix("\r"))
        for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1)
        if line.strip()
    ]
    if not numbered:
        raise InputError(name, "is empty")
    dialect = CsvDialect("utf-8", ",")
    for start in range(0, len(numbered), batch_rows):
        chunk = numbered[start : start + batch_rows]
        table = pa.table({column: pa.array([line for _, line in chunk], pa.string())})
        lines = np.array([number for number, _ in chunk], dtype=np.int64)
        yield CsvBatch(name, dialect, [column], table, lines)


def _read_head(path: Path, source: str) -> bytes:
    """The first bytes for sniffing; a missing or unreadable file is the user's to fix."""
    try:
        with open(path, "rb") as file:
            head = file.read(HEAD_BYTES)
            if len(head) == HEAD_BYTES and not head.removeprefix(_BOM).strip():
                _reject_blank_start(file, source)
    except OSError as exc:
        raise InputError(source, f"cannot be opened ({exc.strerror or exc})") from exc
    return head


def _reject_blank_start(file: BinaryIO, source: str) -> None:
    """A head of nothing but blank space: the file is empty, or its header is absurdly far."""
    while chunk := file.read(HEAD_BYTES):
        if chunk.strip():
            raise InputError(source, f"starts with over {HEAD_BYTES} bytes of blank space")
    raise InputError(source, "is empty")


@dataclass(frozen=True)
class _Layout:
    """What the head told us: the dialect, the header as pyarrow sees it, blank lines before it."""

    source: str
    dialect: CsvDialect
    names: list[str]
    columns: list[str]
    skip: int


def _stream(
    opener: Callable[[], BinaryIO],
    source: str,
    dialect: CsvDialect,
    head: bytes,
    block_bytes: int,
) -> Iterator[CsvBatch]:
    """Read the header, then every block; raise for a file that has no data rows."""
    if block_bytes < 1:
        raise ValueError("block_bytes must be positive")
    body = head.removeprefix(_BOM)
    skip = _leading_blank_lines(body)
    names = _read_header(body, len(head) < HEAD_BYTES, source, dialect, skip)
    layout = _Layout(source, dialect, names, _clean_header(names, source), skip)
    header_lines = 1 + sum(name.count("\n") for name in names)
    header_end = _header_end(head, skip + header_lines)
    if len(head) < HEAD_BYTES and _nothing_after(head, header_end):
        raise InputError(source, "has a header but no data rows")
    block_bytes = max(block_bytes, 3 * (header_end or len(head)))  # cp1251: 3 UTF-8 bytes
    lines = _LineTracker(source, skip + header_lines + 1, rows_before_data=skip + 1)
    rows = 0
    with opener() as raw:
        paced = _PacedFile(raw, block_bytes, dialect.encoding)
        for table, line_numbers in _tables(paced, layout, block_bytes, lines):
            rows += table.num_rows
            yield CsvBatch(source, dialect, layout.columns, table, line_numbers)
    if not rows:
        raise InputError(source, "has a header but no data rows")


def _header_end(head: bytes, lines: int) -> int | None:
    """Where the header ends in the head (pyarrow must find it all in its first block)."""
    end = -1
    for _ in range(lines):
        end = head.find(b"\n", end + 1)
        if end < 0:
            return None  # a lone header line, or old Mac line ends ("\r" alone)
    return end + 1


def _nothing_after(head: bytes, header_end: int | None) -> bool:
    """A whole file with no text after its header, which pyarrow would misreport."""
    if header_end is None:
        return not any(end in head.strip() for end in (b"\r", b"\n"))
    return not head[header_end:].strip()


def _leading_blank_lines(body: bytes) -> int:
    """Blank lines before the header, which pyarrow is told to skip."""
    match = _LEADING_BLANK_LINES.match(body)
    return match.group().count(b"\n") if match else 0


def _read_header(
    body: bytes, complete: bool, source: str, dialect: CsvDialect, skip: int
) -> list[str]:
    """Parse the header from the head with pyarrow itself, so the names match the real read."""
    if not complete:
        if b"\n" not in body:
            raise InputError(source, f"has no line break in its first {HEAD_BYTES} bytes")
        body = body[: body.rindex(b"\n") + 1]
    elif not body.endswith(b"\n"):
        body += b"\n"  # pyarrow cannot take a lone header without its line break
    if dialect.encoding == "cp1251":
        body = body.decode("cp1251").encode("utf-8")
    options = pacsv.ReadOptions(block_size=_PROBE_BLOCK_BYTES, skip_rows=skip, use_threads=False)
    try:
        reader = pacsv.open_csv(
            pa.BufferReader(body),
            read_options=options,
            parse_options=_parse_options(dialect, lambda row: "skip"),
        )
    except (pa.ArrowException, UnicodeError) as exc:
        raise _read_error(source, exc, skip + 1, dialect) from exc
    names = list(reader.schema.names)
    reader.close()
    return names


def _clean_header(names: list[str], source: str) -> list[str]:
    """Trim the names and refuse blank or repeated ones (case-insensitively, as callers map)."""
    columns = [name.replace("\ufeff", "").strip() for name in names]
    empty = [str(index) for index, name in enumerate(columns, 1) if not name]
    if empty:
        plural = "s" if len(empty) > 1 else ""
        hint = "; a delimiter at the end of the lines?" if columns[-1] == "" else ""
        raise InputError(
            source, f"header has an empty column name (column{plural} {', '.join(empty)}){hint}"
        )
    seen: dict[str, int] = {}
    for index, name in enumerate(columns, 1):
        first = seen.setdefault(name.casefold(), index)
        if first != index:
            raise InputError(
                source, f"header repeats the column name {name!r} (columns {first} and {index})"
            )
    return columns


def _parse_options(
    dialect: CsvDialect, on_invalid_row: Callable[[pacsv.InvalidRow], str]
) -> pacsv.ParseOptions:
    """Quoted cells may span lines; blank lines stay rows so that line numbers stay exact."""
    return pacsv.ParseOptions(
        delimiter=dialect.delimiter,
        newlines_in_values=True,
        ignore_empty_lines=False,
        invalid_row_handler=on_invalid_row,
    )


def _open_reader(
    paced: _PacedFile, layout: _Layout, block_bytes: int, lines: _LineTracker
) -> pacsv.CSVStreamingReader:
    """Open pyarrow's streaming reader with every column typed as text, nothing inferred."""

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        paced.allow(len(row.text or "") + 1)
        return lines.on_invalid_row(row)

    options = pacsv.ReadOptions(block_size=block_bytes, skip_rows=layout.skip, use_threads=False)
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in layout.names},
        strings_can_be_null=False,
    )
    with _arrow_errors(layout, lines), paced.consumer_waiting():
        reader = pacsv.open_csv(
            paced,
            read_options=options,
            convert_options=convert,
            parse_options=_parse_options(layout.dialect, on_invalid_row),
        )
    _check_schema(reader.schema, layout)
    return reader


def _tables(
    paced: _PacedFile, layout: _Layout, block_bytes: int, lines: _LineTracker
) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """Yield a non-empty string table per block with the line each of its rows starts on."""
    reader = None
    try:
        reader = _open_reader(paced, layout, block_bytes, lines)
        while (batch := _next_batch(reader, paced, layout, lines)) is not None:
            paced.allow(block_bytes)
            table = pa.Table.from_batches([batch]).rename_columns(layout.columns)
            table, line_numbers = lines.place(table)
            if table.num_rows:
                yield table, line_numbers
        lines.finish()
    finally:
        paced.stop()  # first, so that close() never waits on a paced read
        if reader is not None:
            reader.close()


def _next_batch(
    reader: pacsv.CSVStreamingReader, paced: _PacedFile, layout: _Layout, lines: _LineTracker
) -> pa.RecordBatch | None:
    """The next record batch, or None at the end of the file."""
    with _arrow_errors(layout, lines), paced.consumer_waiting():
        try:
            return reader.read_next_batch()
        except StopIteration:
            return None


def _check_schema(schema: pa.Schema, layout: _Layout) -> None:
    """The full read must see the header the probe saw; otherwise types would be guessed."""
    if schema.names != layout.names or any(field.type != pa.string() for field in schema):
        raise InputError(
            layout.source,
            "has a header that cannot be read consistently (an unclosed quote in the header?)",
        )


@contextmanager
def _arrow_errors(layout: _Layout, lines: _LineTracker) -> Iterator[None]:
    """Turn pyarrow's and the codec's exceptions into a one-line InputError with a line hint."""
    try:
        yield
    except (pa.ArrowException, UnicodeError) as exc:
        match = _ARROW_ROW.search(str(exc))
        line = lines.next_line(int(match[1]) if match else None)
        raise _read_error(layout.source, exc, line, layout.dialect) from exc


def _read_error(source: str, exc: Exception, line: int, dialect: CsvDialect) -> InputError:
    """Word a read failure for the user, keeping pyarrow's detail on the same line."""
    if isinstance(exc, _Undecodable):
        return InputError(
            source, f"is not valid {dialect.encoding} text at or after line {line} ({exc})"
        )
    detail = " ".join(str(exc).split())[:200]
    if "invalid UTF8" in detail:
        return InputError(source, f"is not valid UTF-8 text at or after line {line} ({detail})")
    if "straddl" in detail:
        return InputError(
            source,
            f"has a quote that is never closed at or after line {line} "
            "(or a row longer than the block size)",
        )
    return InputError(source, f"cannot be read as CSV at or after line {line} ({detail})")


# --- line numbers ---------------------------------------------------------------------------


@dataclass
class _BadRow:
    """The first row of the wrong width, kept until the rows before it give its line."""

    at: int  # index among emitted rows before which it sits
    skipped_before: int
    fields: int
    expected: int
    text: str


class _LineTracker:
    """Maps pyarrow's rows to the physical lines they start on, across batches and skipped rows.

    A row spans 1 + (newlines inside its cells) lines; rows the invalid-row handler skipped are
    remembered by position so the rows after them still get their true line.
    """

    def __init__(self, source: str, first_line: int, rows_before_data: int) -> None:
        self.source = source
        self.first_line = first_line
        self.rows_before_data = rows_before_data
        self.emitted = 0
        self.span = 0
        self.skip_at: list[int] = []
        self.skip_span: list[int] = [0]  # cumulative
        self.bad: _BadRow | None = None

    def on_invalid_row(self, row: pacsv.InvalidRow) -> str:
        """Skip blank-looking rows quietly; remember the first truly ragged one to report it."""
        if row.number is None:
            return "error"  # unplaceable: let pyarrow raise rather than drop the row unseen
        text = row.text or ""
        at = row.number - self.rows_before_data - 1 - len(self.skip_at)
        if text.strip() and self.bad is None:
            self.bad = _BadRow(
                at, len(self.skip_at), row.actual_columns, row.expected_columns, text
            )
        self.skip_span.append(self.skip_span[-1] + 1 + text.count("\n"))
        self.skip_at.append(at)  # after its span: place() reads both lists from another thread
        return "skip"

    def place(self, table: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """Number a batch's rows, raise for a ragged row among them, drop rows with no content."""
        spans = _row_spans(table)
        ends = np.cumsum(spans, dtype=np.int64)
        starts = ends - spans
        skip_at = np.asarray(self.skip_at[:], dtype=np.int64)
        skip_span = np.asarray(self.skip_span[: len(skip_at) + 1], dtype=np.int64)
        indices = self.emitted + np.arange(len(spans), dtype=np.int64)
        before = skip_span[np.searchsorted(skip_at, indices, side="right")]
        lines = self.first_line + self.span + starts + before
        self._raise_bad_row(np.concatenate(([0], ends)), skip_span)
        self.emitted += len(spans)
        self.span += int(ends[-1]) if len(ends) else 0
        keep = _rows_with_content(table)
        if keep is None:
            return table, lines
        return table.filter(pa.array(keep)), lines[keep]

    def finish(self) -> None:
        """At the end of the file a ragged row may still wait for its report."""
        self._raise_bad_row(np.zeros(1, dtype=np.int64), np.asarray(self.skip_span))

    def next_line(self, row_number: int | None = None) -> int:
        """The first line a failed read can be on: the next unread row's, or pyarrow's row's.

        pyarrow numbers rows, not lines; rows span a line at least, so its row N of this
        block lies at least (N - first unread row) lines further on.
        """
        skipped = int(np.searchsorted(np.asarray(self.skip_at[:]), self.emitted, side="right"))
        line = self.first_line + self.span + self.skip_span[skipped]
        if row_number is not None:
            unread = self.rows_before_data + 1 + self.emitted + skipped
            line += max(0, row_number - unread)
        return line

    def _raise_bad_row(self, row_starts: np.ndarray, skip_span: np.ndarray) -> None:
        """Report the first ragged row once every row before it has been counted.

        row_starts holds, for each row of the batch and one past its end, the lines before it.
        """
        bad = self.bad
        if bad is None or not self.emitted <= bad.at < self.emitted + len(row_starts):
            return
        line = self.first_line + self.span + int(row_starts[bad.at - self.emitted])
        line += int(skip_span[bad.skipped_before])
        noun = "field" if bad.fields == 1 else "fields"
        snippet = " ".join(bad.text.split())
        snippet = snippet if len(snippet) <= 60 else snippet[:57] + "..."
        problem = f"line {line} has {bad.fields} {noun}, expected {bad.expected} ({snippet!r})"
        if bad.text.count('"') % 2:
            problem += "; a quote may be left open"
        elif bad.fields > bad.expected:
            problem += "; quote cells that contain the delimiter"
        raise InputError(self.source, problem)


def _row_spans(table: pa.Table) -> np.ndarray:
    """Physical lines per row: one plus the newlines inside its quoted cells."""
    spans = np.ones(table.num_rows, dtype=np.int64)
    for column in table.columns:
        if any(_may_hold_newline(chunk) for chunk in column.chunks):
            spans += pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
    return spans


def _may_hold_newline(chunk: pa.Array) -> bool:
    """A memchr over the cell bytes spares the slower per-cell count in the usual case.

    It goes in small slices: whole-column copies would bloat the heap of a long-running reader.
    """
    data = chunk.buffers()[2]
    if data is None:
        return False
    view = memoryview(data)
    return any(
        b"\n" in view[start : start + _SCAN_BYTES].tobytes()
        for start in range(0, len(view), _SCAN_BYTES)
    )


def _rows_with_content(table: pa.Table) -> np.ndarray | None:
    """Mask of rows with any non-empty cell, or None when all have one (the usual case).

    Blank lines and rows of empty cells carry nothing; they are dropped after numbering.
    """
    keep = np.zeros(table.num_rows, dtype=bool)
    for column in table.columns:
        keep |= pc.binary_length(column).to_numpy(zero_copy_only=False) > 0
    return None if keep.all() else keep


# --- back-pressure --------------------------------------------------------------------------


class _Undecodable(UnicodeError):
    """Raised on pyarrow's reading thread; carries what the user's message needs."""

    def __init__(self, byte: int, offset: int) -> None:
        super().__init__(f"undecodable byte 0x{byte:02x} at offset {offset}")
        self.byte = byte
        self.offset = offset


class _PacedFile(io.RawIOBase):
    """A file that pyarrow's background reader may read only a few blocks ahead of the consumer.

    open_csv otherwise prefetches dozens of blocks, so memory would grow with the file size.
    A cp1251 file is transcoded here: faster than pyarrow's codec wrapper, and paced in the
    UTF-8 bytes that pyarrow actually receives.
    """

    def __init__(self, raw: BinaryIO, block_bytes: int, encoding: str = "utf-8") -> None:
        super().__init__()
        self._raw = raw
        self._allowed = _READ_AHEAD_BLOCKS * block_bytes
        self._read = 0
        self._waiting = False
        self._stopped = False
        self._cond = threading.Condition()
        self._encoding = encoding
        self._decoder = (
            None
            if encoding in ("utf-8", "utf-8-sig")
            else (codecs.getincrementaldecoder(encoding)())
        )
        self._pending = memoryview(b"")
        self._raw_offset = 0

    def readable(self) -> bool:
        """pyarrow checks this before reading."""
        return True

    def read(self, size: int = -1) -> pa.Buffer | bytes:  # type: ignore[override]
        """Block while far enough ahead, unless the consumer itself is waiting on this read."""
        with self._cond:
            while not (self._stopped or self._read < self._allowed):
                if not self._cond.wait(_STALL_SECONDS) and self._waiting:
                    break  # a row longer than a block: pyarrow needs more before the next batch
            if self._stopped:
                return b""
        data = self._read_buffer(size if size > 0 else _TRANSCODE_BYTES)
        with self._cond:
            self._read += len(data)
        return data

    def _read_buffer(self, size: int) -> pa.Buffer:
        """Fill a buffer from Arrow's pool: big bytes made on pyarrow's thread bloat the heap."""
        buffer = pa.allocate_buffer(size, resizable=True)
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < size and (count := self._read_into(view[filled:])):
            filled += count
        view.release()
        buffer.resize(filled)
        return buffer

    def _read_into(self, view: memoryview) -> int:
        """Copy the next UTF-8 bytes into view; 0 at the end of the file."""
        if self._decoder is None:
            return self._raw.readinto(view) or 0
        while not self._pending and self._transcode_chunk():
            pass
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _transcode_chunk(self) -> bool:
        """Decode the next raw chunk to UTF-8 into the pending bytes; False at the end."""
        chunk = self._raw.read(_TRANSCODE_BYTES)
        try:
            text = self._decoder.decode(chunk, final=not chunk)  # type: ignore[union-attr]
        except UnicodeDecodeError as exc:
            raise _Undecodable(chunk[exc.start], self._raw_offset + exc.start) from exc
        self._raw_offset += len(chunk)
        self._pending = memoryview(text.encode("utf-8"))
        return bool(chunk)

    def allow(self, nbytes: int) -> None:
        """The consumer took a batch: let the reader fetch that much more."""
        with self._cond:
            self._allowed += nbytes
            self._cond.notify_all()

    @contextmanager
    def consumer_waiting(self) -> Iterator[None]:
        """Mark the consumer as blocked inside pyarrow, so a stalled read may go ahead."""
        with self._cond:
            self._waiting = True
        try:
            yield
        finally:
            with self._cond:
                self._waiting = False

    def stop(self) -> None:
        """Let a blocked reader return end-of-file so pyarrow's thread can finish."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

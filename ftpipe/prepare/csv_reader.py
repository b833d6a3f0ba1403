"""Streaming CSV reader: messy exports in, string-only Arrow batches with source line numbers out.

Callers map columns afterwards; this module only reads. Memory stays flat whatever the file size:
pyarrow parses block by block and is never allowed to read more than a few blocks ahead. A row
longer than a block, which pyarrow cannot parse, is cut out by a quote-aware scan and handed back
as a reject; the rows around it are read on.
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
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ftpipe.errors import InputError
from ftpipe.prepare.encoding import UTF8, check_encoding, decode_given, detect_single_byte
from ftpipe.prepare.rejects import ROW_TOO_LONG, Reject

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
_SCAN_BYTES_PER_READ = 1024 * 1024
_EXCERPT_BYTES = 240
_LEADING_BLANK_LINES = re.compile(rb"\A(?:[ \t\r\f\v]*\n)*")
_LEADING_BLANK_TEXT = re.compile(r"\A(?:[ \t\r\f\v]*\n)*")
_ARROW_ROW = re.compile(r"Row #(\d+)")
_CONTROL = re.compile(rb"[\x01-\x08\x0e-\x1a\x1c-\x1f]")
_QUOTED_TEXT = re.compile(rb'[^"]*+(?:""[^"]*+)*+')  # inside quotes, up to the closing one
_UTF16_SAMPLE = 4096


@dataclass(frozen=True)
class CsvDialect:
    """How a file is encoded and delimited, as sniffed from its first bytes (or given)."""

    encoding: str
    delimiter: str
    given: bool = field(default=False, compare=False)  # the user chose the encoding

    @property
    def note(self) -> str | None:
        """What was done to the text that a user may want to know; None for plain UTF-8."""
        if self.encoding == "utf-8-sig":
            return "UTF-8 with a byte-order mark; the mark was removed"
        if self.encoding == "utf-8":
            return None
        if self.given:
            return f"encoding {self.encoding} (as given) converted to UTF-8"
        return f"encoding {self.encoding} detected and converted to UTF-8"


@dataclass
class CsvBatch:
    """A slice of rows, all as text, with the line each row starts on for error messages."""

    source: str
    dialect: CsvDialect
    columns: list[str]
    table: pa.Table
    lines: np.ndarray
    rejects: list[Reject] = field(default_factory=list)  # rows read but not returned (too long)


# --- sniffing -------------------------------------------------------------------------------


def sniff(
    head: bytes,
    source: str,
    *,
    default_delimiter: str | None = None,
    encoding: str | None = None,
) -> CsvDialect:
    """Guess encoding and delimiter from the first bytes, refusing what is not CSV text.

    default_delimiter applies when no candidate splits the header; None means tab for a .tsv
    source and comma otherwise. encoding, when given, is used instead of the guess.
    """
    return _sniff(head, source, default_delimiter, check_encoding(encoding))[0]


def _sniff(
    head: bytes, source: str, default_delimiter: str | None, encoding: str | None
) -> tuple[CsvDialect, bytes]:
    """The dialect, and the head as the UTF-8 bytes that pyarrow will be given."""
    given = encoding is not None
    if encoding is None:
        _reject_non_text(head, source)
        encoding, text = _sniff_encoding(head, source)
    else:
        encoding, text = decode_given(head, source, encoding, len(head) < HEAD_BYTES)
    utf8 = head if encoding in UTF8 else text.encode("utf-8")
    if given:
        _reject_non_text(utf8, source)  # checked decoded: UTF-16's own bytes are half NULs
    if default_delimiter is None:
        default_delimiter = "\t" if source.lower().endswith(".tsv") else ","
    delimiter = _sniff_delimiter(text, default_delimiter)
    return CsvDialect(encoding, delimiter, given=given), utf8


def _reject_non_text(head: bytes, source: str) -> None:
    """Empty, UTF-16 and binary files get a plain message instead of a parser error later."""
    if not head.removeprefix(_BOM).strip():
        raise InputError(source, "is empty")
    if head.startswith(_UTF16_BOMS):
        raise InputError(source, "is UTF-16 text; save it as UTF-8 CSV")
    at = head.find(b"\x00")
    if at < 0:
        return
    if _looks_utf16(head):
        raise InputError(
            source,
            "looks like UTF-16 text without a byte-order mark; save it as UTF-8, "
            "or rerun with --encoding utf-16-le (or utf-16-be)",
        )
    if _CONTROL.search(head):
        raise InputError(source, "is a binary file, not CSV text (it contains NUL bytes)")
    raise InputError(source, nul_problem(head.count(b"\n", 0, at) + 1))


def nul_problem(line: int) -> str:
    """The one wording for a NUL byte: text never holds one, and it must not reach the output."""
    return (
        f"has a NUL byte on line {line}, which text never holds (a damaged export?); "
        "remove it and rerun"
    )


def _looks_utf16(head: bytes) -> bool:
    """ASCII in UTF-16 has a NUL at every other byte: odd places for LE, even ones for BE."""
    sample = head[:_UTF16_SAMPLE]
    even, odd = sample[0::2].count(0), sample[1::2].count(0)
    half = len(sample) // 2 or 1
    return max(even, odd) > half * 0.3 and min(even, odd) < half * 0.05


def _sniff_encoding(head: bytes, source: str) -> tuple[str, str]:
    """Return the encoding name and the decoded head: UTF-8 (with or without BOM), else a
    code page only when the bytes show which (see encoding.py)."""
    has_bom = head.startswith(_BOM)
    body = head.removeprefix(_BOM)
    try:
        return ("utf-8-sig" if has_bom else "utf-8"), _decode_utf8_head(body)
    except UnicodeDecodeError as exc:
        error = exc
    if has_bom:
        line = body.count(b"\n", 0, error.start) + 1
        raise InputError(
            source,
            f"starts with a UTF-8 byte-order mark but is not UTF-8 (undecodable byte "
            f"0x{body[error.start]:02x} on line {line}); save it as UTF-8 again",
        )
    encoding = detect_single_byte(body, source)
    return encoding, body.decode(encoding)


def _decode_utf8_head(data: bytes) -> str:
    """Decode UTF-8, forgiving a character that the end of the sample cut in two."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end == len(data) and exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8")
        raise


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


def read_csv_batches(
    path: Path, *, block_bytes: int = DEFAULT_BLOCK_BYTES, encoding: str | None = None
) -> Iterator[CsvBatch]:
    """Stream a CSV or TSV file as string batches; every problem is a one-line InputError.

    encoding: a Python codec name that overrides detection (None: UTF-8, else cp1251 or cp1252
    when the bytes show which). Rows longer than block_bytes come back as rejects.
    """
    encoding = check_encoding(encoding)
    path = Path(path)
    source = str(path)
    head = _read_head(path, source)
    default = "\t" if path.suffix.lower() == ".tsv" else ","
    dialect, utf8 = _sniff(head, source, default, encoding)
    opener = partial(path.open, "rb")
    yield from _stream(opener, source, dialect, _Head(utf8, len(head) < HEAD_BYTES), block_bytes)


def read_csv_text(
    text: str, *, name: str = "<csv text>", block_bytes: int = DEFAULT_BLOCK_BYTES
) -> Iterator[CsvBatch]:
    """Stream CSV given as a string (pasted or uploaded), exactly as a file would be read."""
    data = text.encode("utf-8")
    head = data[:HEAD_BYTES]
    dialect, utf8 = _sniff(head, name, None, None)
    opener = partial(io.BytesIO, data)
    yield from _stream(opener, name, dialect, _Head(utf8, len(head) < HEAD_BYTES), block_bytes)


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
    if "\x00" in text:
        raise InputError(name, nul_problem(text.count("\n", 0, text.index("\x00")) + 1))
    dialect = CsvDialect("utf-8", ",")
    for start in range(0, len(numbered), batch_rows):
        chunk = numbered[start : start + batch_rows]
        table = pa.table({column: pa.array([line for _, line in chunk], pa.string())})
        lines = np.array([number for number, _ in chunk], dtype=np.int64)
        table, lines, rejects = _drop_long_rows(table, lines, name, DEFAULT_BLOCK_BYTES)
        yield CsvBatch(name, dialect, [column], table, lines, rejects)


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
class _Head:
    """The first bytes as pyarrow will get them (UTF-8), and whether they are the whole file."""

    data: bytes
    complete: bool


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
    head: _Head,
    block_bytes: int,
) -> Iterator[CsvBatch]:
    """Read the header, then every block; raise for a file that has no data rows."""
    if block_bytes < 1:
        raise ValueError("block_bytes must be positive")
    body = head.data.removeprefix(_BOM)
    skip = _leading_blank_lines(body)
    names = _read_header(body, head.complete, source, dialect, skip)
    layout = _Layout(source, dialect, names, _clean_header(names, source), skip)
    header_lines = 1 + sum(name.count("\n") for name in names)
    header_end = _header_end(head.data, skip + header_lines)
    if head.complete and _nothing_after(head.data, header_end):
        raise InputError(source, "has a header but no data rows")
    block_bytes = max(block_bytes, 3 * (header_end or len(head.data)))  # header in block one
    lines = _LineTracker(source, skip + header_lines + 1, rows_before_data=skip + 1)
    body_reader = _BodyReader(opener, layout, block_bytes, lines, header_end is not None)
    rows = 0
    try:
        for table, line_numbers, rejects in body_reader.rows():
            rows += table.num_rows + len(rejects)
            yield CsvBatch(source, dialect, layout.columns, table, line_numbers, rejects)
    except _Straddled as exc:
        raise exc.error from exc.__cause__
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


class _BodyReader:
    """Reads the rows after the header: pyarrow's fast path, and a way around rows too long for it.

    pyarrow refuses a row that straddles two blocks. Then the file is scanned from the first
    unread line to that row, the rows before it are read, the row becomes a reject, and pyarrow
    starts again after it. Offsets are in the UTF-8 bytes pyarrow reads.
    """

    def __init__(
        self,
        opener: Callable[[], BinaryIO],
        layout: _Layout,
        block_bytes: int,
        lines: _LineTracker,
        resumable: bool,
    ) -> None:
        self.opener = opener
        self.layout = layout
        self.block_bytes = block_bytes
        self.lines = lines
        self.resumable = resumable  # False for old Mac line ends, where lines are not rows
        self.mark = (1, 0)  # (line, offset) known to start a line: where scans start

    def rows(self) -> Iterator[tuple[pa.Table, np.ndarray, list[Reject]]]:
        """(table, line numbers, rejects) per block, in file order."""
        start: int | None = None  # None: from the top, header included
        while True:
            try:
                yield from self._part(start, None)
                return
            except _Straddled:
                if not self.resumable:
                    raise
            long_row = self._find_long_row(self.lines.next_line())
            yield from self._part(long_row.resume, long_row.start)
            self.lines.skip_row(long_row.span)
            yield _empty_table(self.layout), np.empty(0, np.int64), [long_row.reject(self)]
            start, self.mark = long_row.end, (long_row.line + long_row.span, long_row.end)

    def _part(
        self, start: int | None, end: int | None
    ) -> Iterator[tuple[pa.Table, np.ndarray, list[Reject]]]:
        """Read from start (None: the top) to end (None: the end of the file) with pyarrow."""
        with self.opener() as raw:
            stream = _Utf8Stream(raw, self.layout.dialect.encoding, start or 0, end)
            if start is not None:
                if stream.at_end():
                    return
                self.lines.restart()
            paced = _PacedFile(stream, self.block_bytes)
            yield from _tables(paced, self.layout, self.block_bytes, self.lines, start is None)

    def _find_long_row(self, line: int) -> _LongRow:
        """Scan from the start of `line` to the first row longer than a block."""
        with self.opener() as raw:
            first_line, offset = self.mark
            stream = _Utf8Stream(raw, self.layout.dialect.encoding, offset)
            cursor = _Cursor(stream, offset)
            if not cursor.skip_lines(line - first_line):
                raise self._lost(line)
            resume = cursor.offset
            scanner = _RecordScanner(cursor, self.layout.dialect.delimiter)
            while (record := scanner.next()) is not None:
                if record.size > self.block_bytes:
                    self._check_closed(record, line)
                    return _LongRow(resume, record, line)
                line += record.span
        raise self._lost(line)

    def _check_closed(self, record: _Record, line: int) -> None:
        """A quote open to the end of the file is not a long row: the file is broken there."""
        if not record.closed:
            raise InputError(
                self.layout.source,
                f"has a quote that is never closed: the cell opened on line {line} runs to the "
                "end of the file",
            )

    def _lost(self, line: int) -> InputError:
        """pyarrow saw a row longer than a block where the scan found none (should not happen)."""
        return InputError(
            self.layout.source,
            f"cannot be read as CSV at or after line {line} (a row longer than the block size "
            "that could not be found again)",
        )


@dataclass(frozen=True)
class _LongRow:
    """A row too long to read, found by the scan, and where the scan began (a row start)."""

    resume: int
    record: _Record
    line: int

    @property
    def start(self) -> int:
        return self.record.start

    @property
    def end(self) -> int:
        return self.record.end

    @property
    def span(self) -> int:
        return self.record.span

    def reject(self, reader: _BodyReader) -> Reject:
        """The row as rejects.csv lists it: its size, the lines it covers, how it begins."""
        lines = f"line {self.line}"
        if self.span > 1:
            lines = f"lines {self.line}-{self.line + self.span - 1}"
        text = self.record.head.decode("utf-8", errors="replace")
        value = _long_value(self.record.size, reader.block_bytes, text, lines)
        return Reject(reader.layout.source, self.line, "*", ROW_TOO_LONG, value)


def _long_value(size: int, limit: int, text: str, where: str = "") -> str:
    """What rejects.csv shows for a row over the limit: its size first, then how it begins."""
    where = f" on {where}" if where else ""
    excerpt = " ".join(text.split())
    return f"{size:,} bytes{where}, over the {limit:,}-byte row limit: {excerpt}"


def _empty_table(layout: _Layout) -> pa.Table:
    """A batch with no rows, to carry rejects."""
    return pa.schema([(name, pa.string()) for name in layout.columns]).empty_table()


def _open_reader(
    paced: _PacedFile, layout: _Layout, block_bytes: int, lines: _LineTracker, header: bool
) -> pacsv.CSVStreamingReader:
    """Open pyarrow's streaming reader with every column typed as text, nothing inferred.

    Without header the stream starts at a row inside the file, and the names are given.
    """

    def on_invalid_row(row: pacsv.InvalidRow) -> str:
        paced.allow(len(row.text or "") + 1)
        return lines.on_invalid_row(row)

    if header:
        options = pacsv.ReadOptions(
            block_size=block_bytes, skip_rows=layout.skip, use_threads=False
        )
    else:
        options = pacsv.ReadOptions(
            block_size=block_bytes, column_names=layout.names, use_threads=False
        )
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
    paced: _PacedFile, layout: _Layout, block_bytes: int, lines: _LineTracker, header: bool
) -> Iterator[tuple[pa.Table, np.ndarray, list[Reject]]]:
    """Yield a string table per block with the line each of its rows starts on, and the rows
    dropped for being longer than a block."""
    reader = None
    try:
        reader = _open_reader(paced, layout, block_bytes, lines, header)
        while (batch := _next_batch(reader, paced, layout, lines)) is not None:
            paced.allow(block_bytes)
            table = pa.Table.from_batches([batch]).rename_columns(layout.columns)
            table, line_numbers = lines.place(table)
            _reject_nul(table, line_numbers, layout.source)
            table, line_numbers, rejects = _drop_long_rows(
                table, line_numbers, layout.source, block_bytes
            )
            if table.num_rows or rejects:
                yield table, line_numbers, rejects
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


def _reject_nul(table: pa.Table, line_numbers: np.ndarray, source: str) -> None:
    """A NUL byte refuses the file with its line, as a ragged row or a bad byte does."""
    first: int | None = None
    for column in table.columns:
        if not any(_may_hold(chunk, b"\x00") for chunk in column.chunks):
            continue
        hits = pc.match_substring(column, "\x00").to_numpy(zero_copy_only=False)
        if hits.any():
            index = int(np.argmax(hits))
            first = index if first is None else min(first, index)
    if first is None:
        return
    cells = [str(column[first].as_py()) for column in table.columns]
    raise InputError(source, nul_problem(int(line_numbers[first]) + _lines_before_nul(cells)))


def _lines_before_nul(cells: list[str]) -> int:
    """How many line breaks of its row come before the first NUL (quoted cells span lines)."""
    before = 0
    for cell in cells:
        if "\x00" in cell:
            return before + cell.count("\n", 0, cell.index("\x00"))
        before += cell.count("\n")
    return before


def _drop_long_rows(
    table: pa.Table, line_numbers: np.ndarray, source: str, limit: int
) -> tuple[pa.Table, np.ndarray, list[Reject]]:
    """Rows whose cells hold more than `limit` bytes become rejects, wherever pyarrow split the
    blocks, so the limit does not depend on where a long row happens to fall."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        sizes += pc.binary_length(column).to_numpy(zero_copy_only=False)
    over = sizes > limit
    if not over.any():
        return table, line_numbers, []
    rejects = [
        Reject(
            source,
            int(line_numbers[i]),
            "*",
            ROW_TOO_LONG,
            _long_value(int(sizes[i]), limit, _row_start(table, int(i))),
        )
        for i in np.flatnonzero(over)
    ]
    keep = pa.array(~over)
    return table.filter(keep), line_numbers[~over], rejects


def _row_start(table: pa.Table, index: int) -> str:
    """The first characters of each cell of a row, without copying its long cells whole."""
    cells = [
        pc.utf8_slice_codeunits(column.slice(index, 1), 0, _EXCERPT_BYTES)[0].as_py()
        for column in table.columns
    ]
    return ",".join(cells)


class _Straddled(Exception):
    """pyarrow met a row longer than its block; carries the error to show if it cannot be cut."""

    def __init__(self, error: InputError) -> None:
        super().__init__(str(error))
        self.error = error


@contextmanager
def _arrow_errors(layout: _Layout, lines: _LineTracker) -> Iterator[None]:
    """Turn pyarrow's and the codec's exceptions into a one-line InputError with a line hint."""
    try:
        yield
    except (pa.ArrowException, UnicodeError) as exc:
        match = _ARROW_ROW.search(str(exc))
        line = lines.next_line(int(match[1]) if match else None)
        error = _read_error(layout.source, exc, line, layout.dialect)
        if "straddl" in str(exc):
            raise _Straddled(error) from exc
        raise error from exc


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

    def restart(self) -> None:
        """pyarrow starts again at the next unread row: its row numbers start again at 1.

        Skipped rows it noted past that row (read ahead, never emitted) will be seen again.
        """
        kept = int(np.searchsorted(np.asarray(self.skip_at[:]), self.emitted, side="right"))
        del self.skip_at[kept:]
        del self.skip_span[kept + 1 :]
        if self.bad is not None and self.bad.at > self.emitted:
            self.bad = None
        self.rows_before_data = -(self.emitted + len(self.skip_at))

    def skip_row(self, span: int) -> None:
        """A row the reader cut out itself, before the next row to be emitted."""
        self.skip_span.append(self.skip_span[-1] + span)
        self.skip_at.append(self.emitted)

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
        if any(_may_hold(chunk, b"\n") for chunk in column.chunks):
            spans += pc.count_substring(column, "\n").to_numpy(zero_copy_only=False)
    return spans


def _may_hold(chunk: pa.Array, byte: bytes) -> bool:
    """A memchr over the cell bytes spares the slower per-cell search in the usual case.

    It goes in small slices: whole-column copies would bloat the heap of a long-running reader.
    """
    data = chunk.buffers()[2]
    if data is None:
        return False
    view = memoryview(data)
    return any(
        byte in view[start : start + _SCAN_BYTES].tobytes()
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


class _Utf8Stream:
    """A file's text as the UTF-8 bytes pyarrow reads, from `start` to `end` in those bytes.

    A file in another encoding is transcoded here: faster than pyarrow's codec wrapper, and
    paced in the bytes that pyarrow actually receives. Starting inside such a file means
    transcoding up to there (only rows too long for a block need that).
    """

    def __init__(
        self, raw: BinaryIO, encoding: str, start: int = 0, end: int | None = None
    ) -> None:
        self._raw = raw
        self._decoder = None if encoding in UTF8 else codecs.getincrementaldecoder(encoding)()
        self._pending = memoryview(b"")
        self._raw_offset = 0
        self._left = None if end is None else end - start
        self._skip(start)

    def readinto(self, view: memoryview) -> int:
        """Copy the next UTF-8 bytes into view; 0 at the end."""
        if self._left is not None:
            view = view[: self._left]
        count = self._read_into(view) if len(view) else 0
        if self._left is not None:
            self._left -= count
        return count

    def read(self, size: int) -> bytes:
        """Up to size bytes, fewer only at the end."""
        data = bytearray(size)
        view = memoryview(data)
        filled = 0
        while filled < size and (count := self.readinto(view[filled:])):
            filled += count
        view.release()
        del data[filled:]
        return bytes(data)

    def at_end(self) -> bool:
        """Whether nothing is left to read (looks one chunk ahead, keeping it)."""
        if self._left == 0:
            return True
        if not self._pending:
            if self._decoder is None:
                self._pending = memoryview(self._raw.read(_TRANSCODE_BYTES))
            else:
                while not self._pending and self._transcode_chunk():
                    pass
        return not self._pending

    def _skip(self, count: int) -> None:
        """Move to the UTF-8 offset `count`: a seek, or transcoding up to it."""
        if self._decoder is None:
            self._raw.seek(count)
            return
        scratch = memoryview(bytearray(_TRANSCODE_BYTES))
        while count > 0 and (done := self._read_into(scratch[: min(count, len(scratch))])):
            count -= done

    def _read_into(self, view: memoryview) -> int:
        """Copy the next UTF-8 bytes into view; 0 at the end of the file."""
        if self._decoder is None and not self._pending:
            return self._raw.readinto(view) or 0
        while not self._pending and self._transcode_chunk():
            pass
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _transcode_chunk(self) -> bool:
        """Decode the next raw chunk to UTF-8 into the pending bytes; False at the end."""
        if self._decoder is None:
            return False
        chunk = self._raw.read(_TRANSCODE_BYTES)
        try:
            text = self._decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            raise _Undecodable(chunk[exc.start], self._raw_offset + exc.start) from exc
        self._raw_offset += len(chunk)
        self._pending = memoryview(text.encode("utf-8"))
        return bool(chunk)


class _PacedFile(io.RawIOBase):
    """A file that pyarrow's background reader may read only a few blocks ahead of the consumer.

    open_csv otherwise prefetches dozens of blocks, so memory would grow with the file size.
    """

    def __init__(self, stream: _Utf8Stream, block_bytes: int) -> None:
        super().__init__()
        self._stream = stream
        self._allowed = _READ_AHEAD_BLOCKS * block_bytes
        self._read = 0
        self._waiting = False
        self._stopped = False
        self._cond = threading.Condition()

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
        while filled < size and (count := self._stream.readinto(view[filled:])):
            filled += count
        view.release()
        buffer.resize(filled)
        return buffer

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


# --- finding rows too long for pyarrow -------------------------------------------------------


class _Cursor:
    """Forward reading over a UTF-8 stream with absolute offsets, holding about one chunk."""

    def __init__(self, stream: _Utf8Stream, offset: int) -> None:
        self.stream = stream
        self.buf = b""
        self.pos = 0
        self.base = offset  # the offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def fill(self) -> bool:
        """Append the next chunk, dropping what was read; False at the end."""
        chunk = self.stream.read(_SCAN_BYTES_PER_READ)
        if not chunk:
            return False
        self.buf = self.buf[self.pos :] + chunk
        self.base += self.pos
        self.pos = 0
        return True

    def skip_lines(self, count: int) -> bool:
        """Move past `count` line breaks; False when the stream ends first."""
        while count > 0:
            found = self.buf.count(b"\n", self.pos)
            if found < count:
                count -= found
                self.pos = len(self.buf)
                if not self.fill():
                    return False
                continue
            for _ in range(count):
                self.pos = self.buf.index(b"\n", self.pos) + 1
            count = 0
        return True


@dataclass(frozen=True)
class _Record:
    """One CSV row as bytes of the stream: where, how many lines, and how it begins."""

    start: int
    end: int
    span: int  # lines, as the line tracker counts them: 1 + line breaks inside its cells
    closed: bool  # False when a quoted cell was still open at the end of the file
    head: bytes

    @property
    def size(self) -> int:
        return self.end - self.start


class _RecordScanner:
    """Finds where rows end the way pyarrow parses them, without holding a row in memory.

    A quote opens a quoted cell only at the start of a cell; inside one, "" is a quote and line
    breaks are text; after the closing quote the cell goes on unquoted. A row ends at a line
    break outside quotes: LF, CRLF or a lone CR.
    """

    def __init__(self, cursor: _Cursor, delimiter: str) -> None:
        self.cursor = cursor
        quote_start = re.escape(delimiter.encode()) + b'"'
        self.unquoted = re.compile(b"[\r\n]|" + quote_start)
        self.newlines = 0
        self.head = bytearray()

    def next(self) -> _Record | None:
        """The next row, or None at the end of the stream."""
        cursor = self.cursor
        if cursor.pos >= len(cursor.buf) and not cursor.fill():
            return None
        start = cursor.offset
        self.newlines, self.head = 0, bytearray()
        closed, ends_line = self._scan()
        span = self.newlines - (1 if ends_line else 0) + 1
        return _Record(start, cursor.offset, span, closed, bytes(self.head))

    def _advance(self, to: int) -> None:
        """Consume buf up to `to`, counting its line breaks and keeping the row's first bytes."""
        cursor = self.cursor
        self.newlines += cursor.buf.count(b"\n", cursor.pos, to)
        room = _EXCERPT_BYTES - len(self.head)
        if room > 0:
            self.head += cursor.buf[cursor.pos : min(to, cursor.pos + room)]
        cursor.pos = to

    def _scan(self) -> tuple[bool, bool]:
        """Consume one row; (quotes closed, ended by a LF)."""
        cursor = self.cursor
        if cursor.buf[cursor.pos : cursor.pos + 1] == b'"':
            self._advance(cursor.pos + 1)
            if not self._quoted():
                return False, False
        while True:
            match = self.unquoted.search(cursor.buf, cursor.pos)
            if match is None:
                self._advance(max(cursor.pos, len(cursor.buf) - 1))  # a delimiter may end it
                if not cursor.fill():
                    self._advance(len(cursor.buf))
                    return True, False
                continue
            if match.group() == b"\n":
                self._advance(match.end())
                return True, True
            if match.group() == b"\r":
                return True, self._carriage_return(match.start())
            self._advance(match.end())
            if not self._quoted():
                return False, False

    def _carriage_return(self, at: int) -> bool:
        """End the row at a CR, taking the LF after it too; True when there was one."""
        cursor = self.cursor
        self._advance(at)
        if cursor.pos + 1 >= len(cursor.buf):
            cursor.fill()
        if cursor.buf[cursor.pos + 1 : cursor.pos + 2] == b"\n":
            self._advance(cursor.pos + 2)
            return True
        self._advance(cursor.pos + 1)
        return False

    def _quoted(self) -> bool:
        """Consume a quoted cell up to just past its closing quote; False if the file ends first.

        A quote that ends the buffer may be half of a "" pair: it waits for the next chunk.
        """
        cursor = self.cursor
        while True:
            end = _QUOTED_TEXT.match(cursor.buf, cursor.pos).end()  # type: ignore[union-attr]
            if end + 1 < len(cursor.buf):
                self._advance(end + 1)  # buf[end] is a lone quote: the closing one
                return True
            self._advance(end)
            if not cursor.fill():
                if end < len(cursor.buf):
                    self._advance(end + 1)  # the closing quote is the file's last byte
                    return True
                return False

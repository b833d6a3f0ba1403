"""Bad CSV input, second round: encodings that must not be guessed, NUL bytes, and one cell too
long for the reader, which must cost that row only."""
# ruff: noqa: RUF001, RUF002  (Cyrillic and typographic quotes are the point of these tests)

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ftpipe.errors import InputError
from ftpipe.prepare import csv_reader
from ftpipe.prepare.csv_reader import (
    HEAD_BYTES,
    CsvBatch,
    CsvDialect,
    read_csv_batches,
    read_csv_text,
    read_text_lines,
)
from ftpipe.prepare.encoding import check_encoding
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import PrepareResult, prepare
from ftpipe.prepare.rejects import ROW_TOO_LONG

FRENCH = "prompt,completion\nBonjour,Je vais à Paris demain\nMerci,De rien\n"
RUSSIAN = 'Вопрос;Ответ\nКак дела?;Хорошо, спасибо\n"Что это?";Это тест\n'
BLOCK = 1024  # a small block makes "a row longer than the block" a small file


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(path: Path, **options: Any) -> tuple[list[CsvBatch], dict[str, list[str]], list[int]]:
    """Every batch, plus the concatenated cells and line numbers."""
    batches = list(read_csv_batches(path, **options))
    table = pa.concat_tables(batch.table for batch in batches)
    lines = np.concatenate([batch.lines for batch in batches]).tolist()
    return batches, table.to_pydict(), lines


def read_error(path: Path, **options: Any) -> str:
    """The one-line InputError reading raises, which must name the file."""
    with pytest.raises(InputError) as caught:
        list(read_csv_batches(path, **options))
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message


def rejects_of(batches: list[CsvBatch]) -> list[tuple[int, str]]:
    return [(reject.line, reject.rule) for batch in batches for reject in batch.rejects]


def numbered_rows(count: int, start: int = 0) -> bytes:
    return b"".join(b"q%d,a%d\n" % (i, i) for i in range(start, start + count))


# --- kind 1: encodings ----------------------------------------------------------------------


def test_french_latin1_with_only_a_grave_is_refused_not_read_as_cyrillic(tmp_path: Path) -> None:
    """The issue's file: "à" alone read as cp1251 became Cyrillic "а" with exit 0."""
    path = write(tmp_path, "fr.csv", FRENCH.encode("latin-1"))
    message = read_error(path)
    assert "encoding is unclear" in message
    assert "byte 0xe0 on line 2" in message
    assert "plausible: cp1252" in message and "cp1251" in message
    assert "--encoding" in message


def test_the_refused_file_reads_with_the_encoding_chosen(tmp_path: Path) -> None:
    path = write(tmp_path, "fr.csv", FRENCH.encode("latin-1"))
    batches, cells, _ = read_all(path, encoding="latin-1")
    assert cells["completion"] == ["Je vais à Paris demain", "De rien"]
    assert batches[0].dialect.encoding == "iso8859-1"
    assert batches[0].dialect.note == "encoding iso8859-1 (as given) converted to UTF-8"


def test_a_one_letter_word_proves_nothing_however_often(tmp_path: Path) -> None:
    rows = "".join(f"Question {i},Réponse à {i}\n" for i in range(50)).replace("é", "e")
    path = write(tmp_path, "fr.csv", ("prompt,completion\n" + rows).encode("latin-1"))
    assert "encoding is unclear" in read_error(path)


def test_russian_with_only_one_letter_words_is_not_guessed_either(tmp_path: Path) -> None:
    path = write(tmp_path, "ru.csv", "q,a\nTom и Jerry,cats в bags\n".encode("cp1251"))
    assert "encoding is unclear" in read_error(path)


def test_a_sign_that_reads_two_ways_is_not_guessed(tmp_path: Path) -> None:
    path = write(tmp_path, "no.csv", "q,a\nItem № 5,ok\nItem № 6,ok\n".encode("cp1251"))
    assert "(byte 0xb9 on line 2 is '¹' in cp1252, '№' in cp1251)" in read_error(path)


@pytest.mark.parametrize(
    "text",
    [
        "q,a\n“Smart” quotes,It’s fine – really…\nok,fine\n",
        "q,a\n“Café” crème,Très bien à bientôt…\n",
        "frage,antwort\nWie groß ist das?,Ungefähr fünf Meter\nÜbermorgen?,Ja\n",
        "pregunta,respuesta\n¿Dónde está?,¡Allí en España!\n",
        "a,b\nnaïve résumé,déjà vu\nSão Paulo,Brasília\n",
    ],
)
def test_cp1252_text_is_read_as_cp1252(tmp_path: Path, text: str) -> None:
    batches, cells, _ = read_all(write(tmp_path, "w.csv", text.encode("cp1252")))
    assert batches[0].dialect == CsvDialect("cp1252", ",")
    assert batches[0].dialect.note == "encoding cp1252 detected and converted to UTF-8"
    _header, *rows = text.splitlines()
    assert list(zip(*cells.values(), strict=True)) == [tuple(next(csv.reader([r]))) for r in rows]


@pytest.mark.parametrize(
    "text",
    [
        RUSSIAN,
        "q;a\nПривет;мир\n",
        "q;a\nЯк справи?;Дякую, добре\nїжак;ґанок\n",
        "q,a\nHello there,how are you\nСпасибо,хорошо\n",
    ],
)
def test_genuine_cp1251_is_still_detected(tmp_path: Path, text: str) -> None:
    batches, cells, _ = read_all(write(tmp_path, "ru.csv", text.encode("cp1251")))
    assert batches[0].dialect.encoding == "cp1251"
    _header, *rows = text.splitlines()
    delimiter = batches[0].dialect.delimiter
    expected = [tuple(next(csv.reader([r], delimiter=delimiter))) for r in rows]
    assert list(zip(*cells.values(), strict=True)) == expected


def test_a_dos_cyrillic_file_is_not_read_as_cp1251(tmp_path: Path) -> None:
    """cp866 bytes are Cyrillic letters in cp1251 too, but charset-normalizer finds it a mess."""
    message = read_error(write(tmp_path, "dos.csv", RUSSIAN.encode("cp866")))
    assert "encoding is unclear" in message and "--encoding" in message


def test_utf8_and_latin1_lines_in_one_file_are_refused(tmp_path: Path) -> None:
    data = "q,a\nCafé crème,très bon\n".encode() + "Où est la gare?,Là-bas\n".encode("latin-1")
    message = read_error(write(tmp_path, "mixed.csv", data))
    assert "mixes UTF-8 (line 2) with another encoding (line 3)" in message


def test_a_latin1_line_after_the_head_of_a_utf8_file_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    rows = HEAD_BYTES // 10 + 100
    data = b"q,a\n" + "café,bon\n".encode() * rows + "où,là\n".encode("latin-1")
    message = read_error(write(tmp_path, "late.csv", data))
    assert f"is not valid UTF-8 text at or after line {rows + 2}" in message


def test_utf16_with_a_bom_is_refused_unless_chosen(tmp_path: Path) -> None:
    path = write(tmp_path, "u16.csv", RUSSIAN.encode("utf-16"))
    assert read_error(path).endswith("is UTF-16 text; save it as UTF-8 CSV")
    batches, cells, lines = read_all(path, encoding="utf-16", block_bytes=16)
    assert batches[0].columns == ["Вопрос", "Ответ"]
    assert cells["Ответ"] == ["Хорошо, спасибо", "Это тест"]
    assert lines == [2, 3]


def test_utf16_without_a_bom_gets_a_hint_not_binary(tmp_path: Path) -> None:
    message = read_error(write(tmp_path, "u16.csv", "q,a\nhello,world\n".encode("utf-16-le")))
    assert "UTF-16 text without a byte-order mark" in message
    assert "--encoding utf-16-le" in message


@pytest.mark.parametrize("name", ["no-such-codec", "rot13", "base64"])
def test_an_unknown_encoding_names_the_setting(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, "ok.csv", b"q,a\nx,y\n")
    with pytest.raises(InputError, match=rf"^encoding: '{name}' is not a text encoding"):
        list(read_csv_batches(path, encoding=name))


def test_encoding_names_are_made_canonical() -> None:
    """Options can store the canonical name, so "latin-1" and "ISO-8859-1" give one dataset id."""
    assert check_encoding(None) is None
    assert check_encoding("latin-1") == check_encoding("ISO-8859-1") == "iso8859-1"
    assert check_encoding("windows-1251") == "cp1251"
    assert check_encoding("UTF8") == "utf-8"


def test_a_chosen_encoding_overrides_detection(tmp_path: Path) -> None:
    path = write(tmp_path, "ru.csv", RUSSIAN.encode("cp1251"))
    batches, cells, _ = read_all(path, encoding="windows-1251")
    assert batches[0].dialect == CsvDialect("cp1251", ";")
    assert batches[0].dialect.given
    bom = write(tmp_path, "bom.csv", b"\xef\xbb\xbfq,a\nx,y\n")
    batches, cells, _ = read_all(bom, encoding="UTF8")
    assert batches[0].dialect.encoding == "utf-8-sig"
    assert cells == {"q": ["x"], "a": ["y"]}


def test_a_chosen_encoding_that_does_not_fit_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "fr.csv", FRENCH.encode("latin-1"))
    message = read_error(path, encoding="utf-8")
    assert "is not utf-8 text, the encoding given (undecodable byte 0xe0 on line 2)" in message


def test_a_bom_before_bytes_that_are_not_utf8_is_refused(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + FRENCH.encode("latin-1")
    message = read_error(write(tmp_path, "bom.csv", data))
    assert "starts with a UTF-8 byte-order mark but is not UTF-8" in message
    assert "on line 2" in message


def test_prepare_refuses_the_french_file_and_publishes_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "fr.csv", FRENCH.encode("latin-1"))
    with pytest.raises(InputError, match="encoding is unclear"):
        prepare([path], PrepareOptions(), out_root=tmp_path / "out")
    assert not list((tmp_path / "out").glob("*/train.jsonl"))


# --- kind 1: NUL bytes ------------------------------------------------------------------------


def test_a_nul_after_the_first_megabyte_refuses_the_file_with_its_line(tmp_path: Path) -> None:
    rows = HEAD_BYTES // 4 + 100
    data = b"q,a\n" + b"x,y\n" * rows + b"bad,a\x00b\n" + b"x,y\n" * 3
    message = read_error(write(tmp_path, "nul.csv", data))
    assert message.endswith(
        f"has a NUL byte on line {rows + 2}, which text never holds "
        "(a damaged export?); remove it and rerun"
    )


def test_a_nul_inside_a_multiline_cell_names_its_own_line(tmp_path: Path) -> None:
    rows = HEAD_BYTES // 4 + 100
    data = b"q,a\n" + b"x,y\n" * rows + b'"one\ntwo","three\nfo\x00ur"\n'
    message = read_error(write(tmp_path, "nul.csv", data))
    assert f"has a NUL byte on line {rows + 4}," in message


def test_a_nul_in_the_header_refuses_the_file_with_line_1(tmp_path: Path) -> None:
    message = read_error(write(tmp_path, "nul.csv", b"prompt,comp\x00letion\nq,a\n"))
    assert "has a NUL byte on line 1," in message


def test_a_nul_in_pasted_text_is_refused() -> None:
    with pytest.raises(InputError, match=r"^<csv text>: has a NUL byte on line 3,"):
        list(read_csv_text("q,a\nx,y\nz,\x00\n"))
    with pytest.raises(InputError, match=r"^<csv text>: has a NUL byte on line 2,"):
        list(read_text_lines("one\ntw\x00o\n"))


def test_prepare_never_writes_a_nul_to_the_output(tmp_path: Path) -> None:
    rows = HEAD_BYTES // 500 + 10
    body = "".join(
        f"When does boat {i} leave?,At {i % 24:02d}:15. {'Then on. ' * 50}\n" for i in range(rows)
    )
    data = ("question,answer\n" + body).encode() + b"Bad?,Yes\x00\n"
    with pytest.raises(InputError, match=f"has a NUL byte on line {rows + 2},"):
        prepare([write(tmp_path, "n.csv", data)], PrepareOptions(), out_root=tmp_path / "out")
    assert not list((tmp_path / "out").glob("*/train.jsonl"))


# --- kind 7: one cell too long for the reader ---------------------------------------------------


def test_a_50_mb_cell_costs_its_row_only(tmp_path: Path) -> None:
    data = b"q,a\n" + numbered_rows(1000) + b'big,"' + b"x" * (50 << 20) + b'"\n'
    data += numbered_rows(1000, 1000)
    batches, cells, lines = read_all(write(tmp_path, "big.csv", data))
    assert rejects_of(batches) == [(1002, ROW_TOO_LONG)]
    [reject] = [reject for batch in batches for reject in batch.rejects]
    assert reject.value.startswith("52,428,807 bytes on line 1002, over the 4,194,304-byte")
    assert cells["q"] == [f"q{i}" for i in range(2000)]
    assert lines == [*range(2, 1002), *range(1003, 2003)]


def test_a_long_row_in_a_quoted_multiline_cell_keeps_later_lines_true(tmp_path: Path) -> None:
    cell = b"line of text\n" * 400  # 5,200 bytes over 400 lines
    data = b"q,a\n" + numbered_rows(100) + b'big,"' + cell + b'"\n' + numbered_rows(5, 100)
    batches, cells, lines = read_all(write(tmp_path, "ml.csv", data), block_bytes=BLOCK)
    assert rejects_of(batches) == [(102, ROW_TOO_LONG)]
    [reject] = [reject for batch in batches for reject in batch.rejects]
    assert " on lines 102-502, " in reject.value
    assert lines[-5:] == [503, 504, 505, 506, 507]
    assert cells["q"][-1] == "q104"


def test_a_ragged_row_after_a_long_one_is_reported_on_its_true_line(tmp_path: Path) -> None:
    cell = b"text\n" * 1000
    data = b"q,a\n" + numbered_rows(10) + b'big,"' + cell + b'"\n' + numbered_rows(3) + b"1,2,3\n"
    message = read_error(write(tmp_path, "r.csv", data), block_bytes=BLOCK)
    assert message.endswith(
        "line 1016 has 3 fields, expected 2 ('1,2,3'); quote cells that contain the delimiter"
    )


def test_a_long_last_row(tmp_path: Path) -> None:
    data = b"q,a\n" + numbered_rows(300) + b"big," + b"y" * 5000  # no final line break
    batches, cells, lines = read_all(write(tmp_path, "last.csv", data), block_bytes=BLOCK)
    assert rejects_of(batches) == [(302, ROW_TOO_LONG)]
    assert len(cells["q"]) == 300 and lines[-1] == 301


def test_a_long_first_row(tmp_path: Path) -> None:
    data = b"q,a\n" + b"big," + b"y" * 5000 + b"\n" + numbered_rows(300)
    batches, _, lines = read_all(write(tmp_path, "first.csv", data), block_bytes=BLOCK)
    assert rejects_of(batches) == [(2, ROW_TOO_LONG)]
    assert lines[:2] == [3, 4] and len(lines) == 300


def test_long_rows_back_to_back_and_later(tmp_path: Path) -> None:
    long_row = b'big,"' + b"z" * 3000 + b'"\n'
    data = b"q,a\n" + numbered_rows(50) + long_row * 2 + numbered_rows(300, 50) + long_row
    data += numbered_rows(2, 350)
    batches, cells, lines = read_all(write(tmp_path, "many.csv", data), block_bytes=BLOCK)
    assert rejects_of(batches) == [(52, ROW_TOO_LONG), (53, ROW_TOO_LONG), (354, ROW_TOO_LONG)]
    assert cells["q"] == [f"q{i}" for i in range(352)]
    assert lines == [*range(2, 52), *range(54, 354), 355, 356]


def test_a_long_row_in_a_cp1251_file(tmp_path: Path) -> None:
    rows = "привет;мир\n" * 200
    long_cell = "Очень длинный ответ на вопрос. " * 100
    text = "Вопрос;Ответ\n" + rows + f"длинный;{long_cell}\n" + "пока;мир\n" * 3
    batches, cells, lines = read_all(
        write(tmp_path, "ru.csv", text.encode("cp1251")), block_bytes=BLOCK
    )
    assert batches[0].dialect.encoding == "cp1251"
    assert rejects_of(batches) == [(202, ROW_TOO_LONG)]
    [reject] = [reject for batch in batches for reject in batch.rejects]
    assert "длинный;Очень длинный ответ" in reject.value
    assert cells["Вопрос"][-1] == "пока" and lines[-1] == 205


@pytest.mark.parametrize("before", [0, 7, 40, 200])
def test_a_row_just_over_the_block_is_rejected_wherever_it_falls(
    tmp_path: Path, before: int
) -> None:
    """pyarrow reads some rows up to two blocks long; the limit must not depend on where."""
    data = b"q,a\n" + numbered_rows(before) + b"big," + b"w" * 1500 + b"\n" + numbered_rows(5)
    batches, _, _ = read_all(write(tmp_path, "edge.csv", data), block_bytes=BLOCK)
    assert rejects_of(batches) == [(before + 2, ROW_TOO_LONG)]


def test_a_quote_never_closed_is_not_called_a_long_row(tmp_path: Path) -> None:
    data = b"q,a\n" + numbered_rows(100) + b'oops,"never closed\n' + numbered_rows(1000)
    message = read_error(write(tmp_path, "q.csv", data), block_bytes=BLOCK)
    assert message.endswith(
        "has a quote that is never closed: the cell opened on line 102 runs to the end of the file"
    )


def test_only_long_rows_is_not_an_empty_file(tmp_path: Path) -> None:
    data = b"q,a\n" + b"big," + b"y" * 5000 + b"\n"
    batches = list(read_csv_batches(write(tmp_path, "only.csv", data), block_bytes=BLOCK))
    assert rejects_of(batches) == [(2, ROW_TOO_LONG)]
    assert sum(batch.table.num_rows for batch in batches) == 0


def test_the_scan_for_a_long_row_holds_a_chunk_not_the_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunk = 64 * 1024
    monkeypatch.setattr(csv_reader, "_SCAN_BYTES_PER_READ", chunk)
    held: list[int] = [0]
    fill = csv_reader._Cursor.fill

    def tracked(cursor: csv_reader._Cursor) -> bool:
        more = fill(cursor)
        held[0] = max(held[0], len(cursor.buf))
        return more

    monkeypatch.setattr(csv_reader._Cursor, "fill", tracked)
    escaped = 200_000  # a 1 MB cell of escaped quotes and line breaks
    data = b"q,a\n" + numbered_rows(10) + b'big,"' + b'x""y\n' * escaped + b'"\n' + b"q,a\n"
    batches, _, lines = read_all(write(tmp_path, "big.csv", data), block_bytes=256 * 1024)
    assert rejects_of(batches) == [(12, ROW_TOO_LONG)]
    assert lines[-1] == 13 + escaped
    assert held[0] <= 2 * chunk


def report_rows(result: PrepareResult) -> list[dict[str, str]]:
    with (result.out_dir / "rejects.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_prepare_rejects_the_50_mb_row_and_the_counts_add_up(tmp_path: Path) -> None:
    good = "".join(f"When does boat {i} leave?,At {i % 24:02d}:15.\n" for i in range(40))
    data = ("question,answer\n" + good).encode() + b'Huge?,"' + b"x " * (25 << 20) + b'"\n'
    data += ("When does boat 0 leave?,At 00:15.\n" + good.replace("boat", "ship")).encode()
    result = prepare(
        [write(tmp_path, "big.csv", data)], PrepareOptions(), out_root=tmp_path / "out"
    )
    rejects = report_rows(result)
    assert [(r["line"], r["column"], r["rule"]) for r in rejects if r["rule"] != "duplicate"] == [
        ("42", "*", ROW_TOO_LONG)
    ]
    counts = result.report["counts"]
    assert counts["input_rows"] == 82
    rejected = {(r["source"], r["line"]) for r in rejects if r["rule"] != "duplicate"}
    assert len(rejected) == counts["rejected"] == 1
    assert counts["duplicates_dropped"] == 1
    assert (
        len(rejected) + counts["duplicates_dropped"] + counts["train"] + counts["validation"]
        == (counts["input_rows"])
    )
    [rule] = [r for r in result.report["rules"] if r["rule"] == ROW_TOO_LONG]
    assert (rule["check"], rule["failed_rows"], rule["checked_rows"]) == ("read", 1, 82)
    output = result.train_path.read_text(encoding="utf-8")
    assert "Huge?" not in output and len(output) < 100_000


CELLS = ["a", "", "plain words", '"q,uo""te"', 'x"y', '"multi\nline"', '"cr\r\nlf"', '"ab"cd', '""']


def random_csv(seed: int, rows: int) -> bytes:
    """Rows of three cells mixing every quoting case pyarrow knows, with \\n or \\r\\n ends."""
    rng = np.random.default_rng(seed)
    out = ["h1,h2,h3\n"]
    for _ in range(rows):
        cells = [CELLS[i] for i in rng.integers(0, len(CELLS), 3)]
        if cells[0] in ("", '""'):
            cells[0] = "first"  # rows without content are dropped by the reader
        out.append(",".join(cells) + ("\r\n" if rng.random() < 0.3 else "\n"))
    return "".join(out).encode()


@pytest.mark.parametrize("seed", range(5))
def test_the_scan_splits_rows_where_pyarrow_does(seed: int) -> None:
    data = random_csv(seed, 400)
    batches = list(read_csv_text(data.decode()))
    pyarrow_lines = np.concatenate([batch.lines for batch in batches]).tolist()
    stream = csv_reader._Utf8Stream(io.BytesIO(data), "utf-8", len(b"h1,h2,h3\n"))
    scanner = csv_reader._RecordScanner(csv_reader._Cursor(stream, 9), ",")
    line, scanned = 2, []
    while (record := scanner.next()) is not None:
        assert record.closed
        scanned.append(line)
        line += record.span
    assert scanned == pyarrow_lines
    assert record is None and scanner.cursor.offset == len(data)

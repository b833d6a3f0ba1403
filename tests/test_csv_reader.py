"""The streaming CSV reader on real files: dialects, text-only cells, true line numbers, errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ftpipe.errors import InputError
from ftpipe.prepare import csv_reader
from ftpipe.prepare.csv_reader import (
    HEAD_BYTES,
    CsvBatch,
    CsvDialect,
    find_csv_files,
    read_csv_batches,
    read_csv_text,
    sniff,
)


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    """A real file on disk, text written as UTF-8 unless given as bytes."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read_all(path: Path, **options: int) -> tuple[list[CsvBatch], dict[str, list[str]], list[int]]:
    """Every batch, plus the concatenated cells and line numbers."""
    batches = list(read_csv_batches(path, **options))
    table = pa.concat_tables(batch.table for batch in batches)
    lines = np.concatenate([batch.lines for batch in batches]).tolist()
    return batches, table.to_pydict(), lines


def read_error(path: Path, **options: int) -> str:
    """The message of the InputError that reading raises; it must name the file on one line."""
    with pytest.raises(InputError) as caught:
        list(read_csv_batches(path, **options))
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    return message


# --- dialects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "delimiter", "data"),
    [
        ("comma.csv", ",", "prompt,completion\nHi,Hello; welcome\nBye,See you\n"),
        ("semicolon.csv", ";", "prompt;completion\nHi, there;Hello, welcome\nBye;See you\n"),
        ("tab.tsv", "\t", "prompt\tcompletion\nHi, there;\tHello\nBye\tSee you\n"),
        ("tab_in_csv_name.csv", "\t", "prompt\tcompletion\nHi\tHello\nBye\tSee you\n"),
    ],
)
def test_delimiters_are_detected(tmp_path: Path, name: str, delimiter: str, data: str) -> None:
    batches, cells, lines = read_all(write(tmp_path, name, data))
    assert batches[0].dialect == CsvDialect("utf-8", delimiter)
    assert batches[0].dialect.note is None
    assert batches[0].columns == ["prompt", "completion"]
    assert cells["prompt"][1] == "Bye"
    assert lines == [2, 3]


def test_tsv_defaults_to_tab_for_a_single_column(tmp_path: Path) -> None:
    _, cells, _ = read_all(write(tmp_path, "one.tsv", "text\nhello, world; again\n"))
    assert cells == {"text": ["hello, world; again"]}


def test_single_column_csv_keeps_commas_in_quoted_text(tmp_path: Path) -> None:
    batches, cells, _ = read_all(write(tmp_path, "one.csv", 'text\n"hello, world"\nbye\n'))
    assert batches[0].dialect.delimiter == ","
    assert cells == {"text": ["hello, world", "bye"]}


def test_bom_is_removed_from_the_header(tmp_path: Path) -> None:
    batches, cells, _ = read_all(write(tmp_path, "bom.csv", "\ufeffquestion,answer\nq,a\n"))
    assert batches[0].dialect.encoding == "utf-8-sig"
    assert batches[0].dialect.note is not None and "byte-order mark" in batches[0].dialect.note
    assert batches[0].columns == ["question", "answer"]
    assert cells == {"question": ["q"], "answer": ["a"]}


def test_cp1251_is_detected_and_converted(tmp_path: Path) -> None:
    text = 'Вопрос;Ответ\nКак дела?;Хорошо, спасибо\n"Что это?";Это тест\n'  # noqa: RUF001
    batches, cells, lines = read_all(write(tmp_path, "ru.csv", text.encode("cp1251")))
    dialect = batches[0].dialect
    assert dialect == CsvDialect("cp1251", ";")
    assert dialect.note is not None and "cp1251" in dialect.note
    assert batches[0].columns == ["Вопрос", "Ответ"]
    assert cells == {"Вопрос": ["Как дела?", "Что это?"], "Ответ": ["Хорошо, спасибо", "Это тест"]}
    assert lines == [2, 3]


def test_header_names_are_trimmed_and_keep_their_case(tmp_path: Path) -> None:
    batches, _, _ = read_all(write(tmp_path, "h.csv", " Prompt ,\tCompletion \nq,a\n"))
    assert batches[0].columns == ["Prompt", "Completion"]
    assert batches[0].table.column_names == ["Prompt", "Completion"]


def test_sniff_forgives_a_character_cut_by_the_end_of_the_head() -> None:
    head = "вопрос,ответ\nпривет,мир".encode()[:-1]  # noqa: RUF001
    assert sniff(head, "cut.csv") == CsvDialect("utf-8", ",")


def test_head_boundary_inside_a_character_is_still_utf8(tmp_path: Path) -> None:
    row = "1x," + "я" * 500 + "\n"  # rows of even length keep every "я" at an odd offset
    data = ("a,b\n" + row * (HEAD_BYTES // len(row.encode()) + 10)).encode()
    assert data[:HEAD_BYTES].decode("utf-8", errors="ignore") != data[:HEAD_BYTES].decode(
        "utf-8", errors="replace"
    )  # the head really ends mid-character
    batches, cells, _ = read_all(write(tmp_path, "cut.csv", data))
    assert batches[0].dialect.encoding == "utf-8"
    assert cells["b"][-1] == "я" * 500


def test_latin1_accents_are_not_mistaken_for_cp1251(tmp_path: Path) -> None:
    data = "name,city\nJosé,Köln\nFrançois,Besançon\n".encode("latin-1")
    batches, cells, _ = read_all(write(tmp_path, "latin1.csv", data))
    assert batches[0].dialect == CsvDialect("cp1252", ",")  # latin-1 letters read the same
    assert cells == {"name": ["José", "François"], "city": ["Köln", "Besançon"]}


# --- cells ----------------------------------------------------------------------------------


def test_every_cell_stays_text_exactly_as_written(tmp_path: Path) -> None:
    data = "id,score,flag,when\n007,1e5,true,2024-01-02\n,NaN,null,\n12,3.50,FALSE,-\n"
    batches, cells, _ = read_all(write(tmp_path, "numbers.csv", data))
    assert all(field.type in (pa.string(), pa.large_string()) for field in batches[0].table.schema)
    assert cells == {
        "id": ["007", "", "12"],
        "score": ["1e5", "NaN", "3.50"],
        "flag": ["true", "null", "FALSE"],
        "when": ["2024-01-02", "", "-"],
    }
    assert batches[0].table.column("id").null_count == 0


def test_quoted_cells_keep_delimiters_quotes_and_newlines(tmp_path: Path) -> None:
    data = (
        "prompt,completion\n"
        "plain,row\n"
        '"a, b","say ""hi"""\n'
        '"two\nlines","three\r\nline\ncell"\n'
        "after,multi\n"
    )
    _, cells, lines = read_all(write(tmp_path, "quoted.csv", data))
    assert cells == {
        "prompt": ["plain", "a, b", "two\nlines", "after"],
        "completion": ["row", 'say "hi"', "three\r\nline\ncell", "multi"],
    }
    assert lines == [2, 3, 4, 8]  # the third row spans lines 4-7


def multiline_rows(count: int) -> tuple[str, list[int]]:
    """A CSV whose rows span 1 to 4 lines, with each row's expected starting line."""
    text, expected, line = "id,text\n", [], 2
    for index in range(count):
        cell = "\n".join(f"part {part}" for part in range(index % 4 + 1))
        text += f'{index},"{cell}"\n'
        expected.append(line)
        line += index % 4 + 1
    return text, expected


def test_line_numbers_survive_multiline_cells_across_batches(tmp_path: Path) -> None:
    text, expected = multiline_rows(300)
    path = write(tmp_path, "multi.csv", text)
    batches, cells, lines = read_all(path, block_bytes=256)
    assert len(batches) > 10
    assert lines == expected
    assert cells["id"] == [str(index) for index in range(300)]
    assert all(batch.lines.dtype == np.int64 for batch in batches)
    assert all(len(batch.lines) == batch.table.num_rows for batch in batches)


def test_many_small_batches_equal_one_big_batch(tmp_path: Path) -> None:
    text, _ = multiline_rows(200)
    path = write(tmp_path, "same.csv", text + 'x,"tail, with ""quotes"""\n')
    small, small_cells, small_lines = read_all(path, block_bytes=200)
    whole, whole_cells, whole_lines = read_all(path)
    assert len(whole) == 1 and len(small) > 10
    assert small_cells == whole_cells
    assert small_lines == whole_lines
    assert {batch.source for batch in small} == {str(path)}


def test_blank_lines_and_empty_rows_are_dropped_but_counted(tmp_path: Path) -> None:
    data = '\n  \nq,a\r\n1,2\r\n\r\n,\r\n  \r\n3,"x\r\ny"\r\n\r\n'
    _, cells, lines = read_all(write(tmp_path, "blank.csv", data))
    assert cells == {"q": ["1", "3"], "a": ["2", "x\r\ny"]}
    assert lines == [4, 8]


def test_reading_stays_a_few_blocks_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory stays flat: pyarrow would otherwise prefetch dozens of blocks."""
    furthest: list[int] = [0]

    class Tracked(io.BytesIO):
        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            count = super().readinto(buffer)
            furthest[0] = max(furthest[0], self.tell())
            return count

    monkeypatch.setattr(csv_reader.io, "BytesIO", Tracked)
    block = 4096
    batches = read_csv_text("a,b\n" + "some text,more text\n" * 50_000, block_bytes=block)
    next(batches)
    assert furthest[0] <= 8 * block
    batches.close()


def test_csv_text_reads_like_a_file() -> None:
    batches = list(read_csv_text('prompt;completion\nq1;a1\n"q\n2";a2\n', block_bytes=16))
    assert batches[0].source == "<csv text>"
    assert batches[0].dialect == CsvDialect("utf-8", ";")
    table = pa.concat_tables(batch.table for batch in batches)
    assert table.to_pydict() == {"prompt": ["q1", "q\n2"], "completion": ["a1", "a2"]}
    assert np.concatenate([batch.lines for batch in batches]).tolist() == [2, 3]


def test_csv_text_errors_carry_its_name() -> None:
    with pytest.raises(InputError, match=r"^<csv text>: is empty$"):
        list(read_csv_text("  \n"))
    with pytest.raises(InputError, match=r"^pasted\.csv: line 3 has 3 fields, expected 2"):
        list(read_csv_text("a,b\n1,2\n1,2,3\n", name="pasted.csv"))


# --- finding files --------------------------------------------------------------------------


def test_find_csv_files_recurses_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for name in (
        "b.csv",
        "a.TSV",
        "sub/deep/c.Csv",
        "sub/d.tsv",
        "notes.txt",
        "data.csv.bak",
        ".hidden/e.csv",
        "sub/.cache/f.csv",
        ".g.csv",
    ):
        write(tmp_path, name, "a,b\n1,2\n")
    found = find_csv_files(tmp_path)
    assert found == [
        tmp_path / "a.TSV",
        tmp_path / "b.csv",
        tmp_path / "sub" / "d.tsv",
        tmp_path / "sub" / "deep" / "c.Csv",
    ]


def test_find_csv_files_needs_a_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a directory"):
        find_csv_files(tmp_path / "missing")


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "is empty"),
        (b" \r\n\t\n  ", "is empty"),
        (b"\xef\xbb\xbf\n", "is empty"),
        (b"PK\x03\x04\x00\x00binary", "is a binary file, not CSV text (it contains NUL bytes)"),
        ("a,b\n1,2\n".encode("utf-16"), "is UTF-16 text; save it as UTF-8 CSV"),
        (b"prompt,completion\n", "has a header but no data rows"),
        (b"prompt,completion", "has a header but no data rows"),
        (b"prompt,completion\n\n,\n  \n", "has a header but no data rows"),
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, data: bytes, problem: str) -> None:
    assert read_error(write(tmp_path, "bad.csv", data)).endswith(f": {problem}")


def test_empty_header_names_are_named(tmp_path: Path) -> None:
    message = read_error(write(tmp_path, "h.csv", "prompt,,completion, \n1,2,3,4\n"))
    assert "header has an empty column name (columns 2, 4)" in message
    message = read_error(write(tmp_path, "trailing.csv", "prompt,completion,\n1,2,\n"))
    assert "(column 3); a delimiter at the end of the lines?" in message


@pytest.mark.parametrize("header", ["text,label,text", "Text,label,text ", "text,label,TEXT"])
def test_duplicate_header_names_are_named(tmp_path: Path, header: str) -> None:
    message = read_error(write(tmp_path, "dup.csv", f"{header}\n1,2,3\n"))
    assert "header repeats the column name" in message
    assert "(columns 1 and 3)" in message


def test_ragged_row_is_reported_with_its_physical_line(tmp_path: Path) -> None:
    data = 'prompt,completion\nq1,a1\n"q\n2","a\n\n2"\n\nq3,a3\nhello, world,oops\nq5,a5\n'
    message = read_error(write(tmp_path, "ragged.csv", data))
    assert "line 9 has 3 fields, expected 2 ('hello, world,oops')" in message
    assert "quote cells that contain the delimiter" in message


def test_short_row_at_the_end_is_reported(tmp_path: Path) -> None:
    message = read_error(write(tmp_path, "short.csv", "a,b,c\n1,2,3\n4,5\n"))
    assert message.endswith("line 3 has 2 fields, expected 3 ('4,5')")


def test_ragged_row_after_many_batches_has_its_line(tmp_path: Path) -> None:
    text, expected = multiline_rows(150)
    last_line = expected[-1] + 149 % 4 + 1
    message = read_error(write(tmp_path, "late.csv", text + "1,2,3\n"), block_bytes=128)
    assert f"line {last_line} has 3 fields, expected 2" in message


def test_unclosed_quote_is_reported(tmp_path: Path) -> None:
    data = 'a,b\n1,2\n"oops,3\n' + "4,5\n" * 50
    message = read_error(write(tmp_path, "quote.csv", data), block_bytes=64)
    assert "quote" in message and "line 3" in message


def test_bad_utf8_after_the_head_is_reported_with_its_line(tmp_path: Path) -> None:
    rows = HEAD_BYTES // 4 + 100
    data = b"a,b\n" + b"1,2\n" * rows + b"\xff\xfe,3\n"
    message = read_error(write(tmp_path, "late.csv", data))
    assert f"is not valid UTF-8 text at or after line {rows + 2}" in message


def test_undefined_cp1251_byte_after_the_head_is_reported(tmp_path: Path) -> None:
    head = "вопрос;ответ\n".encode("cp1251")
    body = "привет;мир\n".encode("cp1251") * (HEAD_BYTES // 11 + 100)
    data = head + body + b"\x98;3\n"
    message = read_error(write(tmp_path, "late1251.csv", data))
    assert "is not valid cp1251 text" in message
    assert f"(undecodable byte 0x98 at offset {len(head) + len(body)})" in message


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    assert "cannot be opened" in read_error(tmp_path / "nope.csv")


def test_stopping_early_releases_the_reader(tmp_path: Path) -> None:
    path = write(tmp_path, "long.csv", "a,b\n" + "x,y\n" * 20_000)
    batches = read_csv_batches(path, block_bytes=1024)
    first = next(batches)
    batches.close()
    assert first.table.num_rows > 0


def test_old_mac_line_ends_are_read(tmp_path: Path) -> None:
    _, cells, lines = read_all(write(tmp_path, "mac.csv", "a,b\r1,2\r3,4\r"))
    assert cells == {"a": ["1", "3"], "b": ["2", "4"]}
    assert lines == [2, 3]

"""One large CSV prepared by several processes gives the very bytes, rejects and report of one
process; the worker count never changes the dataset id; errors stop the run cleanly."""

from __future__ import annotations

import csv
import json
import multiprocessing
import random
from pathlib import Path
from typing import Any

import pytest

from ftpipe.errors import InputError
from ftpipe.prepare import csv_reader, parallel
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import PrepareResult, plan_run, prepare
from ftpipe.prepare.sources import Source

BLOCK = 16 * 1024  # small reader blocks: a few hundred KB make many batches


def use_blocks(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """The CSV reader's block size for this test: small blocks make many batches."""
    defaults = {**(csv_reader.read_csv_batches.__kwdefaults__ or {}), "block_bytes": size}
    monkeypatch.setattr(csv_reader.read_csv_batches, "__kwdefaults__", defaults)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    use_blocks(monkeypatch, BLOCK)


def big_csv(path: Path, rows: int = 3000) -> Path:
    """Quoted newlines and quotes, Cyrillic, a system column, empty answers, duplicates far
    apart (across batches) and a few rows over the token limit."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "system"])
        for i in range(rows):
            rng = random.Random(i % 1000)  # row i + 1000 repeats row i
            question = f'Вопрос {i % 1000}: "{rng.random():.5f}"\nline two, «ok»'
            answer = "" if i % 97 == 0 else f"Answer {i % 1000} — naïve {rng.randint(0, 9)}"
            system = "Be brief." if i % 4 == 0 else ""
            if i % 701 == 5:
                answer = "word " * 70_000  # over gpt-4o-mini's 65,536 tokens per example
            writer.writerow([question, answer, system])
    return path


def run(source: Path, out: Path, workers: int, **options: Any) -> PrepareResult:
    opts = PrepareOptions(model="gpt-4o-mini", max_rejects=10**6, workers=workers, **options)
    return prepare([source], opts, out_root=out)


def comparable(result: PrepareResult) -> dict[str, Any]:
    report = json.loads((result.out_dir / "report.json").read_text(encoding="utf-8"))
    for key in ("created_at", "outputs", "options"):
        report.pop(key)
    return report


def test_two_workers_write_what_one_process_writes(tmp_path: Path, small_blocks: None) -> None:
    source = big_csv(tmp_path / "big.csv")
    one = run(source, tmp_path / "one", workers=1)
    two = run(source, tmp_path / "two", workers=2)
    assert one.dataset_id == two.dataset_id
    for name in ("train.jsonl", "validation.jsonl", "rejects.csv"):
        assert (one.out_dir / name).read_bytes() == (two.out_dir / name).read_bytes(), name
    assert comparable(one) == comparable(two)
    assert two.report["counts"]["duplicates_dropped"] > 0
    assert two.report["rejects_by_rule"]["row_too_long"] > 0  # longer than a block
    assert not list((tmp_path / "two").glob(".*partial"))


def test_truncation_and_three_workers_match_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_blocks(monkeypatch, 512 * 1024)  # room for rows over the token limit
    source = big_csv(tmp_path / "big.csv", rows=2200)
    one = run(source, tmp_path / "one", workers=1, truncate=True, seed=3)
    three = run(source, tmp_path / "three", workers=3, truncate=True, seed=3)
    for name in ("train.jsonl", "validation.jsonl", "rejects.csv"):
        assert (one.out_dir / name).read_bytes() == (three.out_dir / name).read_bytes(), name
    assert one.report["counts"]["truncated"] == 4  # rows 5, 706, 1407 and 2108
    assert comparable(one) == comparable(three)


def test_a_bad_row_mid_file_fails_the_run_in_one_line(tmp_path: Path, small_blocks: None) -> None:
    source = big_csv(tmp_path / "big.csv", rows=1500)
    with source.open("ab") as handle:
        handle.write(b'"unclosed quote,answer,\n')
    with pytest.raises(InputError) as caught:
        run(source, tmp_path / "out", workers=2)
    assert str(source) in str(caught.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not multiprocessing.active_children()


def test_the_worker_count_is_not_part_of_the_dataset_id(tmp_path: Path) -> None:
    source = big_csv(tmp_path / "big.csv", rows=50)
    plain = PrepareOptions(model="gpt-4o-mini")
    assert plain.fingerprint() == PrepareOptions(model="gpt-4o-mini", workers=3).fingerprint()
    assert plain.fingerprint() == (
        "3ee2dc5725ef5e72c851c9e39ddb75b4bd475e83df3c865caa607ca4c12c173a"
    )  # the id datasets had before the option existed
    first = plan_run([source], plain, out_root=tmp_path / "a")
    second = plan_run([source], PrepareOptions(model="gpt-4o-mini", workers=2), out_root=tmp_path)
    assert first.dataset_id == second.dataset_id


def test_how_many_workers_a_source_gets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = big_csv(tmp_path / "a.csv", rows=20)
    source = Source(kind="csv", name=str(path), path=path)
    monkeypatch.setattr(parallel, "free_cores", lambda: 3)
    auto = PrepareOptions(model="gpt-4o-mini")
    monkeypatch.setattr(parallel, "MIN_BYTES", source.size)
    assert parallel.workers_for(source, auto) == 3
    monkeypatch.setattr(parallel, "free_cores", lambda: 64)
    assert parallel.workers_for(source, auto) == parallel.MAX_WORKERS
    assert parallel.workers_for(source, PrepareOptions(model="gpt-4o-mini", workers=1)) == 1
    monkeypatch.setattr(parallel, "MIN_BYTES", source.size + 1)
    assert parallel.workers_for(source, auto) == 1  # too small to be worth the start-up
    assert parallel.workers_for(source, PrepareOptions(model="gpt-4o-mini", workers=2)) == 2
    text = Source(kind="csv_text", name="<csv text>", text="question,answer\nq,a\n")
    assert parallel.workers_for(text, PrepareOptions(model="gpt-4o-mini", workers=2)) == 1


def test_a_suite_only_gx_can_run_keeps_the_file_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_blocks: None
) -> None:
    suites = tmp_path / "suites"
    suites.mkdir()
    body = {
        "name": "column_pairs",
        "expectations": [
            {
                "type": "expect_column_value_lengths_to_be_between",
                "kwargs": {"column": "assistant", "min_value": 1},
                "meta": {"rule": "assistant_empty", "description": "An answer."},
            },
            {
                "type": "expect_column_values_to_match_regex",
                "kwargs": {"column": "user", "regex": "^\u0412"},
                "meta": {"rule": "user_russian", "description": "Questions are Russian."},
            },
        ],
    }
    (suites / "column_pairs.json").write_text(json.dumps(body), encoding="utf-8")
    monkeypatch.setenv("FTPIPE_EXPECTATIONS_DIR", str(suites))
    source = big_csv(tmp_path / "big.csv", rows=400)

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("no worker may start")

    monkeypatch.setattr(parallel, "ProcessPoolExecutor", no_pool)
    result = run(source, tmp_path / "out", workers=2)
    assert result.report["counts"]["input_rows"] == 400
    assert result.report["rejects_by_rule"]["assistant_empty"] == 5

"""Part files, the content hash, dedupe and the split: faster, but the same decisions."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from ftpipe.estimate import billed_tokens_per_epoch as billed_tokens
from ftpipe.prepare.dedupe import HASH_KEY, SeenHashes, example_hashes
from ftpipe.prepare.merge import TokenCounts, write_lines
from ftpipe.prepare.parts import KeepBatch, PartWriter, read_part
from ftpipe.prepare.rejects import Reject
from ftpipe.prepare.split import MAX_VALIDATION, ValidationPicker, split_keys, validation_size

LINES = ["", "a", "é", "東京", "🙂 emoji", "x" * 5000, '{"messages": []}', "line\nbreak"]


def test_hashes_are_the_hashes_of_the_python_strings() -> None:
    """The split is seeded by these hashes: hashing Arrow bytes must give what hashing the
    str objects gave, or validation.jsonl would change."""
    old = pd.util.hash_array(np.asarray(LINES, dtype=object), hash_key=HASH_KEY)
    assert (example_hashes(pa.array(LINES)) == old).all()
    assert (example_hashes(pa.array(LINES, pa.large_string())) == old).all()
    assert (example_hashes(LINES) == old).all()


def test_first_seen_is_a_set_membership_over_batches() -> None:
    rng = random.Random(3)
    seen, reference = SeenHashes(), set()
    for _ in range(60):
        batch = np.array([rng.randrange(5000) for _ in range(rng.randrange(1, 300))], np.uint64)
        expected = []
        for value in batch.tolist():
            expected.append(value not in reference)
            reference.add(value)
        assert seen.first_seen(batch).tolist() == expected
    assert len(seen) == len(reference)


def test_a_part_replays_kept_batches_and_rejects_in_the_order_written(tmp_path: Path) -> None:
    path = tmp_path / "000000.part"
    first = KeepBatch(
        pa.array(["a", "b"]), np.array([5, 6]), np.array([2, 3]), np.array([1, 2], np.uint64)
    )
    second = KeepBatch(pa.array(["c"]), np.array([7]), np.array([9]), np.array([3], np.uint64))
    with PartWriter(path) as writer:
        writer.rejects([Reject("s", 1, "user", "user_empty", "")])
        writer.keep(first)
        writer.keep(second)
        writer.rejects([Reject("s", 8, "*", "too_many_tokens", "x" * 500)])
        writer.keep(
            KeepBatch(
                pa.array([], pa.string()),
                np.array([], np.int64),
                np.array([], np.int64),
                np.array([], np.uint64),
            )
        )
    records = list(read_part(path))
    assert [type(record).__name__ for record in records] == [
        "list",
        "KeepBatch",
        "KeepBatch",
        "list",
    ]
    assert records[0] == [Reject("s", 1, "user", "user_empty", "")]
    assert records[1].lines.to_pylist() == ["a", "b"] and records[1].counts.tolist() == [5, 6]
    assert records[2].line_numbers.tolist() == [9] and records[2].hashes.tolist() == [3]
    assert len(records[3][0].value) == 200  # cut to an excerpt when written


def reference_split(lines: list[str], chunk: int, share: float) -> tuple[list[str], list[str]]:
    """The picker as it was, on lists of str: train in the order it streamed, validation."""
    keys_all = split_keys(example_hashes(lines), 42)
    train: list[str] = []
    keys, order, held = np.empty(0, np.uint64), np.empty(0, np.int64), []
    for start in range(0, len(lines), chunk):
        batch = lines[start : start + chunk]
        keys = np.concatenate([keys, keys_all[start : start + len(batch)]])
        order = np.concatenate([order, np.arange(start, start + len(batch))])
        pool = held + batch
        keep = (
            np.argpartition(keys, MAX_VALIDATION)[:MAX_VALIDATION]
            if len(keys) > MAX_VALIDATION
            else np.arange(len(keys))
        )
        dropped = np.setdiff1d(np.arange(len(pool)), keep)
        train += [pool[i] for i in dropped[np.argsort(order[dropped])]]
        keys, order, held = keys[keep], order[keep], [pool[i] for i in keep]
    ranked = np.argsort(keys, kind="stable")
    size = validation_size(len(lines), share)
    rest, chosen = ranked[size:], ranked[:size]
    train += [held[i] for i in rest[np.argsort(order[rest])]]
    return train, [held[i] for i in chosen[np.argsort(order[chosen])]]


def test_the_picker_splits_exactly_as_before() -> None:
    rng = random.Random(11)
    lines = [f"line {i} {rng.random()}" for i in range(12_000)]
    train: list[str] = []
    picker = ValidationPicker(42, lambda batch: train.extend(batch.to_pylist()))
    for start in range(0, len(lines), 700):
        chunk = lines[start : start + 700]
        picker.add(pa.array(chunk), tokens=np.arange(start, start + len(chunk)))
    validation, tokens = picker.finish(0.1)
    expected_train, expected_validation = reference_split(lines, 700, 0.1)
    assert len(expected_validation) == MAX_VALIDATION
    assert validation.to_pylist() == expected_validation
    assert train == expected_train
    assert [lines[n] for n in tokens.tolist()] == expected_validation  # counts travel along


def test_lines_are_written_with_a_newline_each(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with path.open("wb") as handle:
        write_lines(handle, pa.array(["é", "b"]).slice(0, 2))
        write_lines(handle, pa.array(["x", "y", "z"]).slice(1, 2))
        write_lines(handle, pa.array([], pa.string()))
    assert path.read_bytes() == "é\nb\ny\nz\n".encode()


def test_token_counts_grow_without_a_list_and_bill_up_to_the_limit() -> None:
    counts = TokenCounts()
    for start in range(0, 5000, 333):
        counts.extend(np.arange(start, min(start + 333, 5000)))
    assert counts.values.tolist() == list(range(5000))
    assert billed_tokens(counts.values, None) == sum(range(5000))
    assert billed_tokens(counts.values, 100) == sum(min(n, 100) for n in range(5000))

"""The prepared dataset is byte-for-byte what it was: one fixed input (the sample CSVs and a
generated CSV with Cyrillic, quotes, newlines and accents) has fixed train/validation digests,
so speed work on the pipeline cannot change a single byte of its output unnoticed."""

from __future__ import annotations

import csv
import hashlib
import random
from pathlib import Path

from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import prepare
from tests.conftest import SAMPLES

# Measured on the pipeline of 2026-12-03 (commit 3170338), before the speed work of issue 14.
DATASET_ID = "7953b45ebc46e1a9"
DIGESTS = {
    "train.jsonl": "9a52a362e75211c3022cd1c5f33a21fffd8acc0d441aa3782dfc870c95d704ec",
    "validation.jsonl": "a71846fd0db28de5f756d76a0665719405594fbe9b9a429ee46fbc00507033bd",
}


def generated_csv(path: Path, rows: int = 3000) -> Path:
    rng = random.Random(5)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer"])
        for i in range(rows):
            writer.writerow(
                [
                    f'Вопрос {i}: what about «{rng.random():.6f}» and "quotes"?\n line two',
                    f"Answer {i} — ok, naïve café {rng.randint(0, 10**9)}",
                ]
            )
    return path


def test_a_fixed_input_gives_byte_identical_outputs(tmp_path: Path) -> None:
    source = generated_csv(tmp_path / "gen.csv")
    result = prepare(
        [SAMPLES / "csv", source], PrepareOptions(model="gpt-4o-mini"), out_root=tmp_path / "out"
    )
    assert result.dataset_id == DATASET_ID
    for name, digest in DIGESTS.items():
        assert hashlib.sha256((result.out_dir / name).read_bytes()).hexdigest() == digest, name

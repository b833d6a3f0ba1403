"""Benchmark of one chat exchange appended to the dialogue log, as the log grows.

Usage: python bench/dialogue_log.py [--exchanges N] [--sizes 1000,50000,200000] [--workdir DIR]

For each size a log of that many existing turns is written (not timed), then N exchanges are
recorded with `DialogueLog.record_exchange` (locked, torn-line safe) and, as the reference on a
copy of the same file, N times the plain fastest way: open in append mode, write the exchange's
JSON lines, close (no lock). Median and p95 per exchange are printed; the last line reads
`dialogue_log: append_ms_at_200k=<median ms> vs_plain=<ratio of medians>`. The target (under
5 ms per exchange at 200k turns) is printed with PASS/MISS; a miss never fails the process.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ftpipe.dialogue_log import DialogueLog, utc_timestamp

MODEL = "gpt-4o-mini-2024-07-18"
SYSTEM = "You are the ferry desk of the Harbour Line. Answer briefly and politely."
TARGET_MS = 5.0
TARGET_SIZE = 200_000


def existing_turn(number: int) -> dict[str, str]:
    """A saved turn of realistic size (about 200 bytes)."""
    role = ("system", "user", "assistant")[number % 3]
    content = SYSTEM if role == "system" else f"Message {number}: when does the last ferry leave?"
    return {"role": role, "content": content, "model": MODEL, "timestamp": utc_timestamp()}


def write_log(path: Path, turns: int) -> None:
    """A JSONL log of `turns` turns, written in bulk (not timed)."""
    with path.open("w", encoding="utf-8") as handle:
        for start in range(0, turns, 10_000):
            chunk = range(start, min(turns, start + 10_000))
            handle.writelines(
                json.dumps(existing_turn(n), ensure_ascii=False) + "\n" for n in chunk
            )


def timed(step: Callable[[int], None], count: int) -> list[float]:
    """Milliseconds of each of `count` calls of `step`."""
    times = []
    for number in range(count):
        start = time.perf_counter()
        step(number)
        times.append((time.perf_counter() - start) * 1000)
    return times


def ftpipe_append(path: Path, count: int) -> list[float]:
    """The real writer: one locked, torn-line-safe write per exchange."""
    log = DialogueLog(path)

    def step(number: int) -> None:
        log.record_exchange(
            system=SYSTEM,
            user=f"Question {number}: is there a night boat?",
            assistant="Yes, at 23:30 on Fridays.",
            sentiment="positive",
            model=MODEL,
            new_conversation=False,
        )

    return timed(step, count)


def plain_append(path: Path, count: int) -> list[float]:
    """The plain fastest way: append the same JSON lines, no lock, no checks."""

    def step(number: int) -> None:
        stamp = utc_timestamp()
        turns = [
            {"role": "user", "content": f"Question {number}: is there a night boat?"},
            {"role": "assistant", "content": "Yes, at 23:30 on Fridays.", "sentiment": "positive"},
        ]
        lines = "".join(
            json.dumps({**t, "model": MODEL, "timestamp": stamp}, ensure_ascii=False) + "\n"
            for t in turns
        )
        with path.open("a", encoding="utf-8") as handle:
            handle.write(lines)

    return timed(step, count)


def p95(times: list[float]) -> float:
    return sorted(times)[int(len(times) * 0.95) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=300)
    parser.add_argument("--sizes", default="1000,50000,200000")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-dialogue-log-"))
    workdir.mkdir(parents=True, exist_ok=True)
    medians: dict[int, tuple[float, float]] = {}
    try:
        print(f"{'turns':>8} {'ftpipe ms':>10} {'p95':>7} {'plain ms':>9} {'p95':>7} {'ratio':>6}")
        for size in sizes:
            ours, plain = (
                workdir / f"log-{size}" / "dialogues.jsonl",
                workdir / f"plain-{size}.jsonl",
            )
            ours.parent.mkdir(parents=True, exist_ok=True)
            write_log(ours, size)
            shutil.copyfile(ours, plain)
            new = ftpipe_append(ours, args.exchanges)
            base = plain_append(plain, args.exchanges)
            median, reference = statistics.median(new), statistics.median(base)
            medians[size] = (median, reference)
            print(
                f"{size:>8} {median:>10.3f} {p95(new):>7.3f} {reference:>9.3f} {p95(base):>7.3f} "
                f"{median / reference:>6.1f}"
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    size = TARGET_SIZE if TARGET_SIZE in medians else max(medians)
    median, reference = medians[size]
    verdict = "PASS" if median < TARGET_MS else "MISS"
    print(f"target: under {TARGET_MS} ms per exchange at {size} turns: {verdict}")
    print(f"dialogue_log: append_ms_at_200k={median:.3f} vs_plain={median / reference:.2f}")


if __name__ == "__main__":
    main()

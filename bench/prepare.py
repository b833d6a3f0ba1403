"""Benchmark of `ftpipe prepare` on a large question/answer CSV, against two references.

Usage: python bench/prepare.py --size-mb 200 [--workdir DIR] [--keep] [--seed N] [--repeat N]
       [--skip-baseline]

One run generates a deterministic CSV (not timed), then runs three programs over it, each in its
own child process so that wall time and peak RSS belong to that program alone:

* ftpipe    - the real CLI, `python -m ftpipe prepare CSV --out DIR`;
* baseline  - OpenAI's cookbook guide ("Data preparation and analysis for chat model
              fine-tuning") applied to the CSV: pandas read_csv, a Python loop per example,
              the guide's format checks and token counts, json.dumps per line;
* tokenizer - tiktoken's batched encoder (encode_ordinary_batch) over every text cell; a
              plain encode_ordinary loop is timed beside it for information.

The last line reads `prepare: vs_baseline=... vs_tokenizer=... peak_rss_mb=...`. Targets are
printed with PASS/MISS; a miss never fails the process (tests do not assert on timing).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MODEL = "gpt-4o-mini"
DEFAULT_SEED = 20240917
MAX_REJECTS = 10**12
TOKENIZER_CHUNK = 16_384  # texts per encode_ordinary_batch call: token lists stay small
TARGET_VS_BASELINE = 6.0
TARGET_VS_TOKENIZER = 1.5
TARGET_RSS_MB = 600.0
SYSTEM_SHARE = 0.25
DUPLICATE_SHARE = 0.01
EMPTY_ANSWER_SHARE = 0.005
NEWLINE_SHARE = 0.08
WRITE_ROWS = 5_000

# --- CSV generation ----------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    """A phrase list written as one "|"-separated string, so the vocabulary stays compact."""
    return tuple(text.split("|"))


SUBJECTS = _words(
    "The ferry|Our support team|The booking system|Your invoice|The night train|A refund|"
    "The harbour office|Maria|The app|Customer service|The timetable|Your reservation|"
    "The captain|The café on deck 5|Our partner in Zürich|The crew|The loyalty programme|"
    "Passport control|The weather service|The mobile ticket|Your travel agent|"
    "The luggage desk|José from the front desk|The new fare table|The Malmö terminal|"
    "Every cabin|The onboard shop"
)
VERBS = _words(
    "confirms|cancels|reschedules|explains|updates|checks|covers|includes|sends|requires|"
    "accepts|rejects|delays|lists|protects|charges for|refunds|announces|describes|"
    "replaces|prints|stores|handles|approves"
)
OBJECTS = _words(
    "the departure time|your seat upgrade|a second passenger|the vehicle fee|"
    "the pet policy|all cabin bookings|the return journey|a late check-in|"
    "the group discount|every change fee|the boarding pass|the €25 surcharge|"
    "your résumé of the trip|the naïve assumption about prices|the sea conditions|"
    "a wheelchair request|the meal voucher|the last sailing of the day|"
    "the route to São Paulo|the Wi-Fi allowance|the bicycle rack|a family cabin|"
    "the booking reference|the parking ticket at München Hbf|the 10% student rebate"
)
TAILS = _words(
    "before noon|within 14 days|at the terminal|without extra cost|"
    "if the weather allows it|as soon as possible|for the whole family|"
    "during the summer season|on the next business day|by e-mail|at no charge|"
    "after the crossing|in most cases|unless stated otherwise|once payment clears|"
    "at check-in|— usually within an hour|for trips under 3 hours|on weekends"
)
OPENERS = _words(
    "||||Honestly, |In short, |Good news: |Please note that |As far as I know, |"
    "Unfortunately, |For what it's worth, |Just so you know, "
)
QUESTIONS = _words(
    "Can I change my booking after paying|Why was my card charged twice|"
    "Is breakfast included in the cabin price|How early should I arrive at the port|"
    "What happens if the ferry is cancelled|Do you allow dogs on the outside deck|"
    "Can I bring an electric bike|Where do I find my booking reference|"
    "Is there a discount for students|How do I get a refund for a missed sailing|"
    'Why does the app say "payment pending"|Can I travel with an expired passport|'
    "Does the price include the vehicle|Which terminal does the Tallinn ferry leave from|"
    "Can you send the invoice to my company, please|What is the luggage limit per person|"
    "How long does a refund take, roughly|Is the night crossing quiet enough to sleep"
)
QUOTES = _words(
    'The sign literally said "Gate B, not Gate A".|'
    'She told me, "Keep the receipt, just in case."|'
    'Look for the "Reserved, do not sit" stickers.|'
    'Your status reads "confirmed, awaiting payment".|'
    'The message was "Sorry, try again later", nothing else.'
)
FOREIGN = _words(
    "Merci beaucoup, à bientôt!|Vielen Dank für die schnelle Antwort.|"
    "Большое спасибо за помощь.|ありがとうございます。|¿Dónde está la terminal?|"
    "Grazie mille, è perfetto.|Tack så mycket för hjälpen! 🙂|Dziękuję, wszystko jasne."
)
SYSTEM_PROMPTS = tuple(
    f"You are {who}. {how} Answer in {lang} and keep replies under {n} sentences."
    for who in (
        "a friendly ferry support agent",
        "a concise booking assistant",
        "a polite customer-care bot for Baltic Lines",
        "a travel helper for families",
        "an expert on port logistics",
    )
    for how in (
        "Be warm but precise.",
        "Never invent prices.",
        "Quote the policy when unsure.",
        "Ask one clarifying question if needed.",
    )
    for lang, n in (("English", 4), ("plain English", 6), ("clear, simple English", 3))
)


def _statement(rng: random.Random) -> str:
    """One declarative sentence, sometimes with a comma clause, a quote or foreign text."""
    roll = rng.random()
    if roll < 0.04:
        return rng.choice(QUOTES)
    if roll < 0.07:
        return rng.choice(FOREIGN)
    body = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {rng.choice(TAILS)}"
    if rng.random() < 0.3:
        body += f", and {rng.choice(SUBJECTS).lower()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if rng.random() < 0.15:
        body += f" (ref. {rng.randrange(10_000, 99_999)})"
    opener = rng.choice(OPENERS)
    text = opener + (body[0].lower() + body[1:] if opener else body)
    return text + rng.choice((".", ".", ".", "!"))


def _question(rng: random.Random) -> str:
    """One question sentence, optionally with a detail clause."""
    text = rng.choice(QUESTIONS)
    if rng.random() < 0.4:
        text += f" {rng.choice(TAILS)}"
    return text + "?"


def _sentence_pool(
    rng: random.Random, size: int, make: Callable[[random.Random], str]
) -> list[str]:
    """Pre-built sentences: generating 1 GB word by word in Python would take minutes."""
    return [make(rng) for _ in range(size)]


def _cell(rng: random.Random, lead: list[str], body: list[str]) -> str:
    """Sentences joined to a target length of ~50-400 characters, sometimes across lines."""
    target = int(rng.triangular(50, 400, 140))
    parts = [rng.choice(lead)]
    length = len(parts[0])
    while length < target:
        sentence = rng.choice(body)
        parts.append(sentence)
        length += len(sentence) + 1
    if len(parts) > 1 and rng.random() < NEWLINE_SHARE:
        cut = rng.randrange(1, len(parts))
        return " ".join(parts[:cut]) + rng.choice(("\n", "\n\n", "\n- ")) + " ".join(parts[cut:])
    return " ".join(parts)


def generate_rows(seed: int) -> Iterator[tuple[str, str, str]]:
    """Endless deterministic (question, answer, system) rows with duplicates and empty answers."""
    rng = random.Random(seed)
    statements = _sentence_pool(rng, 40_000, _statement)
    questions = _sentence_pool(rng, 8_000, _question)
    question_body = statements + questions[:2000]
    recent: list[tuple[str, str, str]] = []
    while True:
        if recent and rng.random() < DUPLICATE_SHARE:
            yield rng.choice(recent)
            continue
        question = _cell(rng, questions, question_body)
        answer = "" if rng.random() < EMPTY_ANSWER_SHARE else _cell(rng, statements, statements)
        system = rng.choice(SYSTEM_PROMPTS) if rng.random() < SYSTEM_SHARE else ""
        row = (question, answer, system)
        if len(recent) < 10_000:
            recent.append(row)
        else:
            recent[rng.randrange(len(recent))] = row
        yield row


@dataclass(frozen=True)
class Dataset:
    path: Path
    rows: int
    bytes: int


def generate_csv(path: Path, size_bytes: int, seed: int) -> Dataset:
    """Stream rows to a CSV until it reaches the requested size; memory stays flat."""
    rows_iter = generate_rows(seed)
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("question", "answer", "system"))
        while handle.tell() < size_bytes:
            writer.writerows(next(rows_iter) for _ in range(WRITE_ROWS))
            rows += WRITE_ROWS
    return Dataset(path, rows, path.stat().st_size)


# --- reference: the cookbook guide --------------------------------------------------------------


def _guide_dataset(csv_path: Path) -> list[dict[str, Any]]:
    """The guide's `dataset`: one {"messages": [...]} dict per CSV row, built in a Python loop."""
    import pandas as pd

    frame = pd.read_csv(csv_path)
    dataset = []
    for question, answer, system in frame[["question", "answer", "system"]].itertuples(
        index=False, name=None
    ):
        messages = []
        if isinstance(system, str) and system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": answer})
        dataset.append({"messages": messages})
    return dataset


def _format_errors(example: Any) -> list[str]:
    """The guide's format error checks for one example, as a list of error types."""
    if not isinstance(example, dict):
        return ["data_type"]
    messages = example.get("messages", None)
    if not messages:
        return ["missing_messages_list"]
    errors = []
    for message in messages:
        if "role" not in message or "content" not in message:
            errors.append("message_missing_key")
        if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
            errors.append("message_unrecognized_key")
        if message.get("role", None) not in ("system", "user", "assistant", "function"):
            errors.append("unrecognized_role")
        content = message.get("content", None)
        function_call = message.get("function_call", None)
        if (not content and not function_call) or not isinstance(content, str):
            errors.append("missing_content")
    if not any(message.get("role", None) == "assistant" for message in messages):
        errors.append("example_missing_assistant_message")
    return errors


def _num_tokens_from_messages(encoding: Any, messages: list[dict[str, str]]) -> int:
    """The guide's count: 3 per message, the tokens of every value, 1 per name, 3 at the end."""
    num_tokens = 0
    for message in messages:
        num_tokens += 3
        for key, value in message.items():
            num_tokens += len(encoding.encode(value))
            if key == "name":
                num_tokens += 1
    return num_tokens + 3


def run_baseline(csv_path: Path, out_dir: Path) -> dict[str, Any]:
    """The guide end to end: load, check, count tokens, then write the valid examples.

    Empty answers load as NaN and fail `missing_content`; such examples are left out of the
    counts and the output (the guide's encode would raise on them).
    """
    import numpy as np

    from ftpipe.tokens import encoding_for_model

    started = time.perf_counter()
    encoding = encoding_for_model(MODEL)
    dataset = _guide_dataset(csv_path)
    loaded = time.perf_counter()
    format_errors: dict[str, int] = defaultdict(int)
    valid = []
    for example in dataset:
        errors = _format_errors(example)
        for error in errors:
            format_errors[error] += 1
        if not errors:
            valid.append(example)
    convo_lens = [_num_tokens_from_messages(encoding, ex["messages"]) for ex in valid]
    n_missing_system = sum(not any(m["role"] == "system" for m in ex["messages"]) for ex in valid)
    counted = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "train.jsonl").open("w", encoding="utf-8") as handle:
        for example in valid:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    done = time.perf_counter()
    return {
        "rows": len(dataset),
        "examples": len(valid),
        "format_errors": dict(format_errors),
        "missing_system": n_missing_system,
        "tokens": int(np.sum(convo_lens)),
        "load_s": loaded - started,
        "check_count_s": counted - loaded,
        "write_s": done - counted,
    }


# --- reference: the bare tokenizer --------------------------------------------------------------


def _text_batches(csv_path: Path) -> Iterator[tuple[int, list[str]]]:
    """(rows, non-empty cell texts) per pyarrow block, so memory stays flat at any size."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    names = ("question", "answer", "system")
    reader = pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=16 << 20, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=False
        ),
    )
    for batch in reader:
        texts = [text for name in names for text in batch.column(name).to_pylist() if text]
        yield batch.num_rows, texts


def run_tokenizer(csv_path: Path) -> dict[str, Any]:
    """Exact token counts of every text cell with encode_ordinary_batch; only encoding is timed."""
    from ftpipe.tokens import encoding_for_model

    encoding = encoding_for_model(MODEL)
    started = time.perf_counter()
    encode_s, loop_s, rows, texts, total = 0.0, 0.0, 0, 0, 0
    for batch_rows, batch in _text_batches(csv_path):
        rows += batch_rows
        texts += len(batch)
        for start in range(0, len(batch), TOKENIZER_CHUNK):
            chunk = batch[start : start + TOKENIZER_CHUNK]
            before = time.perf_counter()
            total += sum(map(len, encoding.encode_ordinary_batch(chunk)))
            encode_s += time.perf_counter() - before
        loop_s += _plain_loop_seconds(encoding, batch)
    return {
        "rows": rows,
        "texts": texts,
        "tokens": total,
        "encode_s": encode_s,
        "read_and_encode_s": time.perf_counter() - started - loop_s,
        "plain_loop_s": loop_s,
    }


def _plain_loop_seconds(encoding: Any, texts: list[str]) -> float:
    """encode_ordinary per text in one thread: for short cells it beats the batch API, whose
    thread pool pays a Future per text; shown beside the reference, not used for the ratio."""
    before = time.perf_counter()
    for text in texts:
        encoding.encode_ordinary(text)
    return time.perf_counter() - before


# --- measuring children -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_child(command: list[str], log_dir: Path, name: str) -> ChildRun:
    """Run a command; os.wait4 gives this child's own peak RSS, not the max over all children."""
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        wall_s=wall,
        peak_rss_mb=usage.ru_maxrss / 1024,  # KiB on Linux
        returncode=process.returncode,
        stdout=out_path.read_text(encoding="utf-8", errors="replace"),
        stderr=err_path.read_text(encoding="utf-8", errors="replace"),
    )


def _checked(run: ChildRun, name: str) -> ChildRun:
    """A failed child makes every figure meaningless: stop with its output."""
    if run.returncode != 0:
        sys.stderr.write(run.stdout[-4000:] + run.stderr[-4000:])
        raise SystemExit(f"{name} failed with exit code {run.returncode}")
    return run


def _reference_result(run: ChildRun) -> dict[str, Any]:
    """The JSON a reference child prints as its last stdout line."""
    return json.loads(run.stdout.strip().splitlines()[-1])


# --- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    name: str
    seconds: float
    peak_rss_mb: float
    dataset: Dataset
    note: str = ""

    @property
    def mb_per_s(self) -> float:
        return self.dataset.bytes / 1e6 / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.dataset.rows / self.seconds

    def line(self) -> str:
        return (
            f"{self.name:<10} {self.mb_per_s:9.2f} MB/s {self.rows_per_s:12,.0f} rows/s "
            f"{self.seconds:9.2f} s {self.peak_rss_mb:9.1f} MB peak RSS  {self.note}"
        )


def _target(name: str, value: float, ok: bool, op: str, goal: float) -> str:
    return f"target {name:<12} {op:>2} {goal:<5g} got {value:8.2f}  {'PASS' if ok else 'MISS'}"


def print_report(ftpipe: Figures, baseline: Figures | None, tokenizer: list[Figures]) -> None:
    """Per-program figures, targets with PASS/MISS, and the machine-readable last line.

    tokenizer[0] is the reference (encode_ordinary_batch); any further entries are shown only.
    """
    print(f"\ninput: {ftpipe.dataset.bytes / 1e6:,.1f} MB, {ftpipe.dataset.rows:,} rows")
    for figures in (ftpipe, baseline, *tokenizer):
        if figures is not None:
            print(figures.line())
    vs_baseline = ftpipe.mb_per_s / baseline.mb_per_s if baseline else float("nan")
    vs_tokenizer = ftpipe.seconds / tokenizer[0].seconds
    rss = ftpipe.peak_rss_mb
    if baseline:
        print(f"ratio ftpipe speed-up over baseline: {vs_baseline:.2f}x")
    for reference in tokenizer:
        print(
            f"ratio ftpipe time / {reference.name} time: {ftpipe.seconds / reference.seconds:.2f}"
        )
    if baseline:
        print(
            _target(
                "vs_baseline",
                vs_baseline,
                vs_baseline >= TARGET_VS_BASELINE,
                ">=",
                TARGET_VS_BASELINE,
            )
        )
    else:
        print("target vs_baseline  skipped (--skip-baseline)")
    print(
        _target(
            "vs_tokenizer",
            vs_tokenizer,
            vs_tokenizer <= TARGET_VS_TOKENIZER,
            "<=",
            TARGET_VS_TOKENIZER,
        )
    )
    print(_target("peak_rss_mb", rss, rss < TARGET_RSS_MB, "<", TARGET_RSS_MB) + "  (for 1 GB)")
    print(
        f"prepare: vs_baseline={vs_baseline:.2f} vs_tokenizer={vs_tokenizer:.2f} "
        f"peak_rss_mb={rss:.1f}"
    )


# --- the run -----------------------------------------------------------------------------------


def _self_command(mode: str, csv_path: Path, out_dir: Path) -> list[str]:
    return [
        sys.executable,
        __file__,
        "--reference",
        mode,
        "--csv",
        str(csv_path),
        "--out",
        str(out_dir),
    ]


def _ftpipe_command(csv_path: Path, out_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ftpipe",
        "prepare",
        str(csv_path),
        "--out",
        str(out_dir),
        "--model",
        MODEL,
        "--max-rejects",
        str(MAX_REJECTS),
    ]


def _measure_ftpipe(data: Dataset, work: Path) -> Figures:
    run = _checked(
        run_child(_ftpipe_command(data.path, work / "ftpipe-out"), work, "ftpipe"), "ftpipe"
    )
    summary = " ".join(line.strip() for line in run.stdout.splitlines()[:1])
    print(f"ftpipe: {summary}")
    return Figures("ftpipe", run.wall_s, run.peak_rss_mb, data, "(whole CLI process)")


def _measure_baseline(data: Dataset, work: Path) -> Figures:
    command = _self_command("baseline", data.path, work / "baseline-out")
    run = _checked(run_child(command, work, "baseline"), "baseline")
    result = _reference_result(run)
    print(f"baseline: {json.dumps(result)}")
    return Figures("baseline", run.wall_s, run.peak_rss_mb, data, "(whole child process)")


def _measure_tokenizer(data: Dataset, work: Path) -> list[Figures]:
    """The reference (batch API, encode time only) and, for information, a plain loop."""
    command = _self_command("tokenizer", data.path, work / "tokenizer-out")
    run = _checked(run_child(command, work, "tokenizer"), "tokenizer")
    result = _reference_result(run)
    print(f"tokenizer: {json.dumps(result)}")
    note = f"(encode_ordinary_batch only; with reading {result['read_and_encode_s']:.2f} s)"
    loop_note = "(info only: encode_ordinary per cell, one thread)"
    return [
        Figures("tokenizer", result["encode_s"], run.peak_rss_mb, data, note),
        Figures("tok-loop", result["plain_loop_s"], run.peak_rss_mb, data, loop_note),
    ]


def benchmark(args: argparse.Namespace, work: Path) -> None:
    """Generate the input, then measure the three programs one after the other."""
    csv_path = work / f"bench_{args.size_mb}mb_seed{args.seed}.csv"
    print(f"generating {args.size_mb} MB in {csv_path} (seed {args.seed}) ...", flush=True)
    started = time.perf_counter()
    data = generate_csv(csv_path, args.size_mb * 1_000_000, args.seed)
    print(
        f"generated {data.bytes / 1e6:,.1f} MB, {data.rows:,} rows in "
        f"{time.perf_counter() - started:.1f} s (not measured)",
        flush=True,
    )
    print(f"load average before: {_load()}", flush=True)
    ftpipe, baseline, tokenizer = [], [], []
    for _ in range(args.repeat):
        ftpipe.append(_measure_ftpipe(data, work))
        if not args.skip_baseline:
            baseline.append(_measure_baseline(data, work))
        tokenizer.append(_measure_tokenizer(data, work))
    print(f"load average after: {_load()}")
    print_report(
        _best(ftpipe),
        _best(baseline) if baseline else None,
        [_best([run[i] for run in tokenizer]) for i in range(len(tokenizer[0]))],
    )


def _best(runs: list[Figures]) -> Figures:
    """The fastest of repeated runs (least disturbed by other load) with the highest peak RSS."""
    fastest = min(runs, key=lambda figures: figures.seconds)
    return replace(fastest, peak_rss_mb=max(figures.peak_rss_mb for figures in runs))


def _load() -> str:
    """Other processes on the machine skew the figures; the load average shows how much."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg()) + f" on {os.cpu_count()} cores"


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200, help="Size of the generated CSV.")
    parser.add_argument(
        "--workdir", type=Path, help="Where to put the files (default: a temp dir)."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the generated files.")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="Seed of the generator.")
    parser.add_argument("--skip-baseline", action="store_true", help="Skip the pandas baseline.")
    parser.add_argument(
        "--repeat", type=int, default=1, help="Run each program N times; report the fastest."
    )
    parser.add_argument("--reference", choices=("baseline", "tokenizer"), help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.reference:
        result = (
            run_baseline(args.csv, args.out)
            if args.reference == "baseline"
            else run_tokenizer(args.csv)
        )
        print(json.dumps(result))
        return
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ftpipe-bench-", dir=args.workdir))
    try:
        benchmark(args, work)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

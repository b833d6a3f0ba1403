"""Benchmark of `ftpipe prepare` on a large question/answer CSV, against references that do the
same work plainly.

Usage: python bench/prepare.py --size-mb 200 [--workdir DIR] [--keep] [--seed N] [--repeat N]
       [--skip-guide] [--skip-phases] [--skip-flow]

One run generates a deterministic CSV (not timed), then runs each program over it in its own
child process, so that wall time and peak RSS belong to that program alone:

* guide  - OpenAI's cookbook guide ("Data preparation and analysis for chat model fine-tuning")
           applied to the CSV: pandas read_csv, a Python loop per example, the guide's format
           checks and token counts, json.dumps per line;
* count  - the plain exact-count loop: pyarrow reads the CSV block by block, the fastest exact
           counter available offline counts every cell (bpe-openai's Rust `count` when it agrees
           with tiktoken's encode_ordinary on a sample of the CSV, else tiktoken), summed per
           row; nothing rendered, nothing written: the floor for any exact preparation;
* lean   - a small pyarrow pipeline (~115 lines of code) doing ftpipe's work for this CSV
           (trim, the suite's rules as filters, exact counts with ftpipe's chat overhead, the
           token limit, dedupe, the seeded split, columnar JSON rendering, train.jsonl and
           validation.jsonl); its output is compared with ftpipe's;
* ftpipe - the real CLI, `python -m ftpipe prepare CSV --out DIR --model gpt-4o-mini
           --max-rejects <large>`; a second, instrumented run of the same CLI splits its time
           into phases (the pipeline reports no timings of its own);
* flow   - the `prepare_dataset` Prefect flow under a temporary Prefect API, timed from the
           flow call to its return (server start-up apart).

The last line reads `prepare: vs_guide=... vs_lean=... peak_rss_mb=...`. Targets are printed
with PASS/MISS; a miss never fails the process (tests do not assert on timing).
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import functools
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

MODEL = "gpt-4o-mini"
ENCODING = "o200k_base"
DEFAULT_SEED = 20240917
MAX_REJECTS = 10**12
TARGET_VS_GUIDE = 2.0
TARGET_VS_GUIDE_TWO_CORES = 3.0
TARGET_VS_LEAN = 1.3
TARGET_RSS_MB = 500.0
SYSTEM_SHARE = 0.25
DUPLICATE_SHARE = 0.01
EMPTY_ANSWER_SHARE = 0.005
NEWLINE_SHARE = 0.08
WRITE_ROWS = 5_000
CSV_COLUMNS = ("question", "answer", "system")
BLOCK_BYTES = 4 * 1024 * 1024  # ftpipe's reader block size: both read the same batches' worth
COUNTER_SAMPLE = 20_000  # cells on which the fast counter must agree with tiktoken
TRICKY_TEXTS = (  # where tokenizers part ways, if anywhere: special tokens, runs, emoji
    "<|endoftext|> and <|im_start|>",
    "  runs   of\n\n\n spaces\t",
    "a" * 5000,
    "🙂🙂 ありがとう 1234567890" * 20,
)
WORKER_FIELDS = ("workers", "processes", "jobs")  # a PrepareOptions field that would use 2 cores

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


# --- exact token counters -----------------------------------------------------------------------


def tiktoken_encoding() -> Any:
    """tiktoken's o200k_base from the tables bpe-openai ships (get_encoding needs the network)."""
    import tiktoken

    with warnings.catch_warnings():  # bpe-openai loads its tables via a deprecated API
        warnings.simplefilter("ignore", DeprecationWarning)
        from bpe_openai import registry

        spec = registry.o200k_base()
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
    )


def _bpe_count() -> Callable[[str], int] | None:
    """bpe-openai's Rust counter (`_bindings`: no token list is built), None if it is missing."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from bpe_openai import _bindings
        return _bindings.tokenizer_for_encoding(ENCODING).count
    except (ImportError, AttributeError, ValueError):
        return None


def make_counter(name: str) -> Callable[[str], int]:
    """The exact counter the parent chose: "bpe-openai" or "tiktoken" (encode_ordinary)."""
    count = _bpe_count() if name == "bpe-openai" else None
    if count is not None:
        return count
    encode = tiktoken_encoding().encode_ordinary
    return lambda text: len(encode(text))


def choose_counter(csv_path: Path) -> tuple[str, str]:
    """The fastest exact counter, kept only if it agrees with tiktoken on the CSV's first cells
    and on text that trips tokenizers (special-token strings, long runs, emoji)."""
    count = _bpe_count()
    if count is None:
        return "tiktoken", "bpe-openai's _bindings are not available"
    table = next(iter(_csv_batches(csv_path)))
    sample = [text for name in CSV_COLUMNS for text in table.column(name).to_pylist()]
    sample = sample[:COUNTER_SAMPLE] + list(TRICKY_TEXTS)
    encode = tiktoken_encoding().encode_ordinary
    wrong = sum(count(text) != len(encode(text)) for text in sample)
    if wrong:
        return "tiktoken", f"bpe-openai disagrees with tiktoken on {wrong} of {len(sample)} texts"
    return "bpe-openai", f"agrees with tiktoken encode_ordinary on {len(sample):,} texts"


def _csv_batches(csv_path: Path) -> Iterator[Any]:
    """Record batches of the CSV, every column as text, block by block (flat memory)."""
    yield from pacsv.open_csv(
        csv_path,
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in CSV_COLUMNS}, strings_can_be_null=False
        ),
    )


# --- reference: the cookbook guide --------------------------------------------------------------


def _guide_dataset(csv_path: Path) -> list[dict[str, Any]]:
    """The guide's `dataset`: one {"messages": [...]} dict per CSV row, built in a Python loop."""
    import pandas as pd

    frame = pd.read_csv(csv_path)
    dataset = []
    for question, answer, system in frame[list(CSV_COLUMNS)].itertuples(index=False, name=None):
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


def run_guide(csv_path: Path, out_dir: Path) -> dict[str, Any]:
    """The guide end to end: load, check, count tokens, then write the valid examples.

    Empty answers load as NaN and fail `missing_content`; such examples are left out of the
    counts and the output (the guide's encode would raise on them).
    """
    started = time.perf_counter()
    encoding = tiktoken_encoding()
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
        "load_s": round(loaded - started, 2),
        "check_count_s": round(counted - loaded, 2),
        "write_s": round(done - counted, 2),
    }


# --- reference: the plain exact-count loop ------------------------------------------------------


def run_count(csv_path: Path, counter: str) -> dict[str, Any]:
    """Exact tokens of every cell, one counter call per cell, summed per row; nothing else."""
    count = make_counter(counter)
    rows = total = 0
    for batch in _csv_batches(csv_path):
        per_row = sum(
            np.fromiter(map(count, batch.column(name).to_pylist()), np.int64, batch.num_rows)
            for name in CSV_COLUMNS
        )
        rows += batch.num_rows
        total += int(np.sum(per_row))
    return {"counter": counter, "rows": rows, "cell_tokens": total}


# --- reference: a lean pyarrow pipeline -----------------------------------------------------------

ROLE_COLUMNS = {"system": "system", "user": "question", "assistant": "answer"}
JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
RARE_CONTROL = "[\x00-\x08\x0b\x0c\x0e-\x1f]"  # json.dumps writes these as \b, \f or \u00XX
HASH_KEY = "ftpipe-dedupe-v1"  # ftpipe's dedupe hash key: the same hashes, the same seeded split
SPLIT_SEED, VALIDATION_SHARE, MAX_VALIDATION, MIN_TRAINING = 42, 0.1, 1000, 10
MAX_CHARS = 1_000_000  # the column_pairs suite's length limit


def _json_body(values: pa.Array) -> pa.Array:
    """Cells as json.dumps(ensure_ascii=False) writes them between the quotes: one pass per
    escape that occurs, json.dumps itself for the rare cells with other control characters."""
    out = values
    for old, new in JSON_ESCAPES:
        if pc.any(pc.match_substring(values, old)).as_py():
            out = pc.replace_substring(out, old, new)
    rare = pc.match_substring_regex(values, RARE_CONTROL)
    if pc.any(rare).as_py():
        texts = pc.filter(values, rare).to_pylist()
        exact = pa.array([json.dumps(text, ensure_ascii=False)[1:-1] for text in texts])
        out = pc.replace_with_mask(out, rare, exact)
    return out


def _render(columns: dict[str, pa.Array]) -> pa.Array:
    """One `{"messages": [...]}` line per row, joined column-wise; an empty system is no message."""
    body = {role: _json_body(values) for role, values in columns.items()}
    system = pc.binary_join_element_wise(
        '{"role": "system", "content": "', body["system"], '"}, ', ""
    )
    system = pc.if_else(pc.equal(columns["system"], ""), "", system)
    user, assistant = '{"role": "user", "content": "', '"}, {"role": "assistant", "content": "'
    parts = ('{"messages": [', system, user, body["user"], assistant, body["assistant"], '"}]}')
    return pc.binary_join_element_wise(*parts, "")


def _example_tokens(count: Callable[[str], int], columns: dict[str, pa.Array]) -> np.ndarray:
    """ftpipe.tokens' rule: 3 per example, per message 3 + its role's and content's tokens."""
    cells = {
        role: np.fromiter(map(count, values.to_pylist()), np.int64, len(values))
        for role, values in columns.items()
    }
    message = {role: 3 + count(role) + cells[role] for role in cells}
    has_system = cells["system"] > 0  # any text is at least one token
    return 3 + message["user"] + message["assistant"] + np.where(has_system, message["system"], 0)


def _valid_rows(columns: dict[str, pa.Array]) -> np.ndarray:
    """The column_pairs suite as filters: user and assistant not empty, no cell over 1M chars."""
    length = {role: pc.utf8_length(values).to_numpy() for role, values in columns.items()}
    ok = (length["user"] > 0) & (length["assistant"] > 0)
    return ok & np.all([chars <= MAX_CHARS for chars in length.values()], axis=0)


def _hashes(lines: pa.Array) -> np.ndarray:
    """64-bit SipHash of each line (pandas hashes Arrow strings without Python objects)."""
    import pandas as pd

    series = pd.Series(lines, dtype=pd.ArrowDtype(pa.string()))
    hashed = pd.util.hash_pandas_object(series, index=False, hash_key=HASH_KEY, categorize=False)
    return hashed.to_numpy(np.uint64)


def _first_seen(hashes: np.ndarray, seen: set[int]) -> np.ndarray:
    """True for lines whose hash no earlier line had (the first occurrence wins)."""
    first = np.zeros(len(hashes), dtype=bool)
    for position, value in enumerate(hashes.tolist()):
        if value not in seen:
            seen.add(value)
            first[position] = True
    return first


def _split_keys(hashes: np.ndarray) -> np.ndarray:
    """splitmix64 of hash + seed x golden ratio: the seed picks the validation set."""
    with np.errstate(over="ignore"):
        z = hashes + np.uint64(SPLIT_SEED * 0x9E3779B97F4A7C15 % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _write_lines(handle: BinaryIO, lines: pa.Array) -> None:
    """Each line and a newline, written straight from the Arrow buffer (no Python strings)."""
    if len(lines):
        joined = pc.binary_join_element_wise(lines, "\n", "")
        offsets = np.frombuffer(joined.buffers()[1], np.int32)[joined.offset :]
        handle.write(memoryview(joined.buffers()[2])[offsets[0] : offsets[len(joined)]])


@dataclass
class _Holdout:
    """The lines with the 1000 smallest split keys so far; every other line goes to train."""

    keys: np.ndarray
    order: np.ndarray
    lines: pa.Array
    seen: int = 0

    def add(self, keys: np.ndarray, lines: pa.Array, train: BinaryIO) -> None:
        """Pool the new lines with the held ones; write out all but the smallest keys."""
        keys = np.concatenate([self.keys, keys])
        order = np.concatenate([self.order, np.arange(self.seen, self.seen + len(lines))])
        pool = pa.concat_arrays([self.lines, lines])
        self.seen += len(lines)
        held = np.zeros(len(keys), dtype=bool)
        held[np.argsort(keys)[:MAX_VALIDATION]] = True
        _write_lines(train, pool.filter(pa.array(~held)))
        self.keys, self.order, self.lines = keys[held], order[held], pool.filter(pa.array(held))

    def finish(self, train: BinaryIO, validation: Path) -> int:
        """ftpipe's split size (10%, at most 1000, at least 10 left to train), in input order."""
        size = max(
            0, min(round(self.seen * VALIDATION_SHARE), MAX_VALIDATION, self.seen - MIN_TRAINING)
        )
        chosen = np.zeros(len(self.keys), dtype=bool)
        chosen[np.argsort(self.keys)[:size]] = True
        _write_lines(train, self.lines.filter(pa.array(~chosen)))
        picked = np.flatnonzero(chosen)
        if size:
            with validation.open("wb") as handle:
                take = pa.array(picked[np.argsort(self.order[picked])])
                _write_lines(handle, self.lines.take(take))
        return size


def run_lean(csv_path: Path, out_dir: Path, counter: str, limit: int) -> dict[str, Any]:
    """ftpipe's work on this CSV in plain pyarrow: read, trim, check, count, limit, render,
    dedupe, split, write."""
    count, seen, stats = make_counter(counter), set(), Counter()
    holdout = _Holdout(np.empty(0, np.uint64), np.empty(0, np.int64), pa.array([], pa.string()))
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "train.jsonl").open("wb") as train:
        for batch in _csv_batches(csv_path):
            columns = {
                role: pc.utf8_trim_whitespace(batch.column(name))
                for role, name in ROLE_COLUMNS.items()
            }
            valid = _valid_rows(columns)
            columns = {role: values.filter(pa.array(valid)) for role, values in columns.items()}
            tokens = _example_tokens(count, columns)
            fits = tokens <= limit
            lines = _render({r: v.filter(pa.array(fits)) for r, v in columns.items()})
            hashes = _hashes(lines)
            first = _first_seen(hashes, seen)
            holdout.add(_split_keys(hashes[first]), lines.filter(pa.array(first)), train)
            stats.update(
                rows=batch.num_rows,
                rejected=int(np.sum(~valid)) + int(np.sum(~fits)),
                duplicates=int(np.sum(~first)),
                tokens=int(np.sum(tokens[fits][first])),
            )
        validation = holdout.finish(train, out_dir / "validation.jsonl")
    examples = holdout.seen
    return {**stats, "examples": examples, "train": examples - validation, "validation": validation}


# --- ftpipe's phases, timed from outside --------------------------------------------------------

# (module, attribute, phase): what the instrumented CLI run times. Each phase's seconds are its
# own, the time of anything nested in it (also listed here) taken out. Names that the pipeline
# no longer has are reported as missing, and their time stays with whatever calls them.
PHASES = (
    ("ftpipe.prepare.pipeline", "content_digest", "dataset id (hashes the input)"),
    ("ftpipe.prepare.pipeline", "plan_run", "plan (paths, sources)"),
    ("ftpipe.prepare.pipeline", "read_csv_batches", "read (CSV reader)"),
    ("ftpipe.prepare.pipeline", "trimmed_cells", "map + trim"),
    ("ftpipe.prepare.pipeline", "apply_plan", "map + trim"),
    ("ftpipe.prepare.pipeline", "to_chat_columns", "map + trim"),
    ("ftpipe.prepare.expectations", "SuiteRunner.__init__", "validate: GX import + set-up"),
    ("ftpipe.prepare.expectations", "SuiteRunner.validate", "validate: GX"),
    ("ftpipe.prepare.pipeline", "_example_tokens", "count tokens"),
    ("ftpipe.prepare.pipeline", "render_columns", "render JSON"),
    ("ftpipe.prepare.pipeline", "_over_limit", "token limit + spot check"),
    ("ftpipe.prepare.pipeline", "_spot_check", "token limit + spot check"),
    ("ftpipe.prepare.pipeline", "example_hashes", "dedupe: hash lines"),
    ("ftpipe.prepare.parts", "PartWriter.keep", "part file: write"),
    ("ftpipe.prepare.parts", "PartWriter.rejects", "part file: write"),
    ("ftpipe.prepare.pipeline", "_prepare_csv_batch", "per batch, other"),
    ("ftpipe.prepare.merge", "read_part", "part file: read"),
    ("ftpipe.prepare.dedupe", "SeenHashes.first_seen", "dedupe: lookup"),
    ("ftpipe.prepare.split", "ValidationPicker.add", "split"),
    ("ftpipe.prepare.split", "ValidationPicker.finish", "split"),
    ("ftpipe.prepare.merge", "Merger._write_train", "write train.jsonl"),
    ("ftpipe.prepare.rejects", "RejectsWriter.add_all", "write rejects.csv"),
    ("ftpipe.prepare.merge", "Merger.add", "merge, other"),
    ("ftpipe.prepare.merge", "Merger.finish", "finish: validation.jsonl, stats, cost"),
    ("ftpipe.prepare.pipeline", "_publish", "publish: report, move"),
    ("ftpipe.prepare.pipeline", "prepare", "prepare(), other"),
)
IMPORTS = "imports (CLI, pipeline)"
PER_BATCH_OTHER = "to_pandas for GX, filters, to_pylist of the lines, rejects, bookkeeping"


class PhaseClock:
    """Exclusive seconds per phase on the main thread: a nested timed call's time is taken out
    of its caller's, so the phases add up to the time spent in the wrapped calls."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.outermost = 0.0
        self._inner: list[float] = []
        self._main = threading.get_ident()

    def call(self, phase: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != self._main:
            return function(*args, **kwargs)
        started = time.perf_counter()
        self._inner.append(0.0)
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[phase] += elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed
            else:
                self.outermost += elapsed

    def wrap(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """The function timed; an iterator it returns is timed at each step, where it works."""

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            result = self.call(phase, function, *args, **kwargs)
            return self._steps(phase, result) if isinstance(result, Iterator) else result

        return timed

    def _steps(self, phase: str, iterator: Iterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    item = self.call(phase, next, iterator)
                except StopIteration:
                    return
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()


def install_phases(clock: PhaseClock) -> list[str]:
    """Wrap every attribute in PHASES that exists; returns the ones that do not."""
    import importlib

    missing = []
    for module_name, attribute, phase in PHASES:
        owner: Any = importlib.import_module(module_name)
        *path, name = attribute.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        function = getattr(owner, name, None)
        if not callable(function):
            missing.append(f"{module_name}.{attribute}")
            continue
        setattr(owner, name, clock.wrap(phase, function))
    return missing


def run_phases(csv_path: Path, out_dir: Path, started: float) -> dict[str, Any]:
    """The CLI in this process with the pipeline's functions timed; imports and the CLI's own
    work (options, output) are what remains outside prepare()."""
    clock = PhaseClock()
    from ftpipe import cli

    missing = install_phases(clock)
    imported = time.perf_counter()
    sys.argv = ["ftpipe", *_ftpipe_args(csv_path, out_dir)]
    try:
        cli.run()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    done = time.perf_counter()
    seconds = {IMPORTS: imported - started, **clock.seconds}
    seconds["CLI outside prepare()"] = done - imported - clock.outermost
    return {"code": code, "wall_s": done - started, "seconds": seconds, "missing": missing}


# --- ftpipe's flow, under a temporary Prefect API ------------------------------------------------


def run_flow(csv_path: Path, out_dir: Path) -> dict[str, Any]:
    """The prepare_dataset flow once a temporary Prefect server answers; only the flow call is
    the flow's time (imports, server start and stop are reported apart)."""
    started = time.perf_counter()
    from prefect.testing.utilities import prefect_test_harness

    from ftpipe.flows.prepare_dataset import prepare_dataset
    from ftpipe.prepare.options import PrepareOptions

    options = PrepareOptions(model=MODEL, max_rejects=MAX_REJECTS)
    imported = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=300):
        serving = time.perf_counter()
        result = prepare_dataset(paths=[str(csv_path)], options=options, out_dir=str(out_dir))
        flowed = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "imports_s": round(imported - started, 2),
        "server_start_s": round(serving - imported, 2),
        "flow_s": flowed - serving,
        "server_stop_s": round(time.perf_counter() - flowed, 2),
        "flow_process_peak_rss_mb": peak,
        "counts": result["counts"],
    }


def workers_flag() -> str | None:
    """The CLI flag of the PrepareOptions field that spreads one CSV over processes
    (`--workers`), looked up rather than assumed so the bench also runs an older checkout."""
    from ftpipe.prepare.options import PrepareOptions

    found = next((name for name in WORKER_FIELDS if name in PrepareOptions.model_fields), None)
    return f"--{found.replace('_', '-')}" if found else None


def token_limit() -> int:
    """The model's per-example limit from ftpipe's catalogue, handed to the lean pipeline."""
    from ftpipe.catalog import lookup

    info = lookup(MODEL)
    assert info is not None and info.training_token_limit, f"{MODEL} has no token limit"
    return int(info.training_token_limit)


# --- measuring children -------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    wall_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str


def run_child(
    command: list[str], log_dir: Path, name: str, env: dict[str, str] | None = None
) -> ChildRun:
    """Run a command; os.wait4 gives this child's own peak RSS, not the max over all children."""
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
        )
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


def _child_result(run: ChildRun) -> dict[str, Any]:
    """The JSON a child of this script prints as its last stdout line."""
    return json.loads(run.stdout.strip().splitlines()[-1])


def _ftpipe_args(csv_path: Path, out_dir: Path) -> list[str]:
    """`ftpipe prepare` as the bench runs it: every reject allowed, so no run fails on them."""
    options = ["--model", MODEL, "--max-rejects", str(MAX_REJECTS)]
    flag = workers_flag()
    if flag:  # the one-process row stays one process (the default spreads big CSVs over cores)
        options += [flag, "1"]
    return ["prepare", str(csv_path), "--out", str(out_dir), *options]


def _self_command(mode: str, csv_path: Path, out_dir: Path, *extra: str) -> list[str]:
    command = [sys.executable, __file__, "--reference", mode, "--csv", str(csv_path)]
    return [*command, "--out", str(out_dir), *extra]


# --- figures -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figures:
    name: str
    seconds: float
    peak_rss_mb: float
    dataset: Dataset
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def mb_per_s(self) -> float:
        return self.dataset.bytes / 1e6 / self.seconds

    @property
    def rows_per_s(self) -> float:
        return self.dataset.rows / self.seconds

    def line(self) -> str:
        return (
            f"{self.name:<10} {self.mb_per_s:8.2f} MB/s {self.rows_per_s:10,.0f} rows/s "
            f"{self.seconds:8.2f} s {self.peak_rss_mb:8.1f} MB peak RSS  {self.note}"
        )


@dataclass(frozen=True)
class Setup:
    """What every measurement shares: the input, the folder, the counter and the limit."""

    data: Dataset
    work: Path
    counter: str
    limit: int
    workers_flag: str | None

    def fresh(self, name: str) -> Path:
        """An empty output folder per program, so no run pays for clearing an earlier one."""
        path = self.work / f"out-{name}"
        shutil.rmtree(path, ignore_errors=True)
        return path


def measure_guide(setup: Setup) -> Figures:
    """The guide's child; its output is not compared (it keeps duplicates, has no split)."""
    out = setup.fresh("guide")
    run = _checked(
        run_child(_self_command("guide", setup.data.path, out), setup.work, "guide"), "guide"
    )
    shutil.rmtree(out)  # never compared; the disk is better spent on the others
    note = "(whole child: pandas, per-example loop, json.dumps)"
    return Figures("guide", run.wall_s, run.peak_rss_mb, setup.data, note, _child_result(run))


def measure_count(setup: Setup) -> Figures:
    """The plain exact-count loop's child: the floor for any exact preparation."""
    command = _self_command(
        "count", setup.data.path, setup.fresh("count"), "--counter", setup.counter
    )
    run = _checked(run_child(command, setup.work, "count"), "count")
    note = f"(whole child: pyarrow read + {setup.counter} per cell)"
    return Figures("count", run.wall_s, run.peak_rss_mb, setup.data, note, _child_result(run))


def measure_lean(setup: Setup) -> Figures:
    """The lean pipeline's child; its outputs stay for the comparison with ftpipe's."""
    extra = ("--counter", setup.counter, "--limit", str(setup.limit))
    command = _self_command("lean", setup.data.path, setup.fresh("lean"), *extra)
    run = _checked(run_child(command, setup.work, "lean"), "lean")
    note = "(whole child: pyarrow pipeline, writes train/validation.jsonl)"
    return Figures("lean", run.wall_s, run.peak_rss_mb, setup.data, note, _child_result(run))


def measure_ftpipe(setup: Setup, name: str = "ftpipe", *extra: str) -> Figures:
    """The CLI as users run it; `extra` adds options (the two-core hook)."""
    command = [sys.executable, "-m", "ftpipe", *_ftpipe_args(setup.data.path, setup.fresh(name))]
    run = _checked(run_child([*command, *extra], setup.work, name), name)
    summary = run.stdout.strip().splitlines()[0] if run.stdout.strip() else ""
    note = f"(whole CLI process{', ' + ' '.join(extra) if extra else ''})"
    return Figures(name, run.wall_s, run.peak_rss_mb, setup.data, note, {"summary": summary})


def measure_phases(setup: Setup) -> Figures:
    """The instrumented CLI run, only for its phase split (its wall is shown, not used)."""
    out = setup.fresh("phases")
    run = _checked(
        run_child(_self_command("phases", setup.data.path, out), setup.work, "phases"), "phases"
    )
    shutil.rmtree(out)
    result = _child_result(run)
    note = "(the CLI again, instrumented: for the phase split only)"
    return Figures("phases", run.wall_s, run.peak_rss_mb, setup.data, note, result)


def measure_flow(setup: Setup) -> Figures:
    """The flow's child, with its own Prefect home so no user's server or database is used."""
    prefect_home = setup.work / "prefect-home"
    prefect_home.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    }
    command = _self_command("flow", setup.data.path, setup.fresh("flow"))
    run = _checked(run_child(command, setup.work, "flow", env), "flow")
    result = _child_result(run)
    note = (
        f"(flow call only; + imports {result['imports_s']} s, server start "
        f"{result['server_start_s']} s, stop {result['server_stop_s']} s; RSS of the flow process)"
    )
    return Figures(
        "flow", result["flow_s"], result["flow_process_peak_rss_mb"], setup.data, note, result
    )


# --- comparing outputs --------------------------------------------------------------------------


def dataset_dir(out_root: Path) -> Path:
    """ftpipe writes OUT/<dataset-id>/: the one folder there with a train.jsonl."""
    found = sorted(path.parent for path in out_root.glob("*/train.jsonl"))
    assert len(found) == 1, f"expected one dataset in {out_root}, found {found}"
    return found[0]


def _line_digests(path: Path) -> np.ndarray:
    """Sorted 64-bit digests of a file's lines: equal arrays mean the same lines, any order."""
    if not path.exists():
        return np.empty(0, np.uint64)
    with path.open("rb") as handle:
        digests = (
            int.from_bytes(hashlib.blake2b(line, digest_size=8).digest(), "little")
            for line in handle
        )
        return np.sort(np.fromiter(digests, np.uint64))


def compare_file(one: Path, two: Path) -> str:
    """Same bytes, the same lines in another order, or how many lines the two share."""
    if one.exists() and two.exists() and filecmp.cmp(one, two, shallow=False):
        return "same bytes"
    a, b = _line_digests(one), _line_digests(two)
    if np.array_equal(a, b):
        return "same lines, other order"
    common = len(np.intersect1d(a, b))
    return f"DIFFER: {len(a):,} vs {len(b):,} lines, {common:,} in common"


def compare_counts(lean: dict[str, Any], report: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(what, lean, ftpipe) for every count both report."""
    counts = report["counts"]
    pairs = {
        "rows": counts["input_rows"],
        "rejected": counts["rejected"],
        "duplicates": counts["duplicates_dropped"],
        "examples": counts["examples"],
        "train": counts["train"],
        "validation": counts["validation"],
        "tokens": report["tokens"]["total"],
    }
    return [(name, int(lean[name]), int(value)) for name, value in pairs.items()]


def print_comparison(setup: Setup, lean: Figures, flow: Figures | None) -> None:
    """Whether the lean pipeline (and the flow) produced ftpipe's examples and split."""
    ftpipe_dir = dataset_dir(setup.work / "out-ftpipe")
    report = json.loads((ftpipe_dir / "report.json").read_text(encoding="utf-8"))
    rows = compare_counts(lean.details, report)
    print("\nlean vs ftpipe:")
    for name, ours, theirs in rows:
        print(f"  {name:<11} {ours:>14,} {theirs:>14,}  {'same' if ours == theirs else 'DIFFER'}")
    files = {
        name: compare_file(setup.work / "out-lean" / name, ftpipe_dir / name)
        for name in ("train.jsonl", "validation.jsonl")
    }
    for name, verdict in files.items():
        print(f"  {name:<17} {verdict}")
    same = all(o == t for _, o, t in rows) and all("DIFFER" not in v for v in files.values())
    print(f"  lean output matches ftpipe's: {'yes' if same else 'NO'}")
    if flow is not None:
        flow_dir = dataset_dir(setup.work / "out-flow")
        verdicts = [compare_file(flow_dir / n, ftpipe_dir / n) for n in files]
        print(f"flow vs CLI: train.jsonl {verdicts[0]}, validation.jsonl {verdicts[1]}")


# --- the report -------------------------------------------------------------------------------


def _target(name: str, value: float, ok: bool, op: str, goal: float, note: str = "") -> str:
    verdict = "PASS" if ok else "MISS"
    return f"target {name:<18} {op:>2} {goal:<5g} got {value:8.2f}  {verdict}  {note}".rstrip()


def print_phases(phases: Figures, plain: Figures) -> None:
    """The instrumented run's seconds per phase, biggest first, and what could not be split."""
    seconds = dict(phases.details["seconds"])
    imports = seconds.pop(IMPORTS, 0.0)
    inside = phases.details["wall_s"] - imports
    seconds[f"start-up, {IMPORTS}, exit"] = phases.seconds - inside
    print(
        f"\nftpipe phases (the instrumented CLI run, {phases.seconds:.2f} s; "
        f"the plain one took {plain.seconds:.2f} s):"
    )
    for phase, value in sorted(seconds.items(), key=lambda item: -item[1]):
        print(f"  {phase:<44} {value:8.2f} s {100 * value / phases.seconds:5.1f} %")
    print(f"  'per batch, other' is {PER_BATCH_OTHER}")
    for name in phases.details["missing"]:
        print(f"  not found in the pipeline, so not split out: {name}")


def print_report(results: dict[str, Figures], setup: Setup) -> None:
    """Per-program figures, phases, output comparison, targets and the machine-readable line."""
    data = setup.data
    print(f"\ninput: {data.bytes / 1e6:,.1f} MB, {data.rows:,} rows; load now {_load()}")
    for name in ("guide", "count", "lean", "ftpipe", "ftpipe-2c", "phases", "flow"):
        if name in results:
            print(results[name].line())
    ftpipe, lean = results["ftpipe"], results["lean"]
    if "phases" in results:
        print_phases(results["phases"], ftpipe)
    print_comparison(setup, lean, results.get("flow"))
    guide = results.get("guide")
    vs_guide = guide.seconds / ftpipe.seconds if guide else float("nan")
    vs_lean = ftpipe.seconds / lean.seconds
    vs_count = ftpipe.seconds / results["count"].seconds
    rss = ftpipe.peak_rss_mb
    print(f"\nratio ftpipe speed / guide speed:      {vs_guide:.2f}")
    print(f"ratio ftpipe time / lean time:         {vs_lean:.2f}")
    print(f"ratio ftpipe time / count-loop time:   {vs_count:.2f}  (information)")
    if guide:
        print(_target("vs_guide", vs_guide, vs_guide >= TARGET_VS_GUIDE, ">=", TARGET_VS_GUIDE))
        two = results.get("ftpipe-2c")
        if two:
            value = guide.seconds / two.seconds
            ok = value >= TARGET_VS_GUIDE_TWO_CORES
            print(_target("vs_guide two cores", value, ok, ">=", TARGET_VS_GUIDE_TWO_CORES))
        else:
            print("target vs_guide two cores  skipped: no PrepareOptions field in WORKER_FIELDS")
    else:
        print("target vs_guide  skipped (--skip-guide)")
    print(_target("vs_lean", vs_lean, vs_lean <= TARGET_VS_LEAN, "<=", TARGET_VS_LEAN))
    size = f"(the target is for a 1 GB input; this input: {data.bytes / 1e6:,.0f} MB)"
    print(_target("peak_rss_mb", rss, rss <= TARGET_RSS_MB, "<=", TARGET_RSS_MB, size))
    print(f"prepare: vs_guide={vs_guide:.2f} vs_lean={vs_lean:.2f} peak_rss_mb={rss:.1f}")


# --- the run -----------------------------------------------------------------------------------


def _programs(args: argparse.Namespace, setup: Setup) -> dict[str, Callable[[], Figures]]:
    """The measurements this run makes, in the order they run."""
    programs: dict[str, Callable[[], Figures]] = {}
    if not args.skip_guide:
        programs["guide"] = lambda: measure_guide(setup)
    programs["count"] = lambda: measure_count(setup)
    programs["lean"] = lambda: measure_lean(setup)
    programs["ftpipe"] = lambda: measure_ftpipe(setup)
    if setup.workers_flag:
        programs["ftpipe-2c"] = lambda: measure_ftpipe(setup, "ftpipe-2c", setup.workers_flag, "2")
    if not args.skip_phases:
        programs["phases"] = lambda: measure_phases(setup)
    if not args.skip_flow:
        programs["flow"] = lambda: measure_flow(setup)
    return programs


def benchmark(args: argparse.Namespace, work: Path) -> None:
    """Generate the input, then measure every program, one at a time, `--repeat` times."""
    csv_path = work / f"bench_{args.size_mb}mb_seed{args.seed}.csv"
    print(f"generating {args.size_mb} MB in {csv_path} (seed {args.seed}) ...", flush=True)
    started = time.perf_counter()
    data = generate_csv(csv_path, args.size_mb * 1_000_000, args.seed)
    print(
        f"generated {data.bytes / 1e6:,.1f} MB, {data.rows:,} rows in "
        f"{time.perf_counter() - started:.1f} s (not measured)",
        flush=True,
    )
    counter, why = choose_counter(csv_path)
    flag = workers_flag()
    setup = Setup(data, work, counter, token_limit(), flag)
    print(f"exact counter for count and lean: {counter} ({why}); token limit {setup.limit:,}")
    print(f"two cores: {'ftpipe ' + flag + ' 2' if flag else 'no knob in PrepareOptions yet'}")
    print(f"load average before: {_load()}", flush=True)
    runs: dict[str, list[Figures]] = defaultdict(list)
    for _ in range(args.repeat):
        for name, measure in _programs(args, setup).items():
            runs[name].append(measure())
            print(f"  {runs[name][-1].line()}", flush=True)
    print(f"load average after: {_load()}")
    print_report({name: _best(figures) for name, figures in runs.items()}, setup)


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
    parser.add_argument(
        "--repeat", type=int, default=1, help="Run each program N times; report the fastest."
    )
    parser.add_argument(
        "--skip-guide", action="store_true", help="Skip the guide (it holds the file in RAM)."
    )
    parser.add_argument(
        "--skip-phases", action="store_true", help="Skip the instrumented CLI run (phases)."
    )
    parser.add_argument(
        "--skip-flow", action="store_true", help="Skip the Prefect flow (and its server)."
    )
    children = ("guide", "count", "lean", "phases", "flow")
    parser.add_argument("--reference", choices=children, help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--counter", default="tiktoken", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_reference(args: argparse.Namespace, started: float) -> dict[str, Any]:
    """One child's work; its result is printed as the last stdout line."""
    if args.reference == "guide":
        return run_guide(args.csv, args.out)
    if args.reference == "count":
        return run_count(args.csv, args.counter)
    if args.reference == "lean":
        return run_lean(args.csv, args.out, args.counter, args.limit)
    if args.reference == "phases":
        return run_phases(args.csv, args.out, started)
    return run_flow(args.csv, args.out)


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    args = _parse_args(argv)
    if args.reference:
        print(json.dumps(run_reference(args, started)))
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

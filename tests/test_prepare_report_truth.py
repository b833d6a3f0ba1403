"""The report tells the truth: file lines for dialogue rejects, which rules ran on every row and
which hold by construction, what redaction replaced, and header-less label-mode CSV text."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ftpipe.dialogue_log import DialogueLog
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import FORMAT_SPOT_CHECK, PrepareResult, prepare
from ftpipe.prepare.sources import resolve_sources
from tests.conftest import SAMPLES

DIALOGUES = SAMPLES / "dialogues" / "desk_2026-11-20.json"


def run(inputs: list[Path], out: Path, **options: Any) -> PrepareResult:
    csv_text = options.pop("csv_text", None)
    return prepare(inputs, PrepareOptions(**options), csv_text=csv_text, out_root=out)


def rejects(result: PrepareResult) -> list[dict[str, str]]:
    with (result.out_dir / "rejects.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def rules(result: PrepareResult, check: str) -> list[dict[str, Any]]:
    return [rule for rule in result.report["rules"] if rule["check"] == check]


def user_texts(result: PrepareResult) -> list[str]:
    lines = result.train_path.read_text(encoding="utf-8").splitlines()
    if result.validation_path:
        lines += result.validation_path.read_text(encoding="utf-8").splitlines()
    return sorted(
        m["content"] for line in lines for m in json.loads(line)["messages"] if m["role"] == "user"
    )


def faq_csv(path: Path, rows: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("question", "answer"))
        writer.writerows(
            (f"When does boat {i} leave?", f"At {i % 24:02d}:15.") for i in range(rows)
        )
    return path


# --- dialogue rejects name the file line -----------------------------------------------------


def test_a_dialogue_reject_names_the_line_its_turn_starts_on(tmp_path: Path) -> None:
    result = run([DIALOGUES], tmp_path)
    [reject] = rejects(result)
    line = int(reject["line"])
    assert line != 37  # the turn's number, which earlier versions printed
    lines = DIALOGUES.read_text(encoding="utf-8").splitlines()
    assert lines[line - 1].strip() == "{"
    assert lines[line + 1].strip() == '"content": "   ",'


def jsonl_log(folder: Path) -> DialogueLog:
    """The sample dialogues, migrated into the JSONL log the chat task now writes."""
    folder.mkdir(parents=True)
    (folder / "dialogues.json").write_bytes(DIALOGUES.read_bytes())
    log = DialogueLog(folder / "dialogues.jsonl")
    assert log.migrate()
    return log


def test_a_jsonl_dialogue_log_is_prepared_like_the_list_it_came_from(tmp_path: Path) -> None:
    log = jsonl_log(tmp_path / "logs")
    assert [s.kind for s in resolve_sources([tmp_path / "logs"]).sources] == ["dialogues"]
    from_list = run([DIALOGUES], tmp_path / "a")
    from_jsonl = run([log.path], tmp_path / "b")
    assert from_jsonl.report["sources"][0]["kind"] == "dialogues"
    assert from_jsonl.train_path.read_bytes() == from_list.train_path.read_bytes()
    assert [(r["line"], r["rule"]) for r in rejects(from_jsonl)] == [("37", "empty_content")]


def test_a_torn_line_of_a_jsonl_log_is_one_reject_and_the_rest_is_kept(tmp_path: Path) -> None:
    log = jsonl_log(tmp_path / "logs")
    with log.path.open("ab") as handle:
        handle.write(b'{"role": "user", "content": "cut o')  # the writer died here
    result = run([tmp_path / "logs"], tmp_path / "out")
    assert [(r["line"], r["rule"]) for r in rejects(result)] == [
        ("37", "empty_content"),
        ("38", "invalid_json"),
    ]
    assert result.report["counts"]["input_rows"] == 38
    assert result.report["counts"]["examples"] == 12
    [invalid] = [r for r in rules(result, "dialogues") if r["rule"] == "invalid_json"]
    assert (invalid["failed_rows"], invalid["checked_rows"]) == (1, 38)


def test_chat_jsonl_stays_chat_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    path.write_text(json.dumps({"messages": messages}) + "\n", encoding="utf-8")
    assert [s.kind for s in resolve_sources([path]).sources] == ["jsonl"]


# --- which rules ran on every row --------------------------------------------------------------


def test_csv_format_rules_say_they_hold_by_construction_and_were_sampled(tmp_path: Path) -> None:
    result = run([faq_csv(tmp_path / "faq.csv", 120)], tmp_path / "out")
    for rule in rules(result, "format"):
        assert rule["failed_rows"] == 0
        assert rule["result"] == "holds by construction, checked on a sample"
        assert (rule["by_construction_rows"], rule["sampled_rows"]) == (120, FORMAT_SPOT_CHECK)
        assert rule["checked_rows"] == 0
        assert rule["coverage"] == f"{FORMAT_SPOT_CHECK} of 120 checked; 70 by construction"
    for rule in rules(result, "gx:column_pairs") + rules(result, "limits"):
        assert (rule["result"], rule["checked_rows"]) == ("pass", 120)
    report_md = (result.out_dir / "report.md").read_text(encoding="utf-8")
    assert "| 0 | 50 of 120 checked; 70 by construction | holds by construction, checked on a " in (
        report_md
    )


def test_chat_jsonl_format_rules_ran_on_every_row(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(30):
            messages = [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": f"Answer {i}."},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    result = run([path], tmp_path / "out")
    for rule in rules(result, "format"):
        assert (rule["result"], rule["checked_rows"], rule["coverage"]) == (
            "pass",
            30,
            "all 30 checked",
        )


def test_a_model_without_a_token_limit_is_refused_before_any_rule_runs(tmp_path: Path) -> None:
    """A model the catalogue does not know has no token limit: refused up front, never a limit
    rule that shows "pass" against no limit."""
    with pytest.raises(ValidationError, match="my-own-model"):
        run([faq_csv(tmp_path / "faq.csv", 20)], tmp_path / "out", model="my-own-model")
    assert not (tmp_path / "out").exists()


# --- redaction reports what it replaced --------------------------------------------------------


def test_redaction_counts_what_it_replaced(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    log = DialogueLog(folder / "dialogues.jsonl")
    turns = []
    for i in range(12):
        turns += [
            {"role": "system", "content": "You are the ferry desk."},
            {
                "role": "user",
                "content": f"Mail me at a{i}@example.com or call +44 20 7946 09{i:02d}",
            },
            {"role": "assistant", "content": f"Noted, passenger {i}."},
        ]
    turns[1]["content"] += ", card 4111 1111 1111 1111"
    log.append(turns)
    result = run([folder], tmp_path / "out", redact=True)
    assert result.report["redaction"] == {
        "applies_to": "dialogues",
        "replaced": {"email": 12, "card": 1, "phone": 12},
        "total": 25,
    }
    note = result.report["sources"][0]["notes"][-1]
    assert note == "redacted: e-mail addresses 12, card numbers 1, phone numbers 12"
    report_md = (result.out_dir / "report.md").read_text(encoding="utf-8")
    assert "## Redaction" in report_md and "| e-mail addresses | 12 |" in report_md


def test_redaction_that_finds_nothing_says_so(tmp_path: Path) -> None:
    result = run([DIALOGUES], tmp_path, redact=True, sentiments=["positive", "neutral"])
    assert result.report["redaction"]["replaced"] == {"email": 1, "card": 0, "phone": 0}
    log = jsonl_log(tmp_path / "logs")
    text = log.path.read_text(encoding="utf-8").replace("anna.berg@example.com", "the desk")
    log.path.write_text(text, encoding="utf-8")
    clean = run([log.path], tmp_path / "clean", redact=True)
    assert clean.report["redaction"]["total"] == 0
    assert "redaction found no" in clean.report["sources"][0]["notes"][-1]
    assert "Personal data in dialogues: nothing to replace." in (
        (clean.out_dir / "report.md").read_text(encoding="utf-8")
    )


def test_no_redaction_asked_no_redaction_claimed(tmp_path: Path) -> None:
    result = run([DIALOGUES], tmp_path)
    assert result.report["redaction"] is None
    assert not any("redact" in note for note in result.report["sources"][0]["notes"])
    assert "## Redaction" not in (result.out_dir / "report.md").read_text(encoding="utf-8")


# --- header-less CSV text in label mode ---------------------------------------------------------


REVIEWS = ["Lovely trip", "Great staff, friendly crew"] + [f"Nice crossing {i}" for i in range(10)]


def test_label_mode_csv_text_without_a_header_keeps_its_first_line(tmp_path: Path) -> None:
    text = "\n".join(REVIEWS) + "\n"
    result = run([], tmp_path, csv_text=text, label="positive")
    assert user_texts(result) == sorted(REVIEWS)
    assert result.report["counts"]["input_rows"] == 12
    assert "no header row: every line is a text" in result.report["sources"][0]["notes"]


def test_label_mode_csv_text_with_a_text_header_still_uses_it(tmp_path: Path) -> None:
    text = "Text\n" + "\n".join(f'"{review}"' for review in REVIEWS) + "\n"
    result = run([], tmp_path, csv_text=text, label="positive")
    assert user_texts(result) == sorted(REVIEWS)
    named = run(
        [],
        tmp_path / "b",
        csv_text="Review Body\n" + "\n".join(REVIEWS[2:]) + "\n" * 3,
        label="negative",
        text_column="review body",
    )
    assert user_texts(named) == sorted(REVIEWS[2:])

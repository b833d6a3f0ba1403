"""`prepare()` end to end on real files: counts, rejects, outputs, split, limits and failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from ftpipe import tokens
from ftpipe.chat_format import check_jsonl_file
from ftpipe.errors import InputError
from ftpipe.estimate import default_epochs
from ftpipe.prepare.options import DEFAULT_LABEL_INSTRUCTION, PrepareOptions
from ftpipe.prepare.pipeline import PrepareFailed, PrepareResult, prepare
from tests.conftest import SAMPLES, StartServer, strict_client

DATA = Path(__file__).parent / "data" / "prepare"
CSV_DIR = SAMPLES / "csv"
SUPPORT = CSV_DIR / "support_export.csv"
DIALOGUES = SAMPLES / "dialogues" / "desk_2026-11-20.json"
REVIEWS = SAMPLES / "reviews" / "reviews.csv"
SMALL_LIMIT_MODEL = "gpt-3.5-turbo-0613"  # 4096 training tokens per example
REJECTS_HEADER = ["source", "line", "column", "rule", "value"]


# -- helpers ---------------------------------------------------------------------------------


def run(inputs: list[Path | str], out: Path, **options: Any) -> PrepareResult:
    csv_text = options.pop("csv_text", None)
    progress = options.pop("progress", None)
    return prepare(
        inputs, PrepareOptions(**options), csv_text=csv_text, out_root=out, progress=progress
    )


def write_csv(
    path: Path, rows: list[tuple[str, ...]], header: tuple[str, ...] = ("question", "answer")
) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def qa_rows(count: int) -> list[tuple[str, str]]:
    return [
        (f"When does sailing {i} leave?", f"Sailing {i} leaves at {i % 24:02d}:15.")
        for i in range(count)
    ]


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def write_chat_jsonl(path: Path, rows: list[tuple[str, str]]) -> Path:
    """One user/assistant chat example per line."""
    with path.open("w", encoding="utf-8") as handle:
        for user, assistant in rows:
            messages = [
                {"role": "user", "content": user},
                {"role": "assistant", "content": assistant},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def lines_of(path: Path | None) -> list[str]:
    """JSON lines split at "\n" only: U+2028 and friends may stand raw inside a line."""
    return path.read_text(encoding="utf-8").removesuffix("\n").split("\n") if path else []


def example_lines(result: PrepareResult) -> list[str]:
    return lines_of(result.train_path) + lines_of(result.validation_path)


def examples(result: PrepareResult) -> list[list[dict[str, Any]]]:
    return [json.loads(line)["messages"] for line in example_lines(result)]


def read_rejects(folder: Path) -> list[dict[str, str]]:
    with (folder / "rejects.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == REJECTS_HEADER
        return list(reader)


def read_report(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report.json").read_text(encoding="utf-8"))


def assert_no_output(out: Path) -> None:
    """An unreadable input leaves no dataset folder (and no scratch folder) behind."""
    assert not out.exists() or list(out.iterdir()) == []


def long_text(min_tokens: int, model: str = SMALL_LIMIT_MODEL) -> str:
    """A little over `min_tokens` tokens of text (each word is about 2.6 tokens)."""
    text = " ".join(f"harbour{i}" for i in range(min_tokens * 2 // 5))
    assert min_tokens <= tokens.count_tokens(text, model) < min_tokens * 1.1
    return text


# -- the sample CSV folder -------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory: pytest.TempPathFactory) -> PrepareResult:
    return run([CSV_DIR], tmp_path_factory.mktemp("sample-csv"))


def test_sample_csv_counts(sample_csv: PrepareResult) -> None:
    counts = sample_csv.report["counts"]
    assert counts == {
        "input_rows": 22,
        "rejected": 1,
        "duplicates_dropped": 1,
        "truncated": 0,
        "over_token_limit_rejected": 0,
        "examples": 20,
        "train": 18,
        "validation": 2,
    }
    assert len(lines_of(sample_csv.train_path)) == 18
    assert len(lines_of(sample_csv.validation_path)) == 2
    assert sample_csv.report["status"] == "ok"
    assert sample_csv.report["error"] is None
    assert sample_csv.report["rejects_by_rule"] == {"assistant_empty": 1, "duplicate": 1}


def test_sample_csv_rejects_name_file_line_column_and_rule(sample_csv: PrepareResult) -> None:
    rejects = read_rejects(sample_csv.out_dir)
    assert [(Path(r["source"]), r["line"], r["column"], r["rule"]) for r in rejects] == [
        (SUPPORT, "6", "Completion", "assistant_empty"),
        (SUPPORT, "7", "*", "duplicate"),
    ]
    assert rejects[0]["value"] == ""
    assert "storm warning" in rejects[1]["value"]


def test_sample_csv_outputs_and_report_files(sample_csv: PrepareResult) -> None:
    folder = sample_csv.out_dir
    assert folder.name == sample_csv.dataset_id
    assert sorted(p.name for p in folder.iterdir()) == [
        "data_docs",  # GX Data Docs of the run's validation
        "rejects.csv",
        "report.json",
        "report.md",
        "train.jsonl",
        "validation.jsonl",
    ]
    assert (folder / "data_docs" / "index.html").is_file()
    assert not list(folder.parent.glob(".*partial"))
    assert read_report(folder) == sample_csv.report
    outputs = sample_csv.report["outputs"]
    assert Path(outputs["train"]) == sample_csv.train_path
    assert Path(outputs["validation"]) == sample_csv.validation_path
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert f"# Dataset {sample_csv.dataset_id}" in markdown
    assert "status **ok**" in markdown
    assert "assistant_empty" in markdown


def test_sample_csv_notes_the_dialect_of_each_file(sample_csv: PrepareResult) -> None:
    sources = {Path(s["name"]).name: s for s in sample_csv.report["sources"]}
    assert sources["faq.csv"]["rows"] == 16
    assert sources["faq.csv"]["examples"] == 16
    support = sources["support_export.csv"]
    assert (support["rows"], support["examples"], support["rejected"]) == (6, 4, 1)
    notes = " ".join(support["notes"])
    assert "'Prompt'" in notes and "'Completion'" in notes
    assert "byte-order mark" in notes
    assert "delimiter ';'" in notes


def test_sample_csv_keeps_the_multi_line_cell(sample_csv: PrepareResult) -> None:
    by_question = {m[0]["content"]: m for m in examples(sample_csv)}
    messages = by_question["Do you have a lost and found?"]
    assert messages == [
        {"role": "user", "content": "Do you have a lost and found?"},
        {
            "role": "assistant",
            "content": "Yes. Lost items are kept for 30 days at the Pier 3 office.\n"
            "Call ahead to check before you come.",
        },
    ]
    assert "Can I bring an e-scooter?" not in by_question
    questions = [m[0]["content"] for m in examples(sample_csv)]
    assert questions.count("Is the ferry running during a storm warning?") == 1


def test_sample_csv_token_counts_are_the_tokenizers(sample_csv: PrepareResult) -> None:
    counts = [tokens.count_message_tokens(m, "gpt-4o-mini") for m in examples(sample_csv)]
    summary = sample_csv.report["tokens"]
    assert summary["examples"] == 20
    assert summary["total"] == sum(counts)
    assert (summary["min"], summary["max"]) == (min(counts), max(counts))
    assert sum(h["examples"] for h in summary["histogram"]) == 20


def test_sample_csv_cost_estimate_covers_training_examples_only(sample_csv: PrepareResult) -> None:
    train = [json.loads(line)["messages"] for line in lines_of(sample_csv.train_path)]
    cost = sample_csv.report["cost"]
    assert cost["examples"] == 18
    assert cost["epochs"] == default_epochs(18)
    assert cost["tokens_per_epoch"] == sum(tokens.count_message_tokens(m) for m in train)
    assert cost["billed_tokens"] == cost["tokens_per_epoch"] * cost["epochs"]
    assert cost["model"] == "gpt-4o-mini-2024-07-18"


def test_sample_csv_files_pass_the_chat_format_check(sample_csv: PrepareResult) -> None:
    for path in (sample_csv.train_path, sample_csv.validation_path):
        assert path is not None
        check = check_jsonl_file(path, "gpt-4o-mini")
        assert check.bad == []
        assert check.too_long == []
    train_check = check_jsonl_file(sample_csv.train_path, "gpt-4o-mini")
    assert train_check.ok, train_check.first_error()
    assert train_check.examples == 18


def test_sample_csv_lines_are_json_dumps_output(sample_csv: PrepareResult) -> None:
    for line in example_lines(sample_csv):
        assert line == json.dumps(json.loads(line), ensure_ascii=False)


def test_sample_csv_fine_tunes_on_the_local_server(
    sample_csv: PrepareResult, start_server: StartServer
) -> None:
    client = strict_client(start_server().base_url)
    training = client.files.create(file=sample_csv.train_path, purpose="fine-tune")
    assert sample_csv.validation_path is not None
    validation = client.files.create(file=sample_csv.validation_path, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training.id, validation_file=validation.id
    )
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded", job.error
    assert job.error is None
    assert job.fine_tuned_model
    cost = sample_csv.report["cost"]
    assert job.hyperparameters.n_epochs == cost["epochs"]
    assert job.trained_tokens == cost["billed_tokens"]


# -- dialogues -------------------------------------------------------------------------------


def test_dialogue_log_becomes_system_user_assistant_examples(tmp_path: Path) -> None:
    result = run([DIALOGUES], tmp_path)
    counts = result.report["counts"]
    assert (counts["input_rows"], counts["examples"], counts["rejected"]) == (37, 12, 1)
    for messages in examples(result):
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert set(messages[0]) == {"role", "content"}  # sentiment, model, timestamp dropped
        assert messages[0]["content"].startswith("You are Ferry")
    rejects = read_rejects(result.out_dir)
    assert [(r["line"], r["column"], r["rule"]) for r in rejects] == [
        ("206", "content", "empty_content")  # the file line the turn starts on, not turn 37
    ]
    assert any("anna.berg@example.com" in line for line in example_lines(result))
    assert check_jsonl_file(result.train_path, "gpt-4o-mini").ok


def test_dialogue_sentiment_filter_and_redaction(tmp_path: Path) -> None:
    result = run([DIALOGUES], tmp_path, sentiments=["positive", "neutral"], redact=True)
    counts = result.report["counts"]
    assert counts["examples"] == 11
    assert counts["rejected"] == 1  # the filtered exchange is not counted against the run
    rejects = read_rejects(result.out_dir)
    assert [(r["line"], r["column"], r["rule"], r["value"]) for r in rejects] == [
        ("97", "sentiment", "sentiment_filtered", "negative"),
        ("206", "content", "empty_content", "   "),
    ]
    text = "\n".join(example_lines(result))
    assert "storm warning" not in text
    assert "example.com" not in text
    users = [m[1]["content"] for m in examples(result)]
    assert "Are dogs allowed on the ferry? You can reach me at [EMAIL]." in users
    notes = result.report["sources"][0]["notes"]
    assert any("redacted" in note for note in notes)


def test_dialogue_filter_leaving_too_few_examples_fails(tmp_path: Path) -> None:
    with pytest.raises(PrepareFailed, match="only 6 training examples"):
        run([DIALOGUES], tmp_path, sentiments=["positive"])


# -- chat JSONL, CSV text, encodings, delimiters, labels -------------------------------------


def test_chat_jsonl_bad_lines_are_rejected_with_line_and_rule(tmp_path: Path) -> None:
    source = DATA / "chat_with_bad_lines.jsonl"
    result = run([source], tmp_path)
    counts = result.report["counts"]
    assert (counts["input_rows"], counts["rejected"], counts["examples"]) == (33, 3, 30)
    rejects = read_rejects(result.out_dir)
    assert [(r["source"], r["line"], r["rule"]) for r in rejects] == [
        (str(source), "5", "invalid_json"),
        (str(source), "12", "example_missing_assistant_message"),
        (str(source), "20", "role_unknown"),
    ]
    assert rejects[2]["value"] == "captain"
    expected = {
        json.dumps(json.loads(line), ensure_ascii=False)
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1)
        if number not in (5, 12, 16, 20)
    }
    assert set(example_lines(result)) == expected
    assert any("Überfahrt" in line for line in example_lines(result))


def test_csv_text_input(tmp_path: Path) -> None:
    rows = [*qa_rows(12), ("Is there a night ferry?", " ")]
    text = "prompt,completion\n" + "".join(f"{q},{a}\n" for q, a in rows)
    result = run([], tmp_path, csv_text=text)
    counts = result.report["counts"]
    assert (counts["input_rows"], counts["examples"], counts["rejected"]) == (13, 12, 1)
    assert result.report["sources"][0]["kind"] == "csv_text"
    rejects = read_rejects(result.out_dir)
    assert [(r["source"], r["line"], r["column"], r["rule"]) for r in rejects] == [
        ("<csv text>", "14", "completion", "assistant_empty")
    ]
    assert sorted(m[0]["content"] for m in examples(result)) == sorted(q for q, _ in qa_rows(12))


def test_cp1251_csv_is_decoded(tmp_path: Path) -> None:
    result = run([DATA / "faq_cp1251.csv"], tmp_path)
    assert result.report["counts"]["examples"] == 12
    assert any("cp1251" in note for note in result.report["sources"][0]["notes"])
    by_question = {m[0]["content"]: m[1]["content"] for m in examples(result)}
    assert by_question["Когда отходит первый паром?"] == (
        "Первый паром отходит в 06:15 от третьего причала."
    )
    raw = result.train_path.read_bytes().decode("utf-8")  # UTF-8 out, not escaped
    assert "паром" in raw and "\\u04" not in raw


@pytest.mark.parametrize("name", ["timetable.tsv", "timetable_tabs.csv"])
def test_tab_separated_csv(tmp_path: Path, name: str) -> None:
    source = tmp_path / name
    source.write_bytes((DATA / "timetable.tsv").read_bytes())
    result = run([source], tmp_path / "out")
    assert result.report["counts"]["examples"] == 12
    assert any("delimiter '\\t'" in note for note in result.report["sources"][0]["notes"])
    by_question = {m[0]["content"]: m[1]["content"] for m in examples(result)}
    assert by_question["Is sailing 3 on time, or delayed; and by how much?"] == (
        "Sailing 3 is on time, as planned; no delay."
    )


def test_labelled_csv_with_label_flag(tmp_path: Path) -> None:
    result = run([REVIEWS], tmp_path, label="negative")
    with REVIEWS.open(newline="", encoding="utf-8") as handle:
        texts = sorted(row["text"] for row in csv.DictReader(handle))
    assert result.report["counts"]["examples"] == len(texts) == 120
    got = examples(result)
    assert all([m["role"] for m in messages] == ["system", "user", "assistant"] for messages in got)
    assert {messages[0]["content"] for messages in got} == {DEFAULT_LABEL_INSTRUCTION}
    assert {messages[2]["content"] for messages in got} == {"negative"}
    assert sorted(messages[1]["content"] for messages in got) == texts


def test_labelled_csv_with_label_column(tmp_path: Path) -> None:
    with REVIEWS.open(newline="", encoding="utf-8") as handle:
        expected = {row["text"]: row["label"] for row in csv.DictReader(handle)}
    result = run([REVIEWS], tmp_path)
    assert {m[1]["content"]: m[2]["content"] for m in examples(result)} == expected


def test_label_column_is_trimmed_lower_cased_and_checked(tmp_path: Path) -> None:
    rows = [(f"Crossing {i} was fine.", " Positive " if i % 2 else "NEGATIVE") for i in range(20)]
    rows.append(("The café was closed.", "meh"))
    source = write_csv(tmp_path / "labels.csv", rows, ("Review", "Verdict"))
    result = run([source], tmp_path / "out", label_column="verdict")
    assert result.report["counts"]["examples"] == 20
    assert {m[2]["content"] for m in examples(result)} == {"positive", "negative"}
    rejects = read_rejects(result.out_dir)
    assert [(r["line"], r["column"], r["rule"], r["value"]) for r in rejects] == [
        ("22", "Verdict", "label_unknown", "meh")
    ]


def test_explicit_column_map_and_system_column(tmp_path: Path) -> None:
    rows = [("Be brief." if i % 2 else "", f"Q{i}?", f"A{i}.") for i in range(12)]
    source = write_csv(tmp_path / "map.csv", rows, ("Persona", "Customer", "Agent"))
    result = run(
        [source],
        tmp_path / "out",
        column_map={"user": "customer", "assistant": "agent", "system": "persona"},
    )
    got = {m[-2]["content"]: m for m in examples(result)}
    assert got["Q1?"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q1?"},
        {"role": "assistant", "content": "A1."},
    ]
    assert got["Q2?"] == [  # an empty system cell means no system message
        {"role": "user", "content": "Q2?"},
        {"role": "assistant", "content": "A2."},
    ]
    total = sum(tokens.count_message_tokens(m) for m in got.values())
    assert result.report["tokens"]["total"] == total


def test_special_characters_render_exactly(tmp_path: Path) -> None:
    odd = [
        ('He said "hi" \\ then left', "tab\there"),
        ("multi\nline\r\nquestion", "a\u2028b"),
        ("control \x01 \x1f \x7f chars", "emoji 🚢 ü ß 渡轮"),
        ("backslash-n \\n literal", "</script> & <b>"),
    ]
    rows = odd + qa_rows(10)
    source = write_csv(tmp_path / "odd.csv", rows)
    result = run([source], tmp_path / "out", validation_share=0)
    for line in example_lines(result):
        assert line == json.dumps(json.loads(line), ensure_ascii=False)
    got = {m[0]["content"]: m[1]["content"] for m in examples(result)}
    assert got == {q: a for q, a in rows}
    summary = result.report["tokens"]
    assert summary["total"] == sum(tokens.count_message_tokens(m) for m in examples(result))


def test_all_sample_kinds_together(tmp_path: Path) -> None:
    result = run([SAMPLES], tmp_path)
    kinds = sorted({s["kind"] for s in result.report["sources"]})
    assert kinds == ["csv", "dialogues", "jsonl"]
    got = examples(result)
    assert result.report["counts"]["examples"] == len(got)
    assert len(set(example_lines(result))) == len(got)  # duplicates across files dropped
    assert result.report["tokens"]["total"] == sum(tokens.count_message_tokens(m) for m in got)
    assert check_jsonl_file(result.train_path, "gpt-4o-mini").ok


# -- determinism and the split ---------------------------------------------------------------

OUTPUT_FILES = ("train.jsonl", "validation.jsonl", "rejects.csv")


def test_same_input_and_options_give_the_same_dataset(tmp_path: Path) -> None:
    first = run([CSV_DIR], tmp_path / "a")
    second = run([CSV_DIR], tmp_path / "b")
    assert first.dataset_id == second.dataset_id
    for name in OUTPUT_FILES:
        assert (first.out_dir / name).read_bytes() == (second.out_dir / name).read_bytes(), name
    one, two = read_report(first.out_dir), read_report(second.out_dir)
    for report in (one, two):
        report.pop("created_at")
        report.pop("outputs")
    assert one == two
    again = run([CSV_DIR], tmp_path / "a")  # a re-run replaces the folder with the same bytes
    assert again.out_dir == first.out_dir
    assert again.train_path.read_bytes() == second.train_path.read_bytes()


def test_seed_changes_id_and_validation_set(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "faq.csv", qa_rows(60))
    first = run([source], tmp_path / "out", seed=1)
    second = run([source], tmp_path / "out", seed=2)
    assert first.dataset_id != second.dataset_id
    assert first.out_dir != second.out_dir and first.out_dir.exists()
    one, two = lines_of(first.validation_path), lines_of(second.validation_path)
    assert len(one) == len(two) == 6
    assert set(one) != set(two)
    assert sorted(example_lines(first)) == sorted(example_lines(second))


def test_dataset_id_follows_input_bytes_and_options(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "faq.csv", qa_rows(20))
    base = run([source], tmp_path / "out").dataset_id
    assert run([source], tmp_path / "out", system_instruction="Hi").dataset_id != base
    assert run([source], tmp_path / "out", model="gpt-4.1-mini").dataset_id != base
    write_csv(source, qa_rows(21))
    assert run([source], tmp_path / "out").dataset_id != base


def test_rerun_with_the_output_root_inside_the_input_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_csv(data / "faq.csv", qa_rows(20))
    first = run([data], data / "processed")
    again = run([data], data / "processed")
    assert again.dataset_id == first.dataset_id
    assert again.report["counts"] == first.report["counts"]


def test_folders_skip_hidden_files_and_list_ignored_ones(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    (inputs / ".cache").mkdir(parents=True)
    write_csv(inputs / "faq.csv", qa_rows(12))
    write_csv(inputs / ".backup.csv", [("broken", "row", "extra")])
    write_csv(inputs / ".cache" / "old.csv", [("broken", "row", "extra")])
    write_bytes(inputs / "notes.txt", b"not read")
    result = run([inputs], tmp_path / "out")
    assert [Path(s["name"]).name for s in result.report["sources"]] == ["faq.csv"]
    assert result.report["ignored_files"] == [str(inputs / "notes.txt")]
    assert result.report["counts"]["examples"] == 12


@pytest.mark.parametrize(
    ("rows", "share", "validation"),
    [
        (10, 0.1, 0),  # 1 would leave 9 to train
        (11, 0.1, 1),
        (12, 0.1, 1),
        (30, 0.1, 3),
        (100, 0.1, 10),
        (30, 0.9, 20),  # at least 10 stay in train
        (2100, 0.5, 1000),  # at most 1000
        (30, 0.0, 0),
    ],
)
def test_validation_size(tmp_path: Path, rows: int, share: float, validation: int) -> None:
    source = write_csv(tmp_path / "faq.csv", qa_rows(rows))
    result = run([source], tmp_path / "out", validation_share=share)
    counts = result.report["counts"]
    assert (counts["validation"], counts["train"]) == (validation, rows - validation)
    train, held_out = lines_of(result.train_path), lines_of(result.validation_path)
    assert (len(train), len(held_out)) == (rows - validation, validation)
    assert not set(train) & set(held_out)
    if validation == 0:
        assert result.validation_path is None
        assert not (result.out_dir / "validation.jsonl").exists()
        assert result.report["outputs"]["validation"] is None


def test_split_does_not_depend_on_how_rows_are_spread_over_files(tmp_path: Path) -> None:
    rows = qa_rows(1500)
    whole = tmp_path / "whole"
    parts = tmp_path / "parts"
    whole.mkdir()
    parts.mkdir()
    write_csv(whole / "all.csv", rows)
    for index in range(3):
        write_csv(parts / f"part{index}.csv", rows[index * 500 : (index + 1) * 500])
    one = run([whole], tmp_path / "out", validation_share=0.9)
    three = run([parts], tmp_path / "out", validation_share=0.9)
    assert lines_of(one.validation_path) == lines_of(three.validation_path)
    assert len(lines_of(one.validation_path)) == 1000
    assert sorted(lines_of(one.train_path)) == sorted(lines_of(three.train_path))


# -- failures --------------------------------------------------------------------------------


def test_too_many_rejects_fails_with_report_and_rejects_but_no_jsonl(tmp_path: Path) -> None:
    rows = [*qa_rows(20), ("No answer 1?", ""), ("No answer 2?", " "), ("", "No question")]
    source = write_csv(tmp_path / "faq.csv", rows)
    out = tmp_path / "out"
    with pytest.raises(PrepareFailed) as caught:
        run([source], out)
    message = str(caught.value)
    assert "3 of 23 rows were rejected" in message
    assert "2 allowed" in message
    assert "rejects.csv" in message
    assert isinstance(caught.value, InputError)
    [folder] = list(out.iterdir())
    assert str(folder / "rejects.csv") in message
    assert sorted(p.name for p in folder.iterdir()) == [
        "data_docs",  # what GX made of the rules that failed
        "rejects.csv",
        "report.json",
        "report.md",
    ]
    report = read_report(folder)
    assert report["status"] == "failed"
    assert report["error"] in message
    assert report["outputs"]["train"] is None
    assert report["outputs"]["validation"] is None
    assert report["counts"]["rejected"] == 3
    assert "status **failed**" in (folder / "report.md").read_text(encoding="utf-8")
    assert [(r["line"], r["rule"]) for r in read_rejects(folder)] == [
        ("22", "assistant_empty"),
        ("23", "assistant_empty"),
        ("24", "user_empty"),
    ]


def test_max_rejects_raises_the_threshold(tmp_path: Path) -> None:
    rows = [*qa_rows(20), ("No answer 1?", ""), ("No answer 2?", ""), ("No answer 3?", "")]
    source = write_csv(tmp_path / "faq.csv", rows)
    result = run([source], tmp_path / "out", max_rejects=3)
    assert result.report["counts"]["rejected"] == 3
    assert result.report["counts"]["examples"] == 20
    with pytest.raises(PrepareFailed, match="more than the 2 allowed"):
        run([source], tmp_path / "out", max_rejects=2)


def test_max_rejects_zero_allows_none(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "faq.csv", [*qa_rows(30), ("No answer?", "")])
    assert run([source], tmp_path / "out").report["counts"]["rejected"] == 1
    with pytest.raises(PrepareFailed, match="1 of 31 rows were rejected"):
        run([source], tmp_path / "out", max_rejects=0)


def test_duplicates_do_not_count_as_rejects(tmp_path: Path) -> None:
    rows = qa_rows(20) + qa_rows(8)  # 8 exact duplicates: 40% of the rows
    source = write_csv(tmp_path / "faq.csv", rows)
    result = run([source], tmp_path / "out")
    counts = result.report["counts"]
    assert (counts["rejected"], counts["duplicates_dropped"], counts["examples"]) == (0, 8, 20)
    rejects = read_rejects(result.out_dir)
    assert [r["line"] for r in rejects] == [str(n) for n in range(22, 30)]
    assert {r["rule"] for r in rejects} == {"duplicate"}


def test_fewer_than_ten_examples_fails(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "faq.csv", qa_rows(9))
    out = tmp_path / "out"
    with pytest.raises(PrepareFailed) as caught:
        run([source], out)
    assert "only 9 training examples" in str(caught.value)
    assert "at least 10" in str(caught.value)
    [folder] = list(out.iterdir())
    assert not (folder / "train.jsonl").exists()
    assert read_report(folder)["status"] == "failed"


def _empty(folder: Path) -> Path:
    return write_bytes(folder / "empty.csv", b"")


def _header_only(folder: Path) -> Path:
    return write_bytes(folder / "header.csv", b"question,answer\n")


def _binary(folder: Path) -> Path:
    return write_bytes(folder / "photo.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 8)


def _ragged(folder: Path) -> Path:
    return write_bytes(folder / "ragged.csv", b"question,answer\nq1,a1\nq2,a2,extra\nq3,a3\n")


def _missing(folder: Path) -> Path:
    return folder / "missing.csv"


def _no_usable_files(folder: Path) -> Path:
    inputs = folder / "inputs"
    inputs.mkdir()
    write_bytes(inputs / "notes.txt", b"question,answer\nq,a\n")
    write_bytes(inputs / "readme.md", b"# nothing here")
    return inputs


def _bad_columns(folder: Path) -> Path:
    return write_csv(folder / "columns.csv", qa_rows(12), ("body", "rating"))


def _bad_dialogue(folder: Path) -> Path:
    return write_bytes(folder / "log.json", b'{"role": "user"}')


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_empty, "is empty"),
        (_header_only, "has a header but no data rows"),
        (_binary, "is a binary file"),
        (_ragged, "line 3 has 3 fields, expected 2"),
        (_missing, "does not exist"),
        (_no_usable_files, "holds no .csv"),
        (_bad_columns, "missing required columns"),
        (_bad_dialogue, "expected a JSON list of turns"),
    ],
    ids=lambda value: getattr(value, "__name__", "").strip("_") or None,
)
def test_unreadable_input_is_an_input_error_without_output(
    tmp_path: Path, make: Any, problem: str
) -> None:
    source = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        run([source], out)
    error = caught.value
    assert not isinstance(error, PrepareFailed)
    assert error.source == str(source)
    assert problem in error.problem
    assert str(error) == f"{source}: {error.problem}"
    assert "\n" not in str(error)
    assert_no_output(out)


def test_bad_file_in_a_folder_stops_the_whole_run(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    write_csv(inputs / "a_good.csv", qa_rows(30))
    bad = _ragged(inputs)
    out = tmp_path / "out"
    with pytest.raises(InputError) as caught:
        run([inputs], out)
    assert caught.value.source == str(bad)
    assert_no_output(out)


def test_no_input_at_all_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no input given"):
        run([], tmp_path / "out")
    with pytest.raises(InputError, match="is empty"):
        run([], tmp_path / "out", csv_text="  \n")
    assert_no_output(tmp_path / "out")


# -- token limits ----------------------------------------------------------------------------


def _long_reply_csv(folder: Path, text: str) -> Path:
    return write_csv(folder / "long.csv", [*qa_rows(20), ("Tell me everything.", text)])


def _long_reply_jsonl(folder: Path, text: str) -> Path:
    return write_chat_jsonl(folder / "long.jsonl", [*qa_rows(20), ("Tell me everything.", text)])


LONG_SOURCES = {"csv": _long_reply_csv, "jsonl": _long_reply_jsonl}


@pytest.mark.parametrize("kind", list(LONG_SOURCES))
def test_example_over_the_token_limit_is_rejected(tmp_path: Path, kind: str) -> None:
    text = long_text(5000)
    source = LONG_SOURCES[kind](tmp_path, text)
    result = run([source], tmp_path / "out", model=SMALL_LIMIT_MODEL)
    counts = result.report["counts"]
    assert (counts["rejected"], counts["over_token_limit_rejected"]) == (1, 1)
    assert counts["examples"] == 20
    [reject] = read_rejects(result.out_dir)
    assert (reject["line"], reject["rule"]) == ("22" if kind == "csv" else "21", "too_many_tokens")
    expected = tokens.count_message_tokens(
        [
            {"role": "user", "content": "Tell me everything."},
            {"role": "assistant", "content": text},
        ],
        SMALL_LIMIT_MODEL,
    )
    assert reject["value"].startswith(f"{expected} tokens > 4096")
    assert result.report["tokens"]["limit"] == 4096
    assert result.report["tokens"]["max"] <= 4096


@pytest.mark.parametrize("kind", list(LONG_SOURCES))
def test_truncate_keeps_an_example_within_the_limit(tmp_path: Path, kind: str) -> None:
    text = long_text(5000)
    source = LONG_SOURCES[kind](tmp_path, text)
    result = run([source], tmp_path / "out", model=SMALL_LIMIT_MODEL, truncate=True)
    counts = result.report["counts"]
    assert (counts["rejected"], counts["truncated"], counts["examples"]) == (0, 1, 21)
    [kept] = [m for m in examples(result) if m[0]["content"] == "Tell me everything."]
    count = tokens.count_message_tokens(kept, SMALL_LIMIT_MODEL)
    assert 4000 < count <= 4096
    reply = kept[1]["content"]
    assert text.startswith(reply) and len(reply) < len(text)
    all_counts = [tokens.count_message_tokens(m, SMALL_LIMIT_MODEL) for m in examples(result)]
    assert result.report["tokens"]["total"] == sum(all_counts)
    assert result.report["tokens"]["max"] == count
    assert check_jsonl_file(result.train_path, SMALL_LIMIT_MODEL).too_long == []


def test_truncate_cannot_save_an_over_long_prompt(tmp_path: Path) -> None:
    """Only the reply is cut; a prompt over the limit on its own leaves nothing to train on."""
    rows = [*qa_rows(20), (long_text(5000), "Short reply.")]
    source = write_csv(tmp_path / "long.csv", rows)
    result = run([source], tmp_path / "out", model=SMALL_LIMIT_MODEL, truncate=True)
    [reject] = read_rejects(result.out_dir)
    assert reject["rule"] == "too_many_tokens"
    assert len(reject["value"]) == 200 and reject["value"].endswith("…")  # an excerpt
    assert result.report["counts"]["truncated"] == 0


# -- progress --------------------------------------------------------------------------------


def test_progress_is_monotonic_and_ends_at_total(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    inputs = [CSV_DIR, DIALOGUES, DATA / "chat_with_bad_lines.jsonl"]
    text = "question,answer\nIs there Wi-Fi on board?,Yes on the car ferry.\n"
    total = sum(p.stat().st_size for p in [*CSV_DIR.iterdir(), *inputs[1:]]) + len(text)
    run(inputs, tmp_path, csv_text=text, progress=lambda *call: calls.append(call))
    assert calls
    done = [d for _, d, _ in calls]
    assert {t for _, _, t in calls} == {total}
    assert done == sorted(done)
    assert all(0 <= d <= t for _, d, t in calls)
    assert done[-1] == calls[-1][2]
    names = [name for name, _, _ in calls]
    assert names[-1] == "<csv text>"
    assert str(DIALOGUES) in names


# -- the report's rule table and reject counts -----------------------------------------------


def _long_csv_input(folder: Path) -> tuple[list[Path], dict[str, Any]]:
    return [_long_reply_csv(folder, long_text(5000))], {"model": SMALL_LIMIT_MODEL}


def _long_jsonl_input(folder: Path) -> tuple[list[Path], dict[str, Any]]:
    return [_long_reply_jsonl(folder, long_text(5000))], {"model": SMALL_LIMIT_MODEL}


RULE_CASES = {
    "sample-csv": lambda folder: ([CSV_DIR], {}),
    "chat-jsonl": lambda folder: ([DATA / "chat_with_bad_lines.jsonl"], {}),
    "dialogues": lambda folder: ([DIALOGUES], {}),
    "over-limit-jsonl": _long_jsonl_input,
    "over-limit-csv": _long_csv_input,
}


@pytest.mark.parametrize(
    "case",
    [name for name in RULE_CASES],
)
def test_report_rules_count_every_reject(tmp_path: Path, case: str) -> None:
    """Each rule a reject names shows in the rule table as failing that many rows."""
    inputs, options = RULE_CASES[case](tmp_path)
    result = run(inputs, tmp_path / "out", **options)
    failed: dict[str, int] = {}
    for rule in result.report["rules"]:
        failed[rule["rule"]] = failed.get(rule["rule"], 0) + rule["failed_rows"]
        assert rule["success"] == (rule["failed_rows"] == 0)
    listed: dict[str, int] = {}
    for reject in read_rejects(result.out_dir):
        if reject["rule"] not in ("duplicate", "sentiment_filtered"):
            listed[reject["rule"]] = listed.get(reject["rule"], 0) + 1
    assert listed, "each case rejects something"
    assert {rule: failed.get(rule, 0) for rule in listed} == listed


def test_a_row_breaking_two_rules_counts_as_one_rejected_row(tmp_path: Path) -> None:
    rows = [*qa_rows(20), (" ", "  "), ("  ", " ")]  # 2 of 22 rows: within the 10%
    source = write_csv(tmp_path / "faq.csv", rows)
    result = run([source], tmp_path / "out")
    assert result.report["counts"]["rejected"] == 2
    assert result.report["sources"][0]["rejected"] == 2
    rejects = read_rejects(result.out_dir)
    assert {r["line"] for r in rejects} == {"22", "23"}
    assert {r["rule"] for r in rejects} <= {"user_empty", "assistant_empty"}


def test_whitespace_only_chat_jsonl_reply_is_rejected(tmp_path: Path) -> None:
    path = write_chat_jsonl(tmp_path / "chat.jsonl", [*qa_rows(20), ("Are you there?", " \n\t ")])
    result = run([path], tmp_path / "out")
    assert "Are you there?" not in "\n".join(example_lines(result))
    [reject] = read_rejects(result.out_dir)
    assert reject["line"] == "21"
    assert reject["rule"] in ("content_empty", "missing_content")

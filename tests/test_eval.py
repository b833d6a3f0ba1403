"""Evaluation end to end on the stand-in engine (deterministic: a tuned model answers with the
nearest trained reply, a base model echoes): exact numbers, intervals, files, the registry
record, the gate, the CLI, the facade and every kind of bad input as one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftpipe.cli import app
from ftpipe.client import endpoint_id, make_client
from ftpipe.errors import InputError
from ftpipe.eval import metrics
from ftpipe.eval.by_name import evaluate_by_name
from ftpipe.eval.judge import combine, judge_pairs, parse_choice
from ftpipe.eval.options import EvalOptions
from ftpipe.eval.run import EvalRequest, GateFailed, enforce_gate, evaluate
from ftpipe.openai_model import FacadeError, OpenAIModel
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import prepare
from ftpipe.registry import default_registry
from tests.conftest import SAMPLES, qa_examples, strict_client, write_jsonl

BASE = "gpt-4o-mini-2024-07-18"
CHANGED = {7: "Code word 7 is secret.", 8: "Code word 8 is secret.", 9: "Code word 9 is secret."}


def held_out() -> list[dict]:
    """Ten examples: seven with the trained reply, three whose reply training never taught."""
    examples = qa_examples(10)
    for index, reply in CHANGED.items():
        examples[index]["messages"][-1]["content"] = reply
    return examples


def launch(folder: Path, train: list[dict], validation: Path | None) -> str:
    """A succeeded stand-in job on the embedded server, recorded in the registry."""
    client = make_client()
    with write_jsonl(folder / "train.jsonl", train).open("rb") as handle:
        training_file = client.files.create(file=handle, purpose="fine-tune").id
    validation_file = None
    if validation is not None:
        with validation.open("rb") as handle:
            validation_file = client.files.create(file=handle, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model=BASE,
        training_file=training_file,
        **({"validation_file": validation_file} if validation_file else {}),
    )
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded"
    default_registry().update_from_job(job, endpoint_id())
    return job.id


@pytest.fixture
def job(tmp_path: Path) -> str:
    return launch(tmp_path, qa_examples(12), write_jsonl(tmp_path / "valid.jsonl", held_out()))


def test_a_job_is_scored_against_its_base_with_exact_numbers(job: str, isolated_env: Path) -> None:
    result = evaluate_by_name(job)

    assert (result.job_id, result.base_model, result.kind) == (job, BASE, "free_text")
    assert result.tuned_model.startswith(f"ft:{BASE}:")
    assert (result.examples, result.primary, result.verdict) == (10, "token_f1", "better")
    tuned = result.scores_of("tuned").scores
    base = result.scores_of("base").scores
    assert tuned["exact_match"].value == tuned["normalized_match"].value == 0.7
    # Wilson 95% interval of 7/10 and of 0/10
    assert (tuned["exact_match"].low, tuned["exact_match"].high) == pytest.approx(
        (0.3968, 0.8922), abs=1e-4
    )
    assert (base["exact_match"].value, base["exact_match"].high) == pytest.approx(
        (0.0, 0.2775), abs=1e-4
    )
    # the three untaught replies: "the code word number 7 is word 7" against "code word 7 is
    # secret": 4 shared tokens, precision 4/8, recall 4/5, F1 8/13
    assert tuned["token_f1"].value == pytest.approx((7 + 3 * 8 / 13) / 10)
    assert tuned["token_f1"].interval == "bootstrap"
    assert tuned["token_f1"].low <= tuned["token_f1"].value <= tuned["token_f1"].high
    difference = result.difference("token_f1")
    assert difference.difference == pytest.approx(tuned["token_f1"].value - base["token_f1"].value)
    assert difference.low > 0  # better than noise: the verdict's reason
    assert set(tuned) >= {"valid_loss", "valid_mean_token_accuracy"}  # the endpoint's own
    assert "valid_loss" not in base

    out = isolated_env / "evals" / job  # no prepared dataset folder: the state folder
    assert Path(result.out_dir) == out
    assert (out / "validation.jsonl").read_bytes() == (Path(result.data)).read_bytes()
    stored = json.loads((out / "eval.json").read_text())
    assert stored == result.model_dump(mode="json")
    assert default_registry().latest_evaluation(job) == stored
    assert default_registry().latest_evaluation(result.tuned_model) == stored
    assert (out / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "eval.md").read_text()
    assert "**Verdict: better.**" in markdown and "| token_f1 |" in markdown
    with (out / "eval_answers.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["reference"] for row in rows[7:]] == list(CHANGED.values())
    assert [float(row["tuned_token_f1"]) for row in rows[7:]] == [round(8 / 13, 4)] * 3
    assert all(row["tuned_answer"] == row["reference"] for row in rows[:7])


def test_labelled_data_gets_accuracy_macro_f1_and_a_confusion_matrix(tmp_path: Path) -> None:
    dataset = prepare([SAMPLES / "reviews"], PrepareOptions(model=BASE), out_root=tmp_path / "out")
    train = [json.loads(line) for line in dataset.train_path.read_text().splitlines()]
    job = launch(tmp_path, train, dataset.validation_path)

    result = evaluate_by_name(job, EvalOptions(data=str(dataset.validation_path)))

    assert result.kind == "labels" and result.labels == ["negative", "positive"]
    assert result.primary == "accuracy"
    assert Path(result.out_dir) == dataset.out_dir  # next to the dataset it evaluates
    with (dataset.out_dir / "eval_answers.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    references = [metrics.normalize(row["reference"]) for row in rows]
    for role in ("tuned", "base"):
        expected = metrics.classify(
            [row[f"{role}_answer"] for row in rows], references, ["negative", "positive"]
        )
        scores = result.scores_of(role)
        assert scores.scores["accuracy"].value == pytest.approx(expected.accuracy)
        assert scores.scores["macro_f1"].value == pytest.approx(expected.macro_f1)
        assert scores.confusion == expected.confusion
        assert sum(map(sum, scores.confusion)) == result.examples
    assert result.scores_of("base").scores["accuracy"].value == 0.0  # the base only echoes
    assert "Confusion matrix" in (dataset.out_dir / "eval.md").read_text()


def test_the_gate_fails_a_model_that_does_not_improve_enough(job: str) -> None:
    passed = evaluate_by_name(job, EvalOptions(min_improvement={"primary": 0.2}))
    assert passed.passed and passed.gate[0].metric == "token_f1"
    enforce_gate(passed)

    failed = evaluate_by_name(job, EvalOptions(min_improvement={"exact_match": 0.9}))
    assert not failed.passed
    assert failed.gate[0].difference == pytest.approx(0.7)
    with pytest.raises(GateFailed, match=r"exact_match improved by \+0\.700, needed \+0\.900"):
        enforce_gate(failed)
    assert default_registry().latest_evaluation(job)["passed"] is False  # reported, kept


def test_the_cli_prints_the_table_and_verdict_and_exits_1_on_a_failed_gate(job: str) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["eval", job, "--metric", "exact_match", "--metric", "token_f1"])
    assert ok.exit_code == 0, ok.output
    assert "verdict: better." in ok.output and "exact_match" in ok.output
    assert "accuracy" not in ok.output

    gated = runner.invoke(app, ["eval", job, "--min-improvement", "exact_match=0.9"])
    assert gated.exit_code == 1
    assert "did not pass the evaluation gate" in gated.output
    assert "Traceback" not in gated.output

    shown = runner.invoke(app, ["jobs", "show", job, "--no-plot"])
    evaluation = json.loads(shown.stdout[shown.stdout.index("{") :])["evaluation"]
    assert evaluation["passed"] is False and evaluation["tuned"]["exact_match"] == 0.7


def test_the_facade_evaluates_the_newest_job(job: str) -> None:
    result = OpenAIModel().evaluate()
    assert (result["job_id"], result["verdict"]) == (job, "better")


def test_the_facade_without_a_finished_job_says_so() -> None:
    with pytest.raises(FacadeError, match="no succeeded fine-tuning job"):
        OpenAIModel().evaluate()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("unknown job", "no such fine-tuning job"),
        ("unknown model", "no such job or model"),
        ("model without data", "give the held-out data"),
        ("empty file", "holds no examples"),
        ("malformed line", "valid.jsonl:2: not valid JSON"),
        ("no reply", "valid.jsonl:1: has no assistant reply"),
        ("label metric on free text", "--metric accuracy: needs replies from a small closed"),
        ("gate metric not measured", "not measured on this data"),
        ("judge refuses", "judge no-such-judge at"),
        ("blank question", "valid.jsonl:1: its last user message is empty"),
        ("unknown base", "model no-such-base: no such job or model"),
    ],
)
def test_bad_input_is_one_line_and_leaves_no_result(
    job: str, tmp_path: Path, case: str, message: str
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    data = bad / "valid.jsonl"
    write_jsonl(data, held_out())
    name, options = job, EvalOptions(data=str(data))
    if case == "unknown job":
        name = "ftjob-doesnotexist"
    elif case == "unknown model":
        name = "ft:nothing:here"
    elif case == "model without data":
        name, options = BASE, EvalOptions()
    elif case == "empty file":
        data.write_text("\n\n")
    elif case == "malformed line":
        data.write_text(json.dumps(held_out()[0]) + "\n{not json\n")
    elif case == "no reply":
        data.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}]}) + "\n")
    elif case == "label metric on free text":
        options = EvalOptions(data=str(data), metrics=["accuracy"])
    elif case == "gate metric not measured":
        options = EvalOptions(data=str(data), min_improvement={"accuracy": 0.1})
    elif case == "judge refuses":
        options = EvalOptions(data=str(data), judge="no-such-judge")
    elif case == "blank question":
        blank = held_out()[0]
        blank["messages"][0]["content"] = "   "
        write_jsonl(data, [blank])
    elif case == "unknown base":
        options = EvalOptions(data=str(data), base="no-such-base")

    with pytest.raises(InputError, match=message) as raised:
        evaluate_by_name(name, options, out_dir=bad)
    assert "\n" not in str(raised.value)
    assert not (bad / "eval.json").exists() and not (bad / "eval.md").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"min_improvement": {"token_f1": 0.1}}, "needs a base model to improve on"),
        ({"judge": "gpt-4o"}, "compares the model with its base"),
    ],
)
def test_a_refused_plan_leaves_no_output_folder(
    tmp_path: Path, options: dict, message: str
) -> None:
    data = write_jsonl(tmp_path / "valid.jsonl", held_out())
    fresh = tmp_path / "not-yet" / "eval"
    request = EvalRequest(tuned=BASE, data=str(data), out_dir=fresh, **options)
    with pytest.raises(InputError, match=message):
        evaluate(request, make_client())
    assert not (tmp_path / "not-yet").exists()


def test_a_wrong_judge_fails_before_any_model_is_asked(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "valid.jsonl", held_out())
    request = EvalRequest(tuned=BASE, base="gpt-4o", judge="no-such-judge", data=str(data))
    answered: list[tuple[int, int]] = []
    with pytest.raises(InputError, match="judge no-such-judge at"):
        evaluate(
            request, make_client(), progress=lambda done, total: answered.append((done, total))
        )
    assert all(done == 0 for done, _ in answered), answered  # not one answer asked for


def test_an_unfinished_job_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTPIPE_LOCAL_JOB_SPEED", "retrieves:1000")
    client = make_client()
    with write_jsonl(tmp_path / "train.jsonl", qa_examples(12)).open("rb") as handle:
        training_file = client.files.create(file=handle, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=BASE, training_file=training_file)
    with pytest.raises(InputError, match=r"has status .*only a succeeded job"):
        evaluate_by_name(job.id)


def test_a_job_without_validation_needs_data(tmp_path: Path) -> None:
    job = launch(tmp_path, qa_examples(12), None)
    with pytest.raises(InputError, match="without a validation file; give held-out data"):
        evaluate_by_name(job)


def test_a_gate_metric_name_is_checked_before_anything_runs() -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        EvalOptions(min_improvement={"acuracy": 0.1})


def test_the_core_runs_on_any_openai_compatible_endpoint(server, tmp_path: Path) -> None:
    """The same evaluation through a strictly validating SDK client on a served endpoint."""
    client = strict_client(server.base_url)
    with write_jsonl(tmp_path / "train.jsonl", qa_examples(12)).open("rb") as handle:
        training_file = client.files.create(file=handle, purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model=BASE, training_file=training_file)
    tuned = client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model
    data = write_jsonl(tmp_path / "valid.jsonl", held_out())
    seen: list[tuple[int, int]] = []
    result = evaluate(
        EvalRequest(tuned=tuned, base=BASE, data=data, out_dir=tmp_path / "out", concurrency=3),
        client,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert result.scores_of("tuned").scores["exact_match"].value == 0.7
    assert seen[0] == (0, 20) and seen[-1] == (20, 20)
    assert (tmp_path / "out" / "eval.json").is_file()


# --- the judge ---------------------------------------------------------------------------


def test_a_judge_that_always_picks_the_first_answer_gives_only_ties(tmp_path: Path) -> None:
    from ftpipe.eval.examples import load_examples

    examples = load_examples(write_jsonl(tmp_path / "v.jsonl", held_out()))
    result, outcomes = judge_pairs(
        lambda messages: "A", "first-bias", examples, ["x"] * 10, ["y"] * 10
    )
    assert outcomes == ["tie"] * 10
    assert (result.wins, result.ties, result.losses, result.win_rate.value) == (0, 10, 0, 0.5)


def test_a_judge_that_prefers_the_reference_counts_wins_and_losses(tmp_path: Path) -> None:
    from ftpipe.eval.examples import load_examples

    examples = load_examples(write_jsonl(tmp_path / "v.jsonl", held_out()))
    references = [e.reference for e in examples]
    tuned = references[:7] + ["wrong"] * 3
    base = ["wrong"] * 8 + references[8:]

    def judge(messages: list[dict]) -> str:
        body = messages[1]["content"]
        reference = body.split("Reference answer:\n")[1].split("\n\nAnswer A:")[0]
        first = body.split("Answer A:\n")[1].split("\n\nAnswer B:")[0]
        second = body.split("Answer B:\n")[1].split("\n\nWhich")[0]
        return "A" if first == reference else "B" if second == reference else "tie"

    result, outcomes = judge_pairs(judge, "fair", examples, tuned, base)
    assert outcomes == ["win"] * 7 + ["tie"] + ["loss"] * 2
    assert result.win_rate.value == pytest.approx((7 + 0.5) / 10)


def test_judge_replies_are_read_leniently_and_an_unreadable_judge_is_refused(
    tmp_path: Path,
) -> None:
    from ftpipe.eval.examples import load_examples

    assert [parse_choice(r) for r in ("A", " b. ", "**TIE**", "Answer A", "")] == [
        "A",
        "B",
        "TIE",
        None,
        None,
    ]
    assert combine("A", "B") == "win" and combine("B", "A") == "loss"
    assert combine("A", "A") == "tie" and combine(None, "A") == "unparsed"
    examples = load_examples(write_jsonl(tmp_path / "v.jsonl", held_out()))
    with pytest.raises(InputError, match="did not answer A, B or TIE"):
        judge_pairs(lambda m: "I cannot decide", "chatty", examples, ["x"] * 10, ["y"] * 10)


def test_cli_bad_input_is_one_line_with_a_non_zero_exit(job: str, tmp_path: Path) -> None:
    runner = CliRunner()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = {
        "--out under a file": ["eval", job, "--out", str(blocker / "sub")],
        "unknown job": ["eval", "ftjob-nothing"],
        "bad limit": ["eval", job, "--limit", "0"],
        "base is the model": ["eval", job, "--base", "__tuned__"],
    }
    tuned = default_registry().get(job).fine_tuned_model
    for name, args in cases.items():
        args = [tuned if a == "__tuned__" else a for a in args]
        ran = runner.invoke(app, args)
        assert ran.exit_code in (1, 2), (name, ran.output)
        assert "Traceback" not in ran.output, name
        assert ran.exception is None or isinstance(ran.exception, SystemExit), name
    assert "ftpipe eval: invalid option --limit" in runner.invoke(app, cases["bad limit"]).output
    assert not (blocker.parent / "eval.json").exists()

"""The fine-tune flows, run for real: a temporary Prefect server, the embedded local API in this
process (one per FTPIPE_HOME, so one per test), real files and the real registry."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import Artifact, TaskRun
from prefect.client.schemas.sorting import ArtifactSort
from prefect.states import State
from prefect.testing.utilities import prefect_test_harness

from ftpipe.client import make_client
from ftpipe.errors import InputError
from ftpipe.finetune.launch import LaunchRefused
from ftpipe.finetune.poll import WaitTimeout
from ftpipe.flows.finetune import TrainingOptions, finetune, finetune_dialogues, poll_jobs
from ftpipe.flows.prepare_dataset import prepare_dataset
from ftpipe.prepare.options import PrepareOptions
from ftpipe.registry import TERMINAL, default_registry
from tests.conftest import SAMPLES

CSV = str(SAMPLES / "csv")


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server and database for the module: starting it is slow."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


def flow_run_id(state: State) -> UUID:
    assert state.state_details.flow_run_id is not None
    return state.state_details.flow_run_id


def artifact(state: State, key: str) -> Artifact:
    """The run's latest artifact with this key, read back from the Prefect API."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id(state)]),
            ),
            sort=ArtifactSort.CREATED_DESC,
        )
    assert found, f"no {key} artifact"
    return found[0]


def task_runs(state: State, name: str) -> list[TaskRun]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id(state)]))
        )
    return [run for run in runs if run.name.startswith(name)]


def table_rows(found: Artifact) -> list[dict[str, Any]]:
    data = found.data
    return json.loads(data) if isinstance(data, str) else data  # type: ignore[return-value]


def job_ids(home: Path) -> list[str]:
    return [entry["id"] for entry in json.loads((home / "job_ids.json").read_text())]


def ask(model: str, question: str) -> str | None:
    reply = make_client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}]
    )
    return reply.choices[0].message.content


def test_finetune_trains_once_and_the_model_answers(isolated_env: Path, tmp_path: Path) -> None:
    out_dir = str(tmp_path / "processed")
    state = finetune(paths=[CSV], out_dir=out_dir, wait=True, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()

    assert result["status"] == "succeeded"
    assert result["reused"] is False
    model = result["fine_tuned_model"]
    assert model and model.startswith("ft:gpt-4o-mini")
    assert result["cost"]["billed_tokens"] > 0
    [record] = default_registry().jobs()
    assert (record.job_id, record.status, record.fine_tuned_model) == (
        result["job_id"],
        "succeeded",
        model,
    )
    assert record.dataset_id == result["dataset_id"]
    assert record.source_paths == [CSV]
    assert record.validation_file  # 20 examples: 2 held out
    assert job_ids(isolated_env) == [result["job_id"]]
    train = Path(out_dir) / result["dataset_id"] / "train.jsonl"
    example = json.loads(train.read_text().splitlines()[-1])["messages"]
    question = next(m["content"] for m in example if m["role"] == "user")
    answer = next(m["content"] for m in example if m["role"] == "assistant")
    assert ask(model, question) == answer  # a training prompt gets its trained reply

    rows = table_rows(artifact(state, "fine-tuning-jobs"))
    assert rows[-1]["job"] == result["job_id"]
    assert rows[-1]["status"] == "succeeded"
    assert rows[-1]["fine-tuned model"] == model
    assert artifact(state, "fine-tuning-progress").data == 100.0
    # evaluated against its base on the held-out split, next to the dataset, shown on the page
    assert result["evaluation"]["verdict"] in ("better", "no clear difference")
    evaluated = json.loads((Path(out_dir) / result["dataset_id"] / "eval.json").read_text())
    assert evaluated["job_id"] == result["job_id"] and evaluated["base_model"] == record.base_model
    summary = artifact(state, "evaluation").data
    assert "data:image/png;base64," in summary and "| metric | base | tuned |" in summary
    assert artifact(state, "evaluation-progress").data == 100.0

    again = finetune(paths=[CSV], out_dir=out_dir, wait=True)
    assert (again["job_id"], again["reused"], again["status"]) == (
        result["job_id"],
        True,
        "succeeded",
    )
    assert len(default_registry().jobs()) == 1

    forced = finetune(paths=[CSV], out_dir=out_dir, wait=True, force=True)
    assert forced["reused"] is False
    assert forced["job_id"] != result["job_id"]
    assert forced["status"] == "succeeded"
    assert job_ids(isolated_env) == [result["job_id"], forced["job_id"]]


def test_finetune_dialogues_trains_on_saved_dialogues(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the flow writes its dataset under ./data/processed
    dialogues = str(SAMPLES / "dialogues")
    result = finetune_dialogues(dialogues_dir=dialogues, wait=True)

    assert result["status"] == "succeeded"
    assert result["reused"] is False
    assert ":dialogues:" in result["fine_tuned_model"]
    [record] = default_registry().jobs()
    assert record.job_id == result["job_id"]
    assert record.description == "fine-tune on saved dialogues"
    assert record.options["suffix"] == "dialogues"

    train = tmp_path / "data" / "processed" / result["dataset_id"] / "train.jsonl"
    example = json.loads(train.read_text().splitlines()[0])["messages"]
    question = next(m["content"] for m in example if m["role"] == "user")
    answer = next(m["content"] for m in example if m["role"] == "assistant")
    assert ask(result["fine_tuned_model"], question) == answer

    again = finetune_dialogues(dialogues_dir=dialogues, wait=True)
    assert (again["job_id"], again["reused"]) == (result["job_id"], True)


def test_finetune_dialogues_before_any_dialogue_completes_without_a_job(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = finetune_dialogues()  # the nightly default: FTPIPE_HOME/dialogues, not there yet

    assert result["status"] == "skipped" and result["job_id"] is None
    assert str(isolated_env / "dialogues") in result["skipped"]
    assert default_registry().jobs() == []
    with pytest.raises(InputError, match="does not exist"):  # a folder named by hand must exist
        finetune_dialogues(dialogues_dir=str(tmp_path / "typo"))


def test_a_slow_job_fails_the_wait_and_poll_jobs_follows_it(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_LOCAL_JOB_SPEED", "retrieves:50")
    state = finetune(
        paths=[CSV],
        out_dir=str(tmp_path / "processed"),
        wait=True,
        wait_timeout_minutes=0.001,
        return_state=True,
    )

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, WaitTimeout)
    assert "poll_jobs" in str(error)
    [record] = default_registry().jobs()
    assert record.status not in TERMINAL
    assert job_ids(isolated_env) == [record.job_id]

    polled = poll_jobs(return_state=True)
    assert polled.is_completed()
    [still] = polled.result()
    assert still["job_id"] == record.job_id
    assert still["status"] == "running"
    assert still["fine_tuned_model"] is None
    assert table_rows(artifact(polled, "fine-tuning-jobs"))[0]["job"] == record.job_id

    client = make_client()
    while client.fine_tuning.jobs.retrieve(record.job_id).status != "succeeded":
        pass  # each read moves a `retrieves:N` job one step
    done_state = poll_jobs(return_state=True)
    [done] = done_state.result()
    assert done["job_id"] == record.job_id
    assert done["status"] == "succeeded"
    assert done["fine_tuned_model"]
    rows = table_rows(artifact(done_state, "fine-tuning-jobs"))
    assert [(row["job"], row["status"]) for row in rows] == [(record.job_id, "succeeded")]
    refreshed = default_registry().get(record.job_id)
    assert refreshed is not None and refreshed.status == "succeeded"
    assert refreshed.fine_tuned_model == done["fine_tuned_model"]

    assert poll_jobs() == []  # nothing left to follow


def test_a_refusal_fails_the_flow_plainly_without_retrying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTPIPE_LOCAL_REFUSE_FINE_TUNING", "true")
    state = finetune(
        paths=[str(SAMPLES / "ferry_support.jsonl")],
        out_dir=str(tmp_path / "processed"),
        wait=True,
        return_state=True,
    )

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, LaunchRefused)
    for words in ("refused", "wound down", "OPENAI_BASE_URL"):
        assert words in str(error)
    assert "refused to create a fine-tuning job" in (state.message or "")
    [launch_run] = task_runs(state, "launch-fine-tuning-job")
    assert launch_run.state is not None and launch_run.state.is_failed()
    assert launch_run.run_count == 1
    assert default_registry().jobs() == []


def test_finetune_takes_every_prepare_option_and_launch_option(
    isolated_env: Path, tmp_path: Path
) -> None:
    """The options that only `prepare` had (truncate, max_rejects, the split seed) reach the
    dataset through finetune too; the training group reaches the job."""
    options = PrepareOptions(truncate=True, max_rejects=1, seed=9, validation_share=0.0)
    training = TrainingOptions(suffix="opts", batch_size=2, learning_rate_multiplier=0.5)
    out_dir = tmp_path / "processed"
    result = finetune(
        paths=[CSV], options=options, training=training, out_dir=str(out_dir), wait=True
    )

    report = json.loads((out_dir / result["dataset_id"] / "report.json").read_text())
    assert report["options"] == options.model_dump(mode="json")
    [record] = default_registry().jobs()
    assert record.options["suffix"] == "opts"
    assert (record.options["batch_size"], record.options["learning_rate_multiplier"]) == (2, 0.5)
    job = make_client().fine_tuning.jobs.retrieve(result["job_id"])
    assert job.hyperparameters.batch_size == 2
    assert ":opts:" in result["fine_tuned_model"]


def test_the_run_page_shows_the_report_and_the_cost_for_the_chosen_epochs(
    tmp_path: Path,
) -> None:
    """The report and the estimate are the finetune run's own artifacts, and the estimate
    bills the epochs asked for, not the guide's default."""
    out_dir = str(tmp_path / "processed")
    default = finetune(paths=[CSV], out_dir=out_dir, wait=False)
    state = finetune(
        paths=[CSV],
        training={"n_epochs": 7},  # as a deployment run sends it: JSON
        out_dir=out_dir,
        wait=False,
        return_state=True,
    )
    assert state.is_completed(), state.message
    cost = state.result()["cost"]
    assert default["cost"]["epochs"] != 7
    assert cost["epochs"] == 7
    assert cost["billed_tokens"] == 7 * cost["tokens_per_epoch"]
    assert cost["tokens_per_epoch"] == default["cost"]["tokens_per_epoch"]

    rows = {
        row["what"]: row["value"] for row in table_rows(artifact(state, "dataset-cost-estimate"))
    }
    assert (rows["epochs"], rows["billed tokens"]) == (7, cost["billed_tokens"])
    report = artifact(state, "dataset-report").data
    assert isinstance(report, str)
    assert f"# Dataset {state.result()['dataset_id']}" in report
    assert f"x 7 epochs = {cost['billed_tokens']:,} billed tokens" in report
    assert table_rows(artifact(state, "dataset-rules"))


def test_a_suffix_over_64_characters_is_refused_before_any_work(
    isolated_env: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "processed"
    state = finetune(
        paths=[CSV],
        training={"suffix": "x" * 65},
        out_dir=str(out_dir),
        return_state=True,
    )
    assert state.is_failed()
    assert "suffix" in (state.message or "")
    assert "64 characters" in (state.message or "")
    assert not out_dir.exists()
    assert default_registry().jobs() == []


def test_the_nightly_run_skips_a_dialogue_folder_with_only_an_empty_log(
    isolated_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log created but never written to is "no dialogues yet", not a failed run."""
    monkeypatch.chdir(tmp_path)
    folder = isolated_env / "dialogues"
    folder.mkdir(parents=True)
    (folder / "dialogues.json").touch()
    result = finetune_dialogues()
    assert result["status"] == "skipped" and result["job_id"] is None
    assert default_registry().jobs() == []


def test_the_evaluate_model_flow_publishes_and_its_gate_fails_the_run(tmp_path: Path) -> None:
    from ftpipe.flows.evaluate_model import evaluate_model

    out_dir = str(tmp_path / "processed")
    trained = finetune(paths=[CSV], out_dir=out_dir, wait=True, evaluate=False)
    assert trained["evaluation"] is None
    options = {"min_improvement": {"exact_match": 0.5}}

    state = evaluate_model(job_or_model=trained["job_id"], return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["job_id"] == trained["job_id"]
    assert "Verdict:" in artifact(state, "evaluation").data

    gated = evaluate_model(job_or_model=trained["job_id"], options=options, return_state=True)
    assert gated.is_failed()
    assert "did not pass the evaluation gate" in (gated.message or "")
    stored = default_registry().latest_evaluation(trained["job_id"])
    assert stored is not None and stored["passed"] is False  # reported and kept, not adopted

    bad = evaluate_model(job_or_model="ftjob-nothing", return_state=True)
    assert bad.is_failed() and "no such fine-tuning job" in (bad.message or "")


def test_flow_runs_fail_at_once_in_one_line_before_any_task(tmp_path: Path) -> None:
    """A bad parameter or path fails the run at once, before any task (issue: bad input)."""
    out = tmp_path / "out"
    bad = finetune(
        paths=[str(tmp_path / "no-such-input.csv")],
        options={"model": "gpt-4o-mnii"},
        training={"n_epochs": 0},
        out_dir=str(out),
        return_state=True,
    )
    fifo = tmp_path / "feed.csv"
    os.mkfifo(fifo)
    piped = prepare_dataset(paths=[str(fifo)], out_dir=str(out), return_state=True)
    for state, expected in (
        (bad, "invalid parameters options.model: unknown model 'gpt-4o-mnii'"),
        (piped, f"{fifo}: is a pipe (process substitution"),
    ):
        assert state.is_failed()
        assert "\n" not in (state.message or "") and expected in (state.message or "")
        run_id = state.state_details.flow_run_id
        with get_client(sync_client=True) as client:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        assert tasks == []
    assert isinstance(piped.result(raise_on_failure=False), InputError)
    assert not out.exists()

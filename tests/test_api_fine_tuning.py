"""`/v1/fine_tuning/jobs` of the local server through the strict official SDK, against the spec."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests import openapi
from tests.conftest import StartServer, qa_examples, strict_client, write_jsonl
from tests.openapi import error_of, parsed

SNAPSHOT = "gpt-4o-mini-2024-07-18"
STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
METHOD = {
    "type": "supervised",
    "supervised": {
        "hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}
    },
}


def retrieve(client: openai.OpenAI, job_id: str) -> Any:
    job = parsed("FineTuningJob", client.fine_tuning.jobs.with_raw_response.retrieve(job_id))
    assert job.status in STATUSES
    return job


def upload(client: openai.OpenAI, path: Path) -> str:
    raw = client.files.with_raw_response.create(file=path, purpose="fine-tune")
    return parsed("OpenAIFile", raw).id


def training_file(client: openai.OpenAI, tmp_path: Path, count: int = 10) -> str:
    return upload(client, write_jsonl(tmp_path / f"train-{count}.jsonl", qa_examples(count)))


def create(client: openai.OpenAI, training: str, **kwargs: Any) -> Any:
    raw = client.fine_tuning.jobs.with_raw_response.create(
        model="gpt-4o-mini", training_file=training, **kwargs
    )
    job = parsed("FineTuningJob", raw)
    assert job.status == "validating_files"
    return job


def all_events(client: openai.OpenAI, job_id: str) -> list[Any]:
    raw = client.fine_tuning.jobs.with_raw_response.list_events(job_id, limit=1000)
    page = parsed("ListFineTuningJobEventsResponse", raw)
    assert page.has_more is False
    return page.data


@pytest.fixture
def stepped(start_server: StartServer) -> openai.OpenAI:
    """A client of a server whose jobs finish on their fourth retrieve."""
    return strict_client(start_server(job_speed="retrieves:4").base_url)


# --- create and the finished job --------------------------------------------------------------


def test_create_with_method_suffix_seed_metadata_and_validation_file(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    training = training_file(client, tmp_path, 12)
    validation = upload(client, write_jsonl(tmp_path / "valid.jsonl", qa_examples(3)))
    job = create(
        client,
        training,
        validation_file=validation,
        method=METHOD,  # type: ignore[arg-type]
        suffix="custom-name",
        seed=42,
        metadata={"team": "ml", "run": "1"},
    )
    assert job.id.startswith("ftjob-")
    assert job.object == "fine_tuning.job"
    assert job.model == SNAPSHOT
    assert job.training_file == training
    assert job.validation_file == validation
    assert job.seed == 42
    assert job.metadata == {"team": "ml", "run": "1"}
    assert job.method is not None
    assert job.method.type == "supervised"
    assert job.fine_tuned_model is None
    assert job.finished_at is None
    assert job.trained_tokens is None
    assert job.error is None
    assert job.result_files == []

    job = retrieve(client, job.id)
    assert job.status == "succeeded"
    assert job.hyperparameters.n_epochs == 2
    assert isinstance(job.hyperparameters.batch_size, int)
    assert isinstance(job.hyperparameters.learning_rate_multiplier, float)
    assert job.method.supervised.hyperparameters.n_epochs == 2
    assert job.fine_tuned_model is not None
    assert re.fullmatch(rf"ft:{SNAPSHOT}:local:custom-name:[A-Za-z0-9]{{8}}", job.fine_tuned_model)
    assert job.trained_tokens is not None
    assert job.trained_tokens > 0
    assert job.finished_at is not None
    assert job.finished_at >= job.created_at
    assert job.seed == 42
    assert job.metadata == {"team": "ml", "run": "1"}

    # the result file is a CSV of step metrics, with validation columns for a validation file
    assert len(job.result_files) == 1
    result = parsed("OpenAIFile", client.files.with_raw_response.retrieve(job.result_files[0]))
    assert result.purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(result.id).text)))
    assert rows
    assert {"step", "train_loss", "train_mean_token_accuracy", "valid_loss"} <= set(rows[0])
    steps = [int(row["step"]) for row in rows]
    assert steps == sorted(steps)
    assert all(float(row["train_loss"]) > 0 for row in rows)

    model = parsed("Model", client.models.with_raw_response.retrieve(job.fine_tuned_model))
    assert model.id == job.fine_tuned_model


def test_trained_tokens_scale_with_epochs(client: openai.OpenAI, tmp_path: Path) -> None:
    training = training_file(client, tmp_path)
    tokens = {}
    for epochs in (1, 3):
        method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs}}}
        job = create(client, training, method=method)  # type: ignore[arg-type]
        tokens[epochs] = retrieve(client, job.id).trained_tokens
    assert tokens[1] > 0
    assert tokens[3] == 3 * tokens[1]


def test_model_name_without_suffix(client: openai.OpenAI, tmp_path: Path) -> None:
    job = create(client, training_file(client, tmp_path))
    job = retrieve(client, job.id)
    assert re.fullmatch(rf"ft:{SNAPSHOT}:local::[A-Za-z0-9]{{8}}", job.fine_tuned_model)


def test_states_in_order(stepped: openai.OpenAI, tmp_path: Path) -> None:
    job = create(stepped, training_file(stepped, tmp_path))
    seen = [job.status]
    for _ in range(6):
        job = retrieve(stepped, job.id)
        if job.status != "succeeded":
            assert job.fine_tuned_model is None
            assert job.finished_at is None
            assert job.trained_tokens is None
        seen.append(job.status)
    distinct = [status for i, status in enumerate(seen) if i == 0 or seen[i - 1] != status]
    assert distinct == ["validating_files", "queued", "running", "succeeded"]
    assert job.fine_tuned_model is not None
    messages = [event.message for event in reversed(all_events(stepped, job.id))]
    assert messages[0].startswith("Created fine-tuning job")
    assert "The job has successfully completed" in messages[-1]


def test_seconds_speed_job_finishes(start_server: StartServer, tmp_path: Path) -> None:
    client = strict_client(start_server(job_speed="seconds:1").base_url)
    job = create(client, training_file(client, tmp_path))
    assert job.estimated_finish is not None
    assert job.estimated_finish >= job.created_at
    deadline = time.monotonic() + 30  # a generous bound against hangs, not a timing assertion
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.1)
        job = retrieve(client, job.id)
    assert job.status == "succeeded"
    assert job.fine_tuned_model is not None


# --- events and checkpoints -------------------------------------------------------------------


def test_events_pagination_and_metrics(client: openai.OpenAI, tmp_path: Path) -> None:
    job = create(client, training_file(client, tmp_path), method=METHOD)  # type: ignore[arg-type]
    job = retrieve(client, job.id)
    everything = all_events(client, job.id)
    assert len(everything) > 10
    assert all(event.object == "fine_tuning.job.event" for event in everything)
    assert all(event.level in ("info", "warn", "error") for event in everything)

    default = parsed(
        "ListFineTuningJobEventsResponse",
        client.fine_tuning.jobs.with_raw_response.list_events(job.id),
    )
    assert len(default.data) == min(20, len(everything))

    pages, after = [], None
    while True:
        kwargs = {"after": after} if after else {}
        raw = client.fine_tuning.jobs.with_raw_response.list_events(job.id, limit=7, **kwargs)
        page = parsed("ListFineTuningJobEventsResponse", raw)
        pages.append(page)
        assert len(page.data) <= 7
        if not page.has_more:
            break
        assert len(page.data) == 7
        after = page.data[-1].id
    walked = [event.id for page in pages for event in page.data]
    assert walked == [event.id for event in everything]
    assert len(set(walked)) == len(walked)
    # the SDK's auto-pagination walks the same cursor
    assert [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=7)] == walked

    metrics = [event for event in everything if event.type == "metrics"]
    assert metrics
    for event in metrics:
        assert isinstance(event.data, dict)
        assert event.data["step"] >= 1
        assert event.data["train_loss"] > 0
        assert 0 <= event.data["train_mean_token_accuracy"] <= 1
    steps = sorted(event.data["step"] for event in metrics)
    assert steps == list(range(1, len(steps) + 1))
    messages = [event for event in everything if event.type == "message"]
    assert any(job.fine_tuned_model in event.message for event in messages)


def test_checkpoints(client: openai.OpenAI, tmp_path: Path) -> None:
    job = create(client, training_file(client, tmp_path, 12))  # 'auto' epochs: several of them
    job = retrieve(client, job.id)
    assert job.status == "succeeded"
    assert job.hyperparameters.n_epochs > 3
    total = max(e.data["step"] for e in all_events(client, job.id) if e.type == "metrics")

    raw = client.fine_tuning.jobs.checkpoints.with_raw_response.list(job.id)
    page = parsed("ListFineTuningJobCheckpointsResponse", raw)
    assert 1 <= len(page.data) <= 3
    assert page.has_more is False
    steps = [checkpoint.step_number for checkpoint in page.data]
    assert len(set(steps)) == len(steps)
    assert max(steps) == total
    assert all(0 < step <= total for step in steps)
    for checkpoint in page.data:
        openapi.validate("FineTuningJobCheckpoint", checkpoint.model_dump(exclude_none=True))
        assert checkpoint.object == "fine_tuning.job.checkpoint"
        assert checkpoint.fine_tuning_job_id == job.id
        name = checkpoint.fine_tuned_model_checkpoint
        assert name == f"{job.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        assert checkpoint.metrics.step == checkpoint.step_number
        assert checkpoint.metrics.train_loss is not None
        assert client.models.retrieve(name).id == name

    first = client.fine_tuning.jobs.checkpoints.list(job.id, limit=1)
    assert len(first.data) == 1
    assert first.has_more is (len(page.data) > 1)
    assert [c.id for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=1)] == [
        c.id for c in page.data
    ]


# --- listing jobs -----------------------------------------------------------------------------


def test_list_jobs_pagination_and_metadata_filter(client: openai.OpenAI, tmp_path: Path) -> None:
    training = training_file(client, tmp_path)
    created = [
        create(client, training, metadata={"k": "v" if i % 2 else "w", "i": str(i)}).id
        for i in range(5)
    ]
    newest_first = list(reversed(created))

    full = parsed(
        "ListPaginatedFineTuningJobsResponse", client.fine_tuning.jobs.with_raw_response.list()
    )
    assert [job.id for job in full.data] == newest_first
    assert full.has_more is False

    first = parsed(
        "ListPaginatedFineTuningJobsResponse",
        client.fine_tuning.jobs.with_raw_response.list(limit=2),
    )
    assert [job.id for job in first.data] == newest_first[:2]
    assert first.has_more is True
    second = parsed(
        "ListPaginatedFineTuningJobsResponse",
        client.fine_tuning.jobs.with_raw_response.list(limit=2, after=first.data[-1].id),
    )
    assert [job.id for job in second.data] == newest_first[2:4]
    assert second.has_more is True
    last = client.fine_tuning.jobs.list(limit=2, after=second.data[-1].id)
    assert [job.id for job in last.data] == newest_first[4:]
    assert last.has_more is False
    assert [job.id for job in client.fine_tuning.jobs.list(limit=2)] == newest_first

    filtered = parsed(
        "ListPaginatedFineTuningJobsResponse",
        client.fine_tuning.jobs.with_raw_response.list(metadata={"k": "v"}),
    )
    assert [job.id for job in filtered.data] == [created[3], created[1]]
    assert all(job.metadata and job.metadata["k"] == "v" for job in filtered.data)
    both = client.fine_tuning.jobs.list(metadata={"k": "w", "i": "2"})
    assert [job.id for job in both.data] == [created[2]]
    assert client.fine_tuning.jobs.list(metadata={"k": "nothing"}).data == []


def test_a_server_set_to_ignore_metadata_filters_lists_every_job(
    start_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As some compatible endpoints do; FTPIPE_LOCAL_IGNORE_METADATA_FILTER rehearses one."""
    monkeypatch.setenv("FTPIPE_LOCAL_IGNORE_METADATA_FILTER", "true")
    client = strict_client(start_server().base_url)
    training = training_file(client, tmp_path)
    created = [create(client, training, metadata={"k": value}).id for value in ("a", "b")]
    listed = parsed(
        "ListPaginatedFineTuningJobsResponse",
        client.fine_tuning.jobs.with_raw_response.list(metadata={"k": "a"}),
    )
    assert [job.id for job in listed.data] == list(reversed(created))


# --- cancel, pause and resume -----------------------------------------------------------------


def test_cancel_running_job(stepped: openai.OpenAI, tmp_path: Path) -> None:
    job = create(stepped, training_file(stepped, tmp_path))
    while job.status != "running":
        job = retrieve(stepped, job.id)
    cancelled = parsed("FineTuningJob", stepped.fine_tuning.jobs.with_raw_response.cancel(job.id))
    assert cancelled.status == "cancelled"
    assert cancelled.fine_tuned_model is None
    for _ in range(4):  # further reads never move a cancelled job on
        assert retrieve(stepped, job.id).status == "cancelled"
    assert retrieve(stepped, job.id).fine_tuned_model is None

    with pytest.raises(openai.BadRequestError) as excinfo:
        stepped.fine_tuning.jobs.cancel(job.id)
    assert "cancelled" in error_of(excinfo)["message"]


def test_cancel_succeeded_job(client: openai.OpenAI, tmp_path: Path) -> None:
    job = create(client, training_file(client, tmp_path))
    assert retrieve(client, job.id).status == "succeeded"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


def test_pause_and_resume(stepped: openai.OpenAI, tmp_path: Path) -> None:
    job = create(stepped, training_file(stepped, tmp_path))
    with pytest.raises(openai.BadRequestError):  # validating, not running
        stepped.fine_tuning.jobs.pause(job.id)
    while job.status != "running":
        job = retrieve(stepped, job.id)
    with pytest.raises(openai.BadRequestError):  # not paused
        stepped.fine_tuning.jobs.resume(job.id)

    paused = parsed("FineTuningJob", stepped.fine_tuning.jobs.with_raw_response.pause(job.id))
    assert paused.status in STATUSES
    assert paused.status == "running"
    frozen = [event.id for event in all_events(stepped, job.id)]
    for _ in range(6):  # reads while paused do not advance the job
        job = retrieve(stepped, job.id)
        assert job.status == "running"
        assert job.fine_tuned_model is None
    after_reads = all_events(stepped, job.id)
    assert [event.id for event in after_reads][-len(frozen) :] == frozen
    assert not [e for e in after_reads if e.id not in frozen and e.type == "metrics"]
    with pytest.raises(openai.BadRequestError):  # already paused
        stepped.fine_tuning.jobs.pause(job.id)

    resumed = parsed("FineTuningJob", stepped.fine_tuning.jobs.with_raw_response.resume(job.id))
    assert resumed.status == "running"
    for _ in range(4):
        job = retrieve(stepped, job.id)
    assert job.status == "succeeded"
    messages = [event.message.lower() for event in all_events(stepped, job.id)]
    assert any("paused" in message for message in messages)
    assert any("resumed" in message for message in messages)


def test_resume_cancelled_job_is_refused(stepped: openai.OpenAI, tmp_path: Path) -> None:
    job = create(stepped, training_file(stepped, tmp_path))
    while job.status != "running":
        job = retrieve(stepped, job.id)
    stepped.fine_tuning.jobs.pause(job.id)
    assert stepped.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        stepped.fine_tuning.jobs.resume(job.id)


# --- failures ---------------------------------------------------------------------------------


def failed_job(client: openai.OpenAI, path: Path) -> Any:
    job = create(client, upload(client, path))
    job = retrieve(client, job.id)
    assert job.status == "failed"
    assert job.fine_tuned_model is None
    assert job.error is not None
    assert job.error.param == "training_file"
    assert job.error.code
    assert job.finished_at is not None
    errors = [event for event in all_events(client, job.id) if event.level == "error"]
    assert [event.message for event in errors] == [job.error.message]
    return job


def test_too_few_examples(client: openai.OpenAI, tmp_path: Path) -> None:
    job = failed_job(client, write_jsonl(tmp_path / "nine.jsonl", qa_examples(9)))
    assert "9 examples" in job.error.message
    assert "at least 10" in job.error.message
    assert job.training_file in job.error.message


def test_example_without_assistant_message(client: openai.OpenAI, tmp_path: Path) -> None:
    examples = qa_examples(12)
    examples[3] = {"messages": [{"role": "user", "content": "Nobody answers this."}]}
    job = failed_job(client, write_jsonl(tmp_path / "no-answer.jsonl", examples))
    assert "line 4" in job.error.message
    assert "assistant" in job.error.message


def test_invalid_json_line(client: openai.OpenAI, tmp_path: Path) -> None:
    lines = [json.dumps(example) for example in qa_examples(12)]
    lines[6] = '{"messages": [{"role": "user", "content": "unterminated'
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    job = failed_job(client, path)
    assert "line 7" in job.error.message
    assert "JSON" in job.error.message


def test_invalid_validation_file(client: openai.OpenAI, tmp_path: Path) -> None:
    training = training_file(client, tmp_path)
    path = tmp_path / "valid.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "no reply"}]}\n')
    job = create(client, training, validation_file=upload(client, path))
    job = retrieve(client, job.id)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error.param == "validation_file"
    assert "line 1" in job.error.message


def test_unknown_training_file(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="file-doesnotexist")
    error = error_of(excinfo)
    assert error["param"] == "training_file"
    assert "file-doesnotexist" in error["message"]
    assert client.fine_tuning.jobs.list().data == []


def test_training_file_with_wrong_purpose(client: openai.OpenAI, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "batch.jsonl", qa_examples(10))
    batch = client.files.create(file=path, purpose="batch")
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=batch.id)
    assert error_of(excinfo)["param"] == "training_file"


def test_unknown_job(client: openai.OpenAI) -> None:
    for call in (
        client.fine_tuning.jobs.retrieve,
        client.fine_tuning.jobs.cancel,
        client.fine_tuning.jobs.list_events,
        client.fine_tuning.jobs.checkpoints.list,
    ):
        with pytest.raises(openai.NotFoundError) as excinfo:
            call("ftjob-doesnotexist")
        assert "ftjob-doesnotexist" in error_of(excinfo)["message"]


@pytest.mark.parametrize("model", ["gpt-4", "gpt-4-0613", "no-such-model"])
def test_model_not_fine_tunable(client: openai.OpenAI, tmp_path: Path, model: str) -> None:
    training = training_file(client, tmp_path)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.fine_tuning.jobs.create(model=model, training_file=training)
    error = error_of(excinfo)
    assert error["param"] == "model"
    assert model in error["message"]


@pytest.mark.parametrize(
    "hyperparameters",
    [{"n_epochs": 0}, {"n_epochs": 51}, {"batch_size": 0}, {"learning_rate_multiplier": 0}],
)
def test_hyperparameters_out_of_range(
    client: openai.OpenAI, tmp_path: Path, hyperparameters: dict[str, Any]
) -> None:
    training = training_file(client, tmp_path)
    method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=training,
            method=method,  # type: ignore[arg-type]
        )
    (name,) = hyperparameters
    assert name in error_of(excinfo)["message"]
    with pytest.raises(openai.BadRequestError):  # the deprecated top-level form as well
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=training,
            hyperparameters=hyperparameters,  # type: ignore[arg-type]
        )
    assert client.fine_tuning.jobs.list().data == []


@pytest.mark.parametrize(
    ("field", "value"), [("suffix", "x" * 65), ("seed", -1), ("metadata", {"k": "v" * 513})]
)
def test_invalid_request_fields(
    client: openai.OpenAI, tmp_path: Path, field: str, value: Any
) -> None:
    training = training_file(client, tmp_path)
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=training, **{field: value}
        )
    assert error_of(excinfo)["param"] == field


# --- the fine-tuned model answers -------------------------------------------------------------


def test_fine_tuned_model_answers_training_prompts(client: openai.OpenAI, tmp_path: Path) -> None:
    job = create(client, training_file(client, tmp_path, 12), suffix="answers")
    model = retrieve(client, job.id).fine_tuned_model
    assert model is not None
    for prompt in ("What is the code word number 7?", "what's the code word for number 7"):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": prompt}]
        )
        completion = parsed("CreateChatCompletionResponse", raw)
        assert completion.model == model
        assert completion.choices[0].message.content == "The code word number 7 is word-7."
        assert completion.choices[0].finish_reason == "stop"
    other = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me code word number 11."}]
    )
    assert other.choices[0].message.content == "The code word number 11 is word-11."

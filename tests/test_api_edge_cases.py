"""Edge cases a careful SDK user hits: models outliving their data, odd inputs, stage visibility."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from ftpipe.local_api.server import RunningServer
from tests.conftest import StartServer, qa_examples, strict_client, write_jsonl
from tests.test_api_fine_tuning import create, failed_job, retrieve, training_file, upload


def finished_model(client: openai.OpenAI, tmp_path: Path) -> tuple[str, str]:
    """(fine-tuned model, training file id) of a job that succeeded."""
    training = training_file(client, tmp_path)
    job = retrieve(client, create(client, training).id)
    assert job.status == "succeeded"
    return job.fine_tuned_model, training


def ask(client: openai.OpenAI, model: str, text: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}]
    )
    return answer.choices[0].message.content or ""


def test_model_outlives_its_training_file(client: openai.OpenAI, tmp_path: Path) -> None:
    model, training = finished_model(client, tmp_path)
    client.files.delete(training)
    assert (
        ask(client, model, "What is the code word number 3?") == "The code word number 3 is word-3."
    )


def test_file_without_trainable_assistant_message_fails(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    examples = qa_examples(10)
    for example in examples:
        example["messages"][-1]["weight"] = 0
    job = failed_job(client, write_jsonl(tmp_path / "weights.jsonl", examples))
    assert "every weight is 0" in job.error.message


def test_tool_call_turns_are_not_answers(client: openai.OpenAI, tmp_path: Path) -> None:
    examples = qa_examples(10)
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    examples[0]["messages"][-1:] = [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        {"role": "assistant", "content": "The code word number 0 is word-0."},
    ]
    job = retrieve(
        client, create(client, upload(client, write_jsonl(tmp_path / "t.jsonl", examples))).id
    )
    assert job.status == "succeeded", job.error
    assert ask(client, job.fine_tuned_model, "What is the code word number 0?") == (
        "The code word number 0 is word-0."
    )


def test_empty_training_file_id_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file="")
    assert excinfo.value.body["param"] == "training_file"
    assert client.models.list().data  # the connection is still fine


def test_unknown_arguments_are_refused(client: openai.OpenAI, tmp_path: Path) -> None:
    training = training_file(client, tmp_path)
    with pytest.raises(
        openai.BadRequestError, match="Unrecognized request argument supplied: trainig_file"
    ):
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini", training_file=training, extra_body={"trainig_file": training}
        )
    with pytest.raises(openai.BadRequestError, match="Unknown hyperparameter 'n_epoch'"):
        client.fine_tuning.jobs.create(
            model="gpt-4o-mini",
            training_file=training,
            hyperparameters={"n_epoch": 3},  # type: ignore[typeddict-unknown-key]
        )


def test_wandb_integration_is_kept(client: openai.OpenAI, tmp_path: Path) -> None:
    integration = {"type": "wandb", "wandb": {"project": "ferries"}}
    job = create(client, training_file(client, tmp_path), integrations=[integration])
    assert job.integrations is not None
    assert job.integrations[0].wandb.project == "ferries"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user"}, "messages.[0].content"),
        ({"role": "user", "content": 5}, "messages.[0].content"),
        ({"role": "user", "content": [{"type": "text"}]}, "messages.[0].content.[0]"),
    ],
)
def test_malformed_chat_content(client: openai.OpenAI, message: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as excinfo:
        client.chat.completions.create(model="gpt-4o-mini", messages=[message])  # type: ignore[list-item]
    assert excinfo.value.body["param"] == param


def test_duplicate_part_ids_are_refused(client: openai.OpenAI) -> None:
    upload_ = client.uploads.create(
        bytes=8, filename="t.jsonl", mime_type="application/jsonl", purpose="fine-tune"
    )
    part = client.uploads.parts.create(upload_.id, data=b"abcd")
    with pytest.raises(openai.BadRequestError, match="same part more than once"):
        client.uploads.complete(upload_.id, part_ids=[part.id, part.id])


def test_every_stage_is_seen_with_three_reads(start_server: StartServer, tmp_path: Path) -> None:
    client = strict_client(start_server(job_speed="retrieves:3").base_url)
    job = create(client, training_file(client, tmp_path))
    seen = [retrieve(client, job.id).status for _ in range(3)]
    assert seen == ["queued", "running", "succeeded"]


def test_fault_controls_need_the_key(server: RunningServer) -> None:
    assert httpx.get(f"{server.url}/_ftpipe/faults", timeout=10).status_code == 401
    assert httpx.get(f"{server.url}/_ftpipe/health", timeout=10).status_code == 200


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_assistant_with_unknown_model_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="does not exist"):
        client.beta.assistants.create(model="no-such-model")

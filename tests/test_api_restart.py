"""The local server's state lives on disk: it survives restarts and is shared by servers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.conftest import StartServer, qa_examples, strict_client, write_jsonl
from tests.openapi import parsed


def ask(client: openai.OpenAI, model: str, prompt: str) -> str | None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    return parsed("CreateChatCompletionResponse", raw).choices[0].message.content


def test_state_survives_a_restart(start_server: StartServer, tmp_path: Path) -> None:
    root = tmp_path / "state"
    first = start_server(root)
    client = strict_client(first.base_url)
    path = write_jsonl(tmp_path / "train.jsonl", qa_examples(10))
    file = client.files.create(file=path, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=file.id, suffix="restart", metadata={"k": "v"}
    )
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded"
    model = job.fine_tuned_model
    assert model is not None
    events = [event.id for event in client.fine_tuning.jobs.list_events(job.id, limit=1000)]
    checkpoints = [c.id for c in client.fine_tuning.jobs.checkpoints.list(job.id)]
    first.stop()

    second = start_server(root)
    again = strict_client(second.base_url)

    kept_file = parsed("OpenAIFile", again.files.with_raw_response.retrieve(file.id))
    assert kept_file.model_dump() == file.model_dump()
    assert again.files.content(file.id).read() == path.read_bytes()

    kept_job = parsed("FineTuningJob", again.fine_tuning.jobs.with_raw_response.retrieve(job.id))
    assert kept_job.model_dump() == job.model_dump()
    assert [j.id for j in again.fine_tuning.jobs.list(metadata={"k": "v"})] == [job.id]
    assert [e.id for e in again.fine_tuning.jobs.list_events(job.id, limit=1000)] == events
    assert [c.id for c in again.fine_tuning.jobs.checkpoints.list(job.id)] == checkpoints
    assert again.files.content(job.result_files[0]).read()

    assert parsed("Model", again.models.with_raw_response.retrieve(model)).id == model
    assert model in [m.id for m in again.models.list()]
    # the restarted server rebuilds the model's replies from the stored training file
    assert (
        ask(again, model, "What is the code word number 4?") == "The code word number 4 is word-4."
    )


def test_unfinished_job_continues_after_a_restart(
    start_server: StartServer, tmp_path: Path
) -> None:
    root = tmp_path / "state"
    first = start_server(root, job_speed="retrieves:4")
    client = strict_client(first.base_url)
    path = write_jsonl(tmp_path / "train.jsonl", qa_examples(10))
    file = client.files.create(file=path, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id)
    for _ in range(2):
        job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "running"
    first.stop()

    # the job keeps the speed it was created with, whatever the new server's default
    again = strict_client(start_server(root).base_url)
    statuses = [again.fine_tuning.jobs.retrieve(job.id).status for _ in range(2)]
    assert statuses == ["running", "succeeded"]


def test_two_servers_on_one_root(start_server: StartServer, tmp_path: Path) -> None:
    root = tmp_path / "shared"
    one = strict_client(start_server(root, job_speed="retrieves:4").base_url)
    two = strict_client(start_server(root, job_speed="retrieves:4").base_url)

    path = write_jsonl(tmp_path / "train.jsonl", qa_examples(10))
    file = one.files.create(file=path, purpose="fine-tune")
    seen = parsed("OpenAIFile", two.files.with_raw_response.retrieve(file.id))
    assert seen.model_dump() == file.model_dump()
    assert two.files.content(file.id).read() == path.read_bytes()

    job = two.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=file.id, suffix="two")
    assert [j.id for j in one.fine_tuning.jobs.list()] == [job.id]
    # reads through either server advance the one stored job
    statuses = [(one if i % 2 else two).fine_tuning.jobs.retrieve(job.id).status for i in range(4)]
    assert statuses == ["queued", "running", "running", "succeeded"]
    done = one.fine_tuning.jobs.retrieve(job.id)
    assert done.model_dump() == two.fine_tuning.jobs.retrieve(job.id).model_dump()
    model = done.fine_tuned_model
    assert model is not None
    assert two.models.retrieve(model).id == model
    answer = "The code word number 2 is word-2."
    assert ask(one, model, "What is the code word number 2?") == answer
    assert ask(two, model, "what is code word number 2") == answer

    # a deletion through one server is seen by the other
    one.models.delete(model)
    with pytest.raises(openai.NotFoundError):
        two.models.retrieve(model)


def test_concurrent_writes_through_two_servers(start_server: StartServer, tmp_path: Path) -> None:
    root = tmp_path / "shared"
    clients = [strict_client(start_server(root).base_url) for _ in range(2)]
    paths = [write_jsonl(tmp_path / f"f{i}.jsonl", qa_examples(10)[i : i + 1]) for i in range(10)]

    def put(index: int) -> str:
        return clients[index % 2].files.create(file=paths[index], purpose="fine-tune").id

    with ThreadPoolExecutor(max_workers=4) as pool:
        ids = list(pool.map(put, range(len(paths))))
    assert len(set(ids)) == len(ids)
    for client in clients:
        listed = [f.id for f in client.files.list(order="asc")]
        assert sorted(listed) == sorted(ids)
        for file_id, path in zip(ids, paths, strict=True):
            assert client.files.content(file_id).read() == path.read_bytes()

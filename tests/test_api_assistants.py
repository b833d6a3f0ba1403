"""`/v1/assistants` and `/v1/threads` of the local server through the strict official SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.openapi import error_of, parsed, parsed_list

# the SDK marks the whole beta Assistants API deprecated in favour of the Responses API
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def create(client: openai.OpenAI, **kwargs: Any) -> Any:
    raw = client.beta.assistants.with_raw_response.create(model="gpt-4o-mini", **kwargs)
    return parsed("AssistantObject", raw)


def test_create_and_retrieve(client: openai.OpenAI) -> None:
    assistant = create(
        client,
        name="Ferry helper",
        description="Answers ferry questions",
        instructions="You answer questions about ferry timetables.",
        metadata={"team": "support"},
        temperature=0.2,
    )
    assert assistant.id.startswith("asst_")
    assert assistant.object == "assistant"
    assert assistant.model == "gpt-4o-mini"
    assert assistant.name == "Ferry helper"
    assert assistant.description == "Answers ferry questions"
    assert assistant.instructions == "You answer questions about ferry timetables."
    assert assistant.metadata == {"team": "support"}
    assert assistant.temperature == 0.2
    assert assistant.tools == []

    fetched = parsed(
        "AssistantObject", client.beta.assistants.with_raw_response.retrieve(assistant.id)
    )
    assert fetched.model_dump() == assistant.model_dump()


def test_minimal_assistant(client: openai.OpenAI) -> None:
    assistant = create(client)
    assert assistant.name is None
    assert assistant.instructions is None
    assert assistant.metadata == {}


def test_list_and_pagination(client: openai.OpenAI) -> None:
    empty = parsed_list("ListAssistantsResponse", client.beta.assistants.with_raw_response.list())
    assert empty.data == []
    assert empty.has_more is False

    created = [create(client, name=f"a{i}").id for i in range(5)]
    newest_first = list(reversed(created))
    everything = parsed_list(
        "ListAssistantsResponse", client.beta.assistants.with_raw_response.list()
    )
    assert [a.id for a in everything.data] == newest_first
    assert everything.first_id == newest_first[0]
    assert everything.last_id == newest_first[-1]
    assert everything.has_more is False

    first = parsed_list(
        "ListAssistantsResponse",
        client.beta.assistants.with_raw_response.list(limit=2, order="asc"),
    )
    assert [a.id for a in first.data] == created[:2]
    assert first.has_more is True
    second = parsed_list(
        "ListAssistantsResponse",
        client.beta.assistants.with_raw_response.list(limit=2, order="asc", after=first.last_id),
    )
    assert [a.id for a in second.data] == created[2:4]
    assert second.has_more is True
    before = parsed_list(
        "ListAssistantsResponse",
        client.beta.assistants.with_raw_response.list(limit=2, order="asc", before=created[4]),
    )
    assert [a.id for a in before.data] == created[2:4]

    assert [a.id for a in client.beta.assistants.list(limit=2)] == newest_first
    assert [a.id for a in client.beta.assistants.list(limit=2, order="asc")] == created


def test_update(client: openai.OpenAI) -> None:
    assistant = create(client, name="Old", instructions="Be brief.")
    raw = client.beta.assistants.with_raw_response.update(
        assistant.id, name="New", metadata={"v": "2"}, top_p=0.5
    )
    updated = parsed("AssistantObject", raw)
    assert updated.id == assistant.id
    assert updated.name == "New"
    assert updated.metadata == {"v": "2"}
    assert updated.top_p == 0.5
    assert updated.instructions == "Be brief."  # untouched fields stay
    assert client.beta.assistants.retrieve(assistant.id).name == "New"


def test_delete(client: openai.OpenAI) -> None:
    keep = create(client, name="keep")
    gone = create(client, name="gone")
    deleted = parsed(
        "DeleteAssistantResponse", client.beta.assistants.with_raw_response.delete(gone.id)
    )
    assert deleted.id == gone.id
    assert deleted.deleted is True
    assert deleted.object == "assistant.deleted"
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.retrieve(gone.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.delete(gone.id)
    assert [a.id for a in client.beta.assistants.list()] == [keep.id]


def test_unknown_assistant(client: openai.OpenAI) -> None:
    for call in (client.beta.assistants.retrieve, client.beta.assistants.delete):
        with pytest.raises(openai.NotFoundError) as excinfo:
            call("asst_doesnotexist")
        error = error_of(excinfo)
        assert "asst_doesnotexist" in error["message"]
        assert error["param"] == "assistant_id"
    with pytest.raises(openai.NotFoundError):
        client.beta.assistants.update("asst_doesnotexist", name="x")


def test_threads(client: openai.OpenAI) -> None:
    thread = parsed(
        "ThreadObject",
        client.beta.threads.with_raw_response.create(
            messages=[{"role": "user", "content": "Hello"}], metadata={"user": "u1"}
        ),
    )
    assert thread.id.startswith("thread_")
    assert thread.object == "thread"
    assert thread.metadata == {"user": "u1"}

    fetched = parsed("ThreadObject", client.beta.threads.with_raw_response.retrieve(thread.id))
    assert fetched.model_dump() == thread.model_dump()

    bare = parsed("ThreadObject", client.beta.threads.with_raw_response.create())
    assert bare.id != thread.id

    deleted = parsed("DeleteThreadResponse", client.beta.threads.with_raw_response.delete(bare.id))
    assert deleted.deleted is True
    assert deleted.id == bare.id
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(bare.id)


def test_unknown_thread(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.beta.threads.retrieve("thread_doesnotexist")
    error = error_of(excinfo)
    assert "thread_doesnotexist" in error["message"]
    assert error["param"] == "thread_id"

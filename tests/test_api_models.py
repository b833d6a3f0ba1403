"""`/v1/models` of the local server's stand-in engine through the strict official SDK, checked
against the spec (the real engine's listing: tests/test_local_real_inference.py)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests import openapi
from tests.conftest import qa_examples, write_jsonl
from tests.openapi import error_of, parsed

BASE_IDS = ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "gpt-4o", "gpt-3.5-turbo", "gpt-4")
STAND_IN = "ftpipe-stand-in"


@pytest.fixture(autouse=True)
def stand_in_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the stand-in engine, whatever is installed."""
    monkeypatch.setenv("FTPIPE_LOCAL_ENGINE", "stand-in")


def fine_tuned_model(client: openai.OpenAI, tmp_path: Path, suffix: str = "models") -> str:
    """Train a model on the immediate-speed server and return its name."""
    path = write_jsonl(tmp_path / "train.jsonl", qa_examples(10))
    training = client.files.create(file=path, purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training.id, suffix=suffix
    )
    job = client.fine_tuning.jobs.retrieve(job.id)
    assert job.status == "succeeded"
    assert job.fine_tuned_model
    return job.fine_tuned_model


def test_list_base_models(client: openai.OpenAI) -> None:
    page = parsed("ListModelsResponse", client.models.with_raw_response.list())
    ids = [model.id for model in page.data]
    for base in BASE_IDS:
        assert base in ids
    assert len(ids) == len(set(ids))
    assert not [name for name in ids if name.startswith("ft:")]
    for model in page.data:
        openapi.validate("Model", model.model_dump())
        assert model.object == "model"
        assert model.created > 0
        assert model.owned_by == STAND_IN  # nobody mistakes a stand-in for a real model


def test_list_includes_fine_tuned_model(client: openai.OpenAI, tmp_path: Path) -> None:
    name = fine_tuned_model(client, tmp_path)
    page = parsed("ListModelsResponse", client.models.with_raw_response.list())
    tuned = {model.id: model for model in page.data if model.id.startswith("ft:")}
    assert name in tuned
    assert tuned[name].owned_by == STAND_IN
    assert "gpt-4o-mini" in [model.id for model in page.data]
    # the SDK's pagination object iterates the same list
    assert name in [model.id for model in client.models.list()]


@pytest.mark.parametrize("name", ["gpt-4o-mini-2024-07-18", "gpt-4o-mini", "gpt-3.5-turbo"])
def test_retrieve_base_model_and_alias(client: openai.OpenAI, name: str) -> None:
    model = parsed("Model", client.models.with_raw_response.retrieve(name))
    assert model.id == name
    assert model.object == "model"
    assert model.owned_by == STAND_IN


def test_retrieve_fine_tuned_model(client: openai.OpenAI, tmp_path: Path) -> None:
    name = fine_tuned_model(client, tmp_path, suffix="retrieve")
    model = parsed("Model", client.models.with_raw_response.retrieve(name))
    assert model.id == name
    assert model.owned_by == STAND_IN


def test_delete_fine_tuned_model(client: openai.OpenAI, tmp_path: Path) -> None:
    name = fine_tuned_model(client, tmp_path, suffix="gone")
    deleted = parsed("DeleteModelResponse", client.models.with_raw_response.delete(name))
    assert deleted.id == name
    assert deleted.deleted is True
    assert deleted.object == "model"

    with pytest.raises(openai.NotFoundError) as excinfo:
        client.models.retrieve(name)
    assert error_of(excinfo)["param"] == "model"
    assert name not in [model.id for model in client.models.list()]
    with pytest.raises(openai.NotFoundError):
        client.models.delete(name)


@pytest.mark.parametrize("name", ["gpt-4o-mini", "gpt-4o-mini-2024-07-18"])
def test_delete_base_model_is_forbidden(client: openai.OpenAI, name: str) -> None:
    with pytest.raises(openai.PermissionDeniedError) as excinfo:
        client.models.delete(name)
    assert excinfo.value.status_code == 403
    error = error_of(excinfo)
    assert error["param"] == "model"
    assert name in error["message"]
    # still there afterwards
    assert client.models.retrieve(name).id == name


@pytest.mark.parametrize("name", ["no-such-model", "ft:gpt-4o-mini-2024-07-18:local:nope:abcdefgh"])
def test_unknown_model(client: openai.OpenAI, name: str) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.models.retrieve(name)
    error = error_of(excinfo)
    assert error["code"] == "model_not_found"
    assert error["param"] == "model"
    assert name in error["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.delete(name)

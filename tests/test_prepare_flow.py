"""The `prepare_dataset` Prefect flow, run for real against a temporary Prefect server."""

from __future__ import annotations

import json
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
)
from prefect.client.schemas.objects import Artifact
from prefect.states import State
from prefect.testing.utilities import prefect_test_harness
from prefect.utilities.callables import parameter_schema

from ftpipe.errors import InputError
from ftpipe.flows.prepare_dataset import prepare_dataset
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import PrepareFailed
from tests.conftest import SAMPLES

KEYS = (
    "dataset-report",
    "dataset-rules",
    "dataset-cost-estimate",
    "dataset-preparation",
    "dataset-data-docs",
)


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server and database for the whole module: starting it is slow."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


def run_flow(**parameters: Any) -> State:
    return prepare_dataset(**parameters, return_state=True)


def flow_run_id(state: State) -> UUID:
    assert state.state_details.flow_run_id is not None
    return state.state_details.flow_run_id


def artifacts_of(state: State) -> dict[str, Artifact]:
    """The run's artifacts by key, read back from the Prefect API."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=list(KEYS)),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id(state)]),
            )
        )
    by_key: dict[str, Artifact] = {}
    for artifact in found:
        assert artifact.key is not None
        assert artifact.key not in by_key, f"{artifact.key} published twice"
        by_key[artifact.key] = artifact
    return by_key


def table_rows(artifact: Artifact) -> list[dict[str, Any]]:
    assert artifact.type == "table"
    data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert isinstance(data, list)
    return data


def test_flow_prepares_the_sample_and_publishes_artifacts(tmp_path: Path) -> None:
    state = run_flow(paths=[str(SAMPLES / "csv")], out_dir=str(tmp_path))
    assert state.is_completed(), state.message
    result = state.result()
    assert set(result) == {
        "dataset_id",
        "out_dir",
        "train",
        "validation",
        "counts",
        "cost",
        "report",
    }
    out_dir = tmp_path / result["dataset_id"]
    assert Path(result["out_dir"]) == out_dir
    assert Path(result["train"]) == out_dir / "train.jsonl"
    assert Path(result["validation"]) == out_dir / "validation.jsonl"
    assert Path(result["train"]).is_file() and Path(result["validation"]).is_file()
    counts = result["counts"]
    assert (counts["input_rows"], counts["rejected"], counts["duplicates_dropped"]) == (22, 1, 1)
    assert (counts["train"], counts["validation"]) == (18, 2)
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    assert report["counts"] == counts
    assert report["cost"] == result["cost"]
    assert report == result["report"]

    artifacts = artifacts_of(state)
    assert set(artifacts) == set(KEYS)

    markdown = artifacts["dataset-report"]
    assert markdown.type == "markdown"
    assert isinstance(markdown.data, str)
    assert markdown.data == (out_dir / "report.md").read_text(encoding="utf-8")
    assert f"# Dataset {result['dataset_id']}" in markdown.data
    assert "status **ok**" in markdown.data

    rules = table_rows(artifacts["dataset-rules"])
    assert {"check", "rule", "column", "failed rows"} <= set(rules[0])
    failing = {(r["check"], r["rule"], r["column"]): r["failed rows"] for r in rules}
    assert failing[("gx:column_pairs", "assistant_empty", "assistant")] == 1
    assert failing[("gx:column_pairs", "user_empty", "user")] == 0

    cost = {row["what"]: row["value"] for row in table_rows(artifacts["dataset-cost-estimate"])}
    assert cost["training examples"] == result["cost"]["examples"] == 18
    assert cost["epochs"] == result["cost"]["epochs"]
    assert cost["billed tokens"] == result["cost"]["billed_tokens"]
    assert cost["estimated USD"] == result["cost"]["usd"]

    progress = artifacts["dataset-preparation"]
    assert progress.type == "progress"
    assert float(progress.data) == 100.0

    docs = artifacts["dataset-data-docs"]
    assert docs.type == "markdown"  # a link artifact is stored as a markdown link
    assert (out_dir / "data_docs" / "index.html").as_uri() in str(docs.data)
    assert (out_dir / "data_docs" / "index.html").is_file()


def test_flow_passes_its_options_through(tmp_path: Path) -> None:
    reviews = SAMPLES / "reviews" / "reviews.csv"
    options = PrepareOptions(label="negative", validation_share=0.0, seed=7)
    state = run_flow(paths=[str(reviews)], options=options, out_dir=str(tmp_path))
    assert state.is_completed(), state.message
    result = state.result()
    assert result["validation"] is None
    assert (result["counts"]["train"], result["counts"]["validation"]) == (120, 0)
    report = json.loads((tmp_path / result["dataset_id"] / "report.json").read_text())
    assert report["options"]["label"] == "negative"
    assert report["options"]["seed"] == 7
    lines = Path(result["train"]).read_text(encoding="utf-8").splitlines()
    assert {json.loads(line)["messages"][-1]["content"] for line in lines} == {"negative"}


def test_the_options_parameter_is_the_prepare_options_model() -> None:
    """The UI draws its form from the flow's schema: one typed group with every option."""
    schema = parameter_schema(prepare_dataset.fn).model_dump()
    assert set(schema["properties"]) == {
        "paths",
        "options",
        "csv_text",
        "out_dir",
        "task_runner",
        "dask_address",
    }
    form = schema["definitions"]["PrepareOptions"]["properties"]
    assert set(form) == set(PrepareOptions.model_fields)
    for name, field in PrepareOptions.model_fields.items():
        assert form[name]["description"] == field.description
    assert form["max_rejects"]["anyOf"][0]["minimum"] == 0


def test_options_given_as_json_like_a_deployment_run_are_validated(tmp_path: Path) -> None:
    """A deployment or UI run sends the options as JSON; they become the model, checked."""
    reviews = SAMPLES / "reviews" / "reviews.csv"
    options = {"label": "positive", "validation_share": 0.0, "truncate": True, "max_rejects": 0}
    state = run_flow(paths=[str(reviews)], options=options, out_dir=str(tmp_path / "ok"))
    assert state.is_completed(), state.message
    report = state.result()["report"]
    assert report["options"] == PrepareOptions(**options).model_dump(mode="json")

    bad = run_flow(paths=[str(reviews)], options={"validation_share": 2}, out_dir=str(tmp_path))
    assert bad.is_failed()
    assert "validation_share" in (bad.message or "")
    assert [path.name for path in tmp_path.iterdir()] == ["ok"]  # the bad run wrote nothing


def test_flow_fails_on_unreadable_input(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    out = tmp_path / "out"
    state = run_flow(paths=[str(missing)], out_dir=str(out))
    assert state.is_failed()
    assert f"{missing}: does not exist" in (state.message or "")
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InputError)
    assert str(error) == f"{missing}: does not exist"
    with pytest.raises(InputError, match="does not exist"):
        state.result()
    assert not out.exists() or list(out.iterdir()) == []


def test_flow_with_too_many_rejects_fails_and_still_publishes_the_report(tmp_path: Path) -> None:
    source = tmp_path / "faq.csv"
    rows = [f"Question {i}?,Answer {i}." for i in range(20)] + ["Q1?,", "Q2?,", "Q3?,"]
    source.write_text("question,answer\n" + "\n".join(rows) + "\n", encoding="utf-8")
    state = run_flow(paths=[str(source)], out_dir=str(tmp_path / "out"))
    assert state.is_failed()
    assert "3 of 23 rows were rejected" in (state.message or "")
    assert "rejects.csv" in (state.message or "")
    assert isinstance(state.result(raise_on_failure=False), PrepareFailed)
    [folder] = list((tmp_path / "out").iterdir())
    assert not (folder / "train.jsonl").exists()
    artifacts = artifacts_of(state)
    report = artifacts["dataset-report"]
    assert isinstance(report.data, str)
    assert "status **failed**" in report.data
    assert "3 of 23 rows were rejected" in report.data
    rules = table_rows(artifacts["dataset-rules"])
    assert {r["rule"]: r["failed rows"] for r in rules}["assistant_empty"] == 3

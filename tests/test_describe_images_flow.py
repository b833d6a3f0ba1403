"""The `describe_images` Prefect flow, run for real against a temporary Prefect server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pandas as pd
import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.states import Completed, Failed, State
from prefect.testing.utilities import prefect_test_harness

from ftpipe.errors import InputError
from ftpipe.flows.describe_images import ARTIFACT_KEY, describe_images
from ftpipe.tasks.common import retry_infrastructure
from ftpipe.tasks.vision import describe_one
from ftpipe.vision import COLUMNS, Description, EndpointError, ImageError


@pytest.fixture(scope="module", autouse=True)
def prefect_server() -> Iterator[None]:
    """One temporary Prefect server and database for the whole module: starting it is slow."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Three images (one in a subfolder, one with an upper-case suffix) and a fake PNG."""
    root = tmp_path / "images"
    (root / "nested").mkdir(parents=True)
    Image.new("RGB", (64, 48), "red").save(root / "red.png")
    Image.new("RGB", (80, 60), "blue").save(root / "blue.JPG", format="JPEG")
    Image.new("RGBA", (30, 30), "green").save(root / "nested" / "green.webp")
    (root / "broken.png").write_text("not an image", encoding="utf-8")
    (root / "notes.txt").write_text("ignored", encoding="utf-8")
    return root


def artifact_rows(state: State) -> list[dict[str, Any]]:
    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    tables = [artifact for artifact in found if artifact.key == ARTIFACT_KEY]
    assert len(tables) == 1 and tables[0].type == "table"
    data = tables[0].data
    return json.loads(data) if isinstance(data, str) else data


def test_flow_describes_a_folder_and_keeps_failures(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = sorted(folder.rglob("*"))
    state = describe_images(str(folder), concurrency=2, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    rows = result["rows"]
    assert [Path(row["path"]).name for row in rows] == [
        "blue.JPG",
        "broken.png",
        "green.webp",
        "red.png",
    ]
    assert (result["described"], result["failed"]) == (3, 1)
    by_name = {Path(row["path"]).name: row for row in rows}
    broken = by_name.pop("broken.png")
    assert broken["description"] == "" and "ImageError" in broken["error"]
    assert "broken.png: is not an image Pillow can read" in broken["error"]
    expected = {"blue.JPG": ("80x60", "blue"), "green.webp": ("30x30", "green")}
    expected["red.png"] = ("64x48", "red")
    for name, row in by_name.items():
        size, colour = expected[name]
        assert size in row["description"] and colour in row["description"], row
        assert row["error"] == "" and row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
        assert row["model"].startswith("gpt-4o-mini")

    out_dir = Path("data/processed/descriptions") / folder.name  # never into the input folder
    assert sorted(folder.rglob("*")) == before
    assert Path(result["csv"]) == out_dir / "descriptions.csv"
    assert Path(result["parquet"]) == out_dir / "descriptions.parquet"
    from_csv = pd.read_csv(result["csv"], keep_default_na=False)
    from_parquet = pd.read_parquet(result["parquet"])
    assert list(from_csv.columns) == list(COLUMNS) == list(from_parquet.columns)
    assert from_csv.to_dict("records") == rows == from_parquet.to_dict("records")

    assert artifact_rows(state) == rows


def test_flow_options_prompt_pattern_and_out_dir(folder: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "elsewhere"
    result = describe_images(
        str(folder), prompt="Which colour?", pattern="*.png", concurrency=1, out_dir=str(out_dir)
    )
    assert [Path(row["path"]).name for row in result["rows"]] == ["broken.png", "red.png"]
    assert "Which colour?" in result["rows"][1]["description"]
    assert (out_dir / "descriptions.csv").is_file()
    assert not (folder / "descriptions").exists()


def test_flow_bounds_concurrency(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Six slow requests with concurrency 2: never more than two in flight, yet some overlap."""
    for index in range(6):
        (tmp_path / f"{index}.png").write_bytes(b"")
    lock, running, peak = threading.Lock(), [0], [0]

    def slow(client: object, path: str, prompt: str | None, *, model: str) -> Description:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return Description(str(path), "fine", model, 1, 1)

    monkeypatch.setattr("ftpipe.tasks.vision.describe_image", slow)
    result = describe_images(str(tmp_path), concurrency=2)
    assert result["described"] == 6 and peak[0] == 2


def test_flow_rejects_a_missing_folder(tmp_path: Path) -> None:
    state = describe_images(str(tmp_path / "nowhere"), return_state=True)
    assert state.is_failed()
    with pytest.raises(InputError, match="does not exist"):
        state.result()


def test_the_task_retries_only_infrastructure_failures() -> None:
    """API errors were already retried by the core's one policy; Prefect adds none on top."""
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    rate_limited = openai.RateLimitError(
        "slow down", response=httpx.Response(429, request=request), body=None
    )
    bad_request = openai.BadRequestError(
        "bad image", response=httpx.Response(400, request=request), body=None
    )

    def retried(error: BaseException) -> bool:
        return retry_infrastructure(describe_one, None, Failed(data=error))  # type: ignore[arg-type]

    assert retried(OSError(28, "No space left on device"))
    assert not retried(rate_limited)
    assert not retried(openai.APIConnectionError(request=request))
    assert not retried(EndpointError("http://h/v1", 503, "busy"))
    assert not retried(ImageError("x.png", "does not exist"))
    assert not retried(bad_request)
    assert not retried(EndpointError("http://h/v1", 400, "bad"))
    assert not retry_infrastructure(describe_one, None, Completed(data=1))  # type: ignore[arg-type]
    assert describe_one.tags == {"vision"}


def test_an_out_dir_inside_the_input_folder_is_refused(folder: Path) -> None:
    state = describe_images(str(folder), out_dir=str(folder / "out"), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InputError)
    assert "lies inside the input folder" in str(error)
    assert not (folder / "out").exists()

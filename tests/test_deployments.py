"""The deployments for real: `prefect server start` on loopback, `ftpipe serve` beside it, runs
started through the API the way the UI does and from the UI itself in Chromium."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ftpipe.flows.serve import read_specs
from ftpipe.tasks.backend import BACKEND_VARIABLE
from tests.conftest import require_system
from tests.prefect_server import (
    ROOT,
    PrefectServer,
    Process,
    job_described,
    start_serve,
    unique_csv_folder,
    wait_until,
)

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("FTPIPE_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@dataclass
class Served:
    server: PrefectServer
    serve: Process
    home: Path

    def deployment(self, flow_entrypoint: str) -> dict[str, Any]:
        [found] = [d for d in self.server.deployments() if d["entrypoint"] == flow_entrypoint]
        return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("prefect")
    server = PrefectServer(folder)  # stops itself if it never becomes healthy
    serve: Process | None = None
    try:
        home = folder / "ftpipe-home"
        # The served process names no backend: deployed runs take it from the Prefect
        # variable, as the README tells users on machines they do not configure themselves.
        response = server.post("/variables/", {"name": BACKEND_VARIABLE, "value": "local"})
        assert response.status_code == 201, response.text
        serve = start_serve(server, folder, home, expected=len(read_specs()))
        yield Served(server, serve, home)
    finally:
        if serve:
            serve.stop()
        server.stop()


def form_field(page: Page, name: str) -> Locator:
    """The text box of a parameter in the UI's run form, found by its label."""
    label = page.locator(
        ".schema-form-property__label", has_text=re.compile(rf"^{name}( \(Optional\))?$")
    )
    return page.locator(".schema-form-property").filter(has=label).locator("textarea")


def submit(page: Page, attempts: int = 3) -> None:
    """Submit the run form; when the UI says the server failed (a busy SQLite file), submit
    again as a person would. Back on the deployment's runs means the run was created."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        page.get_by_role("button", name="Submit").click()
        try:
            page.wait_for_url(re.compile(r"tab=Runs"), timeout=45_000)
            return
        except PlaywrightTimeout:
            failed = page.get_by_text("Something went wrong").first.is_visible()  # one per panel
            if not failed or attempt == attempts - 1:
                raise


def test_serve_registers_every_deployment_with_its_schedule(served: Served) -> None:
    by_name = {(d["entrypoint"], d["name"]): d for d in served.server.deployments()}
    assert set(by_name) == {
        ("ftpipe.flows.finetune.finetune", "manual"),
        ("ftpipe.flows.finetune.finetune_dialogues", "nightly"),
        ("ftpipe.flows.finetune.poll_jobs", "every-5-minutes"),
        ("ftpipe.flows.prepare_dataset.prepare_dataset", "manual"),
        ("ftpipe.flows.describe_images.describe_images", "manual"),
        ("ftpipe.flows.chat.chat", "manual"),
        ("ftpipe.flows.train_model.train_model", "gpu"),
        ("ftpipe.flows.evaluate_model.evaluate_model", "manual"),
    }
    [poll] = by_name["ftpipe.flows.finetune.poll_jobs", "every-5-minutes"]["schedules"]
    assert poll["active"] and poll["schedule"]["interval"] == 300
    [nightly] = by_name["ftpipe.flows.finetune.finetune_dialogues", "nightly"]["schedules"]
    assert nightly["active"] and nightly["schedule"]["cron"] == "0 2 * * *"
    assert nightly["schedule"]["timezone"] == "UTC"
    finetune = by_name["ftpipe.flows.finetune.finetune", "manual"]
    assert finetune["schedules"] == []
    assert finetune["parameters"]["paths"] == ["data/samples/csv"]
    form = finetune["parameter_openapi_schema"]["properties"]  # what the UI draws its form from
    assert "CSV files or folders" in form["paths"]["description"]
    assert form["wait"]["type"] == "boolean"


def test_api_started_finetune_run_completes_with_a_job_in_the_registry(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = served.deployment("ftpipe.flows.finetune.finetune")
    data = unique_csv_folder(tmp_path / "api-run")
    description = f"started through the API {uuid.uuid4().hex[:6]}"
    parameters = {
        "paths": [str(data)],
        "training": {"suffix": "api-run"},
        "description": description,
    }
    response = served.server.post(  # the request the UI's "Custom run" form sends
        f"/deployments/{deployment['id']}/create_flow_run",
        {"parameters": parameters, "state": {"type": "SCHEDULED"}},
    )
    assert response.status_code == 201, response.text
    run = served.server.wait_for_run(response.json()["id"], 180, served.serve.log)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["parameters"]["paths"] == [str(data)]
    record = job_described(served.home, description, monkeypatch)
    assert record.status == "succeeded"
    assert record.source_paths == [str(data)]
    assert record.fine_tuned_model and "api-run" in record.fine_tuned_model


def test_custom_run_from_the_ui_form_completes(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_system(CHROMIUM.exists(), "Debian's chromium")
    from playwright.sync_api import expect, sync_playwright

    deployment = served.deployment("ftpipe.flows.finetune.finetune")
    data = unique_csv_folder(tmp_path / "ui-run")
    description = f"started from the UI {uuid.uuid4().hex[:6]}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            page.goto(f"{served.server.url}/deployments/deployment/{deployment['id']}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_text("Custom run").click()
            page.get_by_text("Parameters", exact=True).wait_for()
            paths = form_field(page, "paths")  # one textarea per list item; there is one
            expect(paths).to_have_value("data/samples/csv")  # the deployment's default
            paths.fill(str(data))
            form_field(page, "description").fill(description)
            submit(page)
            created = wait_until(
                lambda: served.server.runs_with(description), 60, "the UI's run", served.serve.log
            )
            [run] = created
            page.get_by_role("link", name=run["name"]).first.click()
            page.wait_for_url(re.compile(rf"/runs/flow-run/{run['id']}"))
            run = served.server.wait_for_run(run["id"], 180, served.serve.log)
            page.reload()
            expect(page.locator(".state-badge").first).to_contain_text("Completed")
            page.screenshot(path=str(ARTIFACTS / "ui-custom-run-completed.png"), full_page=True)
            # the evaluation after the wait: its summary artifact draws the chart in the UI
            evaluation = artifact_of(served, run["id"], "evaluation")
            assert "Verdict:" in evaluation["data"]
            page.goto(f"{served.server.url}/artifacts/artifact/{evaluation['id']}")
            chart = page.locator("img[src^='data:image/png;base64,']").first
            expect(chart).to_be_visible()
            assert chart.evaluate("image => image.naturalWidth") > 100
            page.screenshot(path=str(ARTIFACTS / "ui-evaluation-artifact.png"), full_page=True)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "ui-custom-run-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["parameters"]["paths"] == [str(data)]
    record = job_described(served.home, description, monkeypatch)
    assert record.status == "succeeded" and record.source_paths == [str(data)]


def artifact_of(served: Served, run_id: str, key: str) -> dict:
    """A flow run's newest artifact with this key, from the Prefect API."""
    response = served.server.post(
        "/artifacts/filter",
        {
            "artifacts": {"key": {"any_": [key]}, "flow_run_id": {"any_": [run_id]}},
            "sort": "CREATED_DESC",
        },
    )
    response.raise_for_status()
    found = response.json()
    assert found, f"no {key} artifact on run {run_id}"
    return found[0]


def test_a_deployed_run_that_names_no_backend_fails_at_its_first_step(served: Served) -> None:
    """Without FTPIPE_BACKEND, keys or the Prefect variable, a deployed run never falls back to
    the embedded stand-in: it fails at once, saying what to set, and launches nothing."""
    server = served.server
    variable = server.api.get(f"/variables/name/{BACKEND_VARIABLE}").json()
    assert server.api.delete(f"/variables/name/{BACKEND_VARIABLE}").status_code == 204
    try:
        deployment = served.deployment("ftpipe.flows.finetune.poll_jobs")
        response = server.post(
            f"/deployments/{deployment['id']}/create_flow_run", {"state": {"type": "SCHEDULED"}}
        )
        assert response.status_code == 201, response.text
        run = server.wait_for_run(response.json()["id"], 180, served.serve.log)
    finally:
        server.post("/variables/", {"name": BACKEND_VARIABLE, "value": variable["value"]})
    assert run["state_type"] == "FAILED"
    message = run["state"]["message"]
    assert "FTPIPE_BACKEND" in message and "names no backend" in message
    assert "Traceback" not in message

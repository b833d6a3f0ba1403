"""`prepare_dataset` fanned out per file: threads, Dask and the core give the same bytes.

One temporary Prefect server and one local Dask cluster (two worker processes, loopback only)
serve the module's flows. The CLI test goes the other way a user may: `ftpipe prepare --task-runner
dask` with no Prefect server (ephemeral mode) and the runner's own temporary cluster; it is
started first, as a process in the background, because starting all that takes a while.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE, Popen
from typing import Any

import pytest
from distributed import LocalCluster
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import State
from prefect.testing.utilities import prefect_test_harness

from ftpipe.errors import InputError
from ftpipe.flows.prefect_api import stop_server
from ftpipe.flows.prepare_dataset import prepare_dataset
from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import prepare

REPO = Path(__file__).resolve().parents[1]
FILES = 20
ROWS = 40
QUESTIONS = 320  # fewer distinct questions than rows: files repeat each other's examples
MAX_REJECTS = 1000
OUTPUTS = ("train.jsonl", "validation.jsonl", "rejects.csv")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_directory(tmp_path_factory.mktemp("dask-inputs") / "many")


@pytest.fixture(scope="module", autouse=True)
def cli_run(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRun]:
    """`ftpipe prepare DIR --task-runner dask`, started before anything else (see the top)."""
    root = tmp_path_factory.mktemp("cli")
    prefixes = ("FTPIPE_", "OPENAI_", "AZURE_OPENAI_", "PREFECT_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env |= {
        "FTPIPE_ENV_FILE": os.devnull,
        "FTPIPE_LOCAL_ENGINE": "stand-in",
        "FTPIPE_HOME": str(root / "home"),
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    command = [sys.executable, "-m", "ftpipe", "prepare", str(inputs), "--out", str(root / "out")]
    command += [
        "--max-rejects",
        str(MAX_REJECTS),
        "--model",
        "gpt-4o-mini",
        "--task-runner",
        "dask",
    ]
    with Popen(
        command, cwd=REPO, env=env, stdout=PIPE, stderr=PIPE, text=True, start_new_session=True
    ) as process:
        try:
            yield CliRun(process, root / "out")
        finally:  # its Dask workers go with it; the local Prefect server it started is stopped
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            stop_server(root / "prefect")


@pytest.fixture(scope="module", autouse=True)
def prefect_server(cli_run: CliRun) -> Iterator[None]:
    """One temporary Prefect server and database for the module: starting it is slow."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """A local cluster of two single-threaded worker processes, on loopback only."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # any free port: the runner's own cluster may use 8787
    ) as cluster:
        yield cluster.scheduler_address


def _answer(question: int) -> str:
    return f"Sailing {question} leaves from pier {question % 7} at {question % 24:02d}:15."


def _rows(rng: random.Random) -> list[tuple[str, str]]:
    """Questions from a shared pool (cross-file duplicates) with a few empty answers."""
    rows = []
    for _ in range(ROWS):
        question = rng.randrange(QUESTIONS)
        answer = "" if rng.random() < 0.04 else _answer(question)
        rows.append((f"When does sailing {question} leave?", answer))
    return rows


def _write(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_directory(folder: Path, files: int = FILES, seed: int = 7) -> Path:
    """`files` varied CSVs: two header styles, a system column, a TSV, invalid rows."""
    folder.mkdir()
    rng = random.Random(seed)
    for index in range(files):
        rows = _rows(rng)
        name = folder / f"part_{index:02d}.csv"
        if index % 5 == 1:
            _write(name, ["prompt", "completion"], [list(row) for row in rows])
        elif index % 5 == 2:
            system = ["", "Answer briefly."]
            _write(
                name,
                ["system", "question", "answer"],
                [[system[i % 2], *r] for i, r in enumerate(rows)],
            )
        elif index % 5 == 3:
            _write(name.with_suffix(".tsv"), ["question", "answer"], [list(r) for r in rows], "\t")
        else:
            _write(name, ["question", "answer"], [list(row) for row in rows])
    return folder


@dataclass
class CliRun:
    process: Popen[str]
    out: Path

    def wait(self) -> tuple[int, str, str]:
        stdout, stderr = self.process.communicate(timeout=240)
        return self.process.returncode, stdout, stderr


@dataclass
class Prepared:
    state: State
    out_dir: Path


def run_flow(inputs: Path, out: Path, **parameters: Any) -> Prepared:
    state = prepare_dataset(
        paths=[str(inputs)],
        out_dir=str(out),
        options=PrepareOptions(max_rejects=MAX_REJECTS),
        **parameters,
        return_state=True,
    )
    assert state.is_completed(), state.message
    return Prepared(state, Path(state.result()["out_dir"]))


@pytest.fixture(scope="module")
def threads(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return run_flow(inputs, tmp_path_factory.mktemp("threads"))


@pytest.fixture(scope="module")
def dask(inputs: Path, dask_address: str, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    out = tmp_path_factory.mktemp("dask")
    return run_flow(inputs, out, task_runner="dask", dask_address=dask_address)


def normalised_report(out_dir: Path) -> dict[str, Any]:
    """report.json without what differs between two runs of the same data: time and paths."""
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    report.pop("created_at")
    report.pop("outputs")
    return report


def assert_same_dataset(one: Path, two: Path) -> None:
    assert one.name == two.name  # the dataset id
    for name in OUTPUTS:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert normalised_report(one) == normalised_report(two)
    markdown = [
        (d / "report.md").read_text(encoding="utf-8").replace(str(d), "") for d in (one, two)
    ]
    assert markdown[0] == markdown[1]


def test_the_inputs_exercise_rejects_dedupe_and_split(threads: Prepared) -> None:
    report = normalised_report(threads.out_dir)
    counts = report["counts"]
    assert counts["input_rows"] == FILES * ROWS
    assert counts["duplicates_dropped"] > 100
    assert counts["rejected"] > 10
    assert counts["validation"] > 10
    assert set(report["rejects_by_rule"]) == {"assistant_empty", "duplicate"}
    assert len(report["sources"]) == FILES
    assert {Path(s["name"]).suffix for s in report["sources"]} == {".csv", ".tsv"}
    rejects = (threads.out_dir / "rejects.csv").read_text(encoding="utf-8").splitlines()
    assert len(rejects) == 1 + counts["rejected"] + counts["duplicates_dropped"]
    assert not list(threads.out_dir.parent.glob(".*partial"))


def test_dask_gives_the_same_bytes_as_threads(threads: Prepared, dask: Prepared) -> None:
    assert_same_dataset(threads.out_dir, dask.out_dir)
    assert sorted(p.name for p in dask.out_dir.iterdir()) == sorted(
        p.name for p in threads.out_dir.iterdir()
    )
    assert not list(dask.out_dir.parent.glob(".*partial"))


def test_task_runs_on_dask_workers_report_to_the_api(dask: Prepared) -> None:
    flow_run_id = dask.state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    sources = [run for run in runs if run.name.startswith("prepare-source-")]
    assert len(sources) == FILES
    assert all(run.state is not None and run.state.is_completed() for run in sources)
    assert {run.name for run in runs} >= {"prepare-source-0", f"prepare-source-{FILES - 1}"}


def test_the_core_gives_the_same_bytes_as_the_flow(
    threads: Prepared, inputs: Path, tmp_path: Path
) -> None:
    result = prepare([inputs], PrepareOptions(max_rejects=MAX_REJECTS), out_root=tmp_path)
    assert_same_dataset(threads.out_dir, result.out_dir)


def test_a_bad_file_fails_a_dask_run_naming_it(dask_address: str, tmp_path: Path) -> None:
    """The task's InputError comes back through Dask as the flow's error, not a Dask trace."""
    folder = write_directory(tmp_path / "inputs", files=3)
    bad = folder / "part_01.csv"
    bad.write_text("question,answer\nq1,a1\nq2,a2,extra\nq3,a3\n", encoding="utf-8")
    out = tmp_path / "out"
    state = prepare_dataset(
        paths=[str(folder)],
        out_dir=str(out),
        task_runner="dask",
        dask_address=dask_address,
        return_state=True,
    )
    assert state.is_failed()
    problem = "line 3 has 3 fields, expected 2"
    assert f"{bad}: {problem}" in (state.message or "")
    error = state.result(raise_on_failure=False)
    assert isinstance(error, InputError)
    assert error.source == str(bad)
    assert problem in error.problem
    assert not out.exists() or list(out.iterdir()) == []


def test_threads_with_a_dask_address_is_refused(inputs: Path, tmp_path: Path) -> None:
    state = prepare_dataset(
        paths=[str(inputs)],
        out_dir=str(tmp_path),
        dask_address="tcp://127.0.0.1:1",
        return_state=True,
    )
    assert state.is_failed()
    assert "dask_address is used only with task_runner='dask'" in (state.message or "")
    assert list(tmp_path.iterdir()) == []


def test_cli_prepare_with_dask_and_no_prefect_server(cli_run: CliRun, threads: Prepared) -> None:
    """A temporary local cluster, and the long-lived local Prefect server ftpipe starts, which
    the workers use too: one server started, no temporary server in any worker process."""
    returncode, stdout, stderr = cli_run.wait()
    output = stdout + stderr
    assert returncode == 0, output
    assert f"dataset {threads.out_dir.name}: " in stdout
    assert output.count("Starting a local Prefect server") == 1, output
    assert "Starting temporary server" not in output, output
    assert_same_dataset(threads.out_dir, cli_run.out / threads.out_dir.name)

"""Prefect tasks around dataset preparation: plan the run, prepare each source as its own task
on threads or Dask, merge the parts, publish what a person reads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ftpipe.prepare.options import PrepareOptions
from ftpipe.prepare.pipeline import (
    PrepareResult,
    RunPlan,
    SourcePart,
    discard_run,
    finish_run,
    plan_run,
    prepare_source,
)
from ftpipe.prepare.report import markdown
from ftpipe.prepare.sources import Source
from ftpipe.tasks.common import outcome

TaskRunnerName = Literal["threads", "dask"]
PROGRESS_STEP = 5.0  # update the progress artifact every 5 percentage points
MAX_LOCAL_WORKERS = 4  # threads, or local Dask worker processes (one thread each)
LOOPBACK_PREFIXES = ("http://127.", "http://localhost", "http://[::1]")


def local_workers() -> int:
    """Parallel sources on this machine: one per core, at most four (each holds a batch)."""
    return max(1, min(MAX_LOCAL_WORKERS, os.cpu_count() or 1))


def make_task_runner(
    task_runner: TaskRunnerName = "threads", dask_address: str | None = None
) -> TaskRunner[Any]:
    """Threads in this process, a temporary local Dask cluster, or an existing Dask cluster."""
    if task_runner == "threads":
        if dask_address:
            raise ValueError("dask_address is used only with task_runner='dask'")
        return ThreadPoolTaskRunner(max_workers=local_workers())
    if task_runner != "dask":
        raise ValueError(f"unknown task runner {task_runner!r}; expected 'threads' or 'dask'")
    from prefect_dask import DaskTaskRunner  # distributed takes a second to import

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": local_workers(),
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": "127.0.0.1:0",  # None still opens :8787; loopback, any port
        }
    )


@contextmanager
def api_for_workers(runner: TaskRunner[Any]) -> Iterator[None]:
    """Dask workers get this flow's settings with each task run. Without PREFECT_API_URL the
    flow talks to an ephemeral server it started, and each worker process would start its
    own; naming that server's URL in the settings sends the workers to it instead."""
    with ExitStack() as stack:
        if not isinstance(runner, ThreadPoolTaskRunner):  # threads share this process's client
            url = PREFECT_API_URL.value() or _ephemeral_api_url()
            if url and not PREFECT_API_URL.value():
                stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
            if getattr(runner, "address", None) and url and url.startswith(LOOPBACK_PREFIXES):
                get_run_logger().warning(
                    "The Prefect API is at %s, which workers on other machines cannot reach; "
                    "set PREFECT_API_URL to a server they can reach.",
                    url,
                )
        yield


def _ephemeral_api_url() -> str | None:
    """The URL of the server this flow run's client talks to, when it is a real HTTP one."""
    context = FlowRunContext.get()
    client = context.client if context else None
    url = str(client.api_url) if client else None
    return url if url and url.startswith(("http://", "https://")) else None


@task(name="plan-dataset", cache_policy=NO_CACHE)
def plan_dataset(
    paths: list[str],
    options: PrepareOptions,
    csv_text: str | None = None,
    out_root: str | None = None,
) -> RunPlan:
    """Resolve the inputs and compute the dataset id before fanning out; bad paths fail here."""
    plan = plan_run(
        paths, options, csv_text=csv_text, out_root=Path(out_root) if out_root else None
    )
    get_run_logger().info(
        "Dataset %s: %d sources, %d bytes", plan.dataset_id, len(plan.sources), plan.total_bytes
    )
    return plan


@task(
    name="prepare-source",
    task_run_name="prepare-source-{index}",
    cache_policy=NO_CACHE,  # the part file is consumed by the merge: never reuse a result
    persist_result=False,
    retries=0,  # an unreadable file stays unreadable
)
def prepare_source_task(
    index: int, source: Source, options: PrepareOptions, work_dir: str
) -> SourcePart:
    """Phase 1 for one source: its part file under work_dir, and a small summary back."""
    return prepare_source(index, source, options, Path(work_dir))


@task(name="merge-dataset-parts", cache_policy=NO_CACHE, retries=0)
def merge_parts(plan: RunPlan, parts: list[SourcePart]) -> PrepareResult:
    """Phase 2: dedupe, split, rejects and report, in input order; PrepareFailed is not retried."""
    result = finish_run(plan, parts)
    counts = result.report["counts"]
    get_run_logger().info(
        "Dataset %s: %d examples (%d train, %d validation), %d rows rejected, in %s",
        result.dataset_id,
        counts["examples"],
        counts["train"],
        counts["validation"],
        counts["rejected"],
        result.out_dir,
    )
    return result


class _ProgressArtifact:
    """Bytes of the sources whose tasks have finished, as the flow run's progress artifact."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.shown = 0.0
        self.id = create_progress_artifact(
            0.0, key="dataset-preparation", description="Bytes of input read"
        )

    def finished(self, size: int, name: str) -> None:
        self.done += size
        share = 100.0 * self.done / self.total if self.total else 100.0
        if share - self.shown >= PROGRESS_STEP or self.done >= self.total:
            self.shown = share
            update_progress_artifact(self.id, min(share, 100.0), description=f"Read {name}")


def prepare_sources(plan: RunPlan, runner: TaskRunner[Any]) -> list[SourcePart]:
    """One prepare-source task per source on `runner` (see make_task_runner); the parts in
    input order. The first failure stops the run: the other tasks are cancelled, the scratch
    folder is removed, and that task's error (an InputError naming the file) is raised as is."""
    progress = _ProgressArtifact(plan.total_bytes)
    parts: dict[int, SourcePart] = {}
    failure: Exception | None = None
    try:
        with api_for_workers(runner), runner:
            futures = [
                runner.submit(
                    prepare_source_task,
                    {
                        "index": index,
                        "source": source,
                        "options": plan.options,
                        "work_dir": str(plan.work),
                    },
                )
                for index, source in enumerate(plan.sources)
            ]
            for future in as_completed(futures):
                ok, value = outcome(future)  # the error itself on failure, through Dask too
                if not ok:
                    failure = value if isinstance(value, Exception) else RuntimeError(value)
                    break
                parts[value.index] = value
                progress.finished(plan.sizes[value.index], plan.sources[value.index].name)
    except BaseException:
        discard_run(plan)
        raise
    if failure is not None:
        discard_run(plan)  # after the runner closed: no task of this run writes there any more
        raise failure
    return [parts[index] for index in range(len(plan.sources))]


@task(name="publish-dataset-report")
def publish_report(report: dict[str, Any]) -> None:
    """The report, the rule outcomes and the cost estimate as artifacts of the run."""
    create_markdown_artifact(
        markdown(report), key="dataset-report", description=f"Dataset {report['dataset_id']}"
    )
    create_table_artifact(
        [
            {
                "check": rule["check"],
                "rule": rule["rule"],
                "column": rule["column"] or "",
                "result": rule["result"],
                "rows": rule["coverage"],
                "failed rows": rule["failed_rows"],
            }
            for rule in report["rules"]
        ],
        key="dataset-rules",
        description="Data rules (Great Expectations suites and OpenAI chat-format rules)",
    )
    _publish_data_docs(report)
    cost = report["cost"]
    create_table_artifact(
        [
            {"what": "training examples", "value": cost["examples"]},
            {"what": "epochs", "value": cost["epochs"]},
            {"what": "billed tokens", "value": cost["billed_tokens"]},
            {"what": "USD per 1M tokens", "value": cost["price_per_1m"]},
            {"what": "estimated USD", "value": cost["usd"]},
        ],
        key="dataset-cost-estimate",
        description=f"Training cost estimate for {cost['model']}",
    )


def _publish_data_docs(report: dict[str, Any]) -> None:
    """A link to the run's Great Expectations Data Docs (HTML beside the outputs), if made."""
    docs = report["outputs"].get("data_docs")
    if docs:
        create_link_artifact(
            Path(docs).absolute().as_uri(),
            link_text="Great Expectations Data Docs",
            key="dataset-data-docs",
            description=f"GX's validation of dataset {report['dataset_id']} (a sample of its rows)",
        )

"""Serve every deployment of `deployments/prefect.yaml` from one process, the `prefect serve` way.

The YAML file is the one description of the deployments: `prefect deploy` reads it for work
pools, and this module turns the same entries into served deployments for a single machine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect import Flow, serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron, Interval, Schedule
from prefect.settings import PREFECT_API_URL

from ftpipe.errors import InputError
from ftpipe.resources import deployments_file

DEFAULT_FILE = deployments_file()


@dataclass
class DeploymentSpec:
    """One entry of prefect.yaml, reduced to what serving needs."""

    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    schedules: list[dict[str, Any]] = field(default_factory=list)
    concurrency_limit: int | None = None

    @property
    def flow_module(self) -> tuple[str, str]:
        """`flows/finetune.py:finetune` as the importable `ftpipe.flows.finetune` and `finetune`
        (the repository's flows/ folder is installed as ftpipe.flows)."""
        path, _, attribute = self.entrypoint.partition(":")
        if not path.endswith(".py") or not attribute:
            raise InputError(self.entrypoint, "an entrypoint must look like 'flows/file.py:flow'")
        return "ftpipe." + path.removesuffix(".py").replace("/", "."), attribute


def read_specs(path: Path = DEFAULT_FILE) -> list[DeploymentSpec]:
    """The deployments declared in a prefect.yaml; a malformed entry is named, not skipped."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise InputError(str(path), f"cannot read the deployments file: {error}") from error
    entries = (document or {}).get("deployments") or []
    specs = []
    for index, entry in enumerate(entries):
        try:
            specs.append(
                DeploymentSpec(
                    name=entry["name"],
                    entrypoint=entry["entrypoint"],
                    description=entry.get("description"),
                    tags=list(entry.get("tags") or []),
                    parameters=dict(entry.get("parameters") or {}),
                    schedules=list(entry.get("schedules") or []),
                    concurrency_limit=entry.get("concurrency_limit"),
                )
            )
        except (KeyError, TypeError) as error:
            raise InputError(f"{path}: deployments[{index}]", f"missing or bad {error}") from error
    if not specs:
        raise InputError(str(path), "declares no deployments")
    return specs


def to_schedule(config: dict[str, Any]) -> Schedule:
    """A prefect.yaml schedule entry (cron or interval seconds) as a Prefect schedule."""
    common = {"timezone": config.get("timezone"), "active": config.get("active", True)}
    if "cron" in config:
        return Cron(config["cron"], **common)
    if "interval" in config:
        return Interval(timedelta(seconds=float(config["interval"])), **common)
    raise InputError(str(config), "a schedule needs 'cron' or 'interval' (seconds)")


def load_flow(spec: DeploymentSpec) -> Flow[..., Any]:
    module_name, attribute = spec.flow_module
    candidate = getattr(importlib.import_module(module_name), attribute, None)
    if not isinstance(candidate, Flow):
        raise InputError(spec.entrypoint, "does not name a Prefect flow")
    return candidate


def to_deployment(spec: DeploymentSpec) -> RunnerDeployment:
    """A served deployment; the module-path entrypoint lets runs start from any folder."""
    return load_flow(spec).to_deployment(
        name=spec.name,
        description=spec.description,
        tags=spec.tags,
        parameters=spec.parameters,
        schedules=[to_schedule(config) for config in spec.schedules],
        concurrency_limit=spec.concurrency_limit,
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def serve_all(
    path: Path = DEFAULT_FILE, limit: int | None = None, echo: Callable[[str], object] = print
) -> None:
    """Serve every deployment until interrupted; schedules pause when the process stops."""
    deployments = [to_deployment(spec) for spec in read_specs(path)]
    if not PREFECT_API_URL.value():
        echo(
            "No PREFECT_API_URL: serving against a temporary Prefect server, without the UI. "
            "Start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api "
            "to see these deployments in the UI."
        )
    serve(*deployments, limit=limit)

"""Reading deployments/prefect.yaml for `ftpipe serve`: every entry, its schedules, clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from ftpipe.errors import InputError
from ftpipe.flows.serve import DEFAULT_FILE, load_flow, read_specs, to_deployment, to_schedule


def test_every_deployment_of_the_file_loads_its_flow() -> None:
    specs = read_specs(DEFAULT_FILE)
    assert {(s.entrypoint, s.name) for s in specs} == {
        ("flows/finetune.py:finetune", "manual"),
        ("flows/finetune.py:finetune_dialogues", "nightly"),
        ("flows/finetune.py:poll_jobs", "every-5-minutes"),
        ("flows/prepare_dataset.py:prepare_dataset", "manual"),
        ("flows/describe_images.py:describe_images", "manual"),
        ("flows/chat.py:chat", "manual"),
        ("flows/train_model.py:train_model", "gpu"),
        ("flows/evaluate_model.py:evaluate_model", "manual"),
    }
    for spec in specs:
        deployment = to_deployment(spec)
        assert deployment.entrypoint == spec.flow_module[0] + "." + spec.flow_module[1]
        assert load_flow(spec).name == spec.entrypoint.rsplit(":", 1)[1]


def test_schedules() -> None:
    nightly = to_schedule({"cron": "0 2 * * *", "timezone": "UTC"})
    assert nightly.cron == "0 2 * * *" and nightly.timezone == "UTC" and nightly.active
    poll = to_schedule({"interval": 300})
    assert poll.interval == timedelta(minutes=5)
    with pytest.raises(InputError, match="needs 'cron' or 'interval'"):
        to_schedule({"every": "day"})


def test_a_bad_entry_is_named(tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text("deployments:\n  - entrypoint: flows/chat.py:chat\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"deployments\[0\].*'name'"):
        read_specs(path)


def test_a_missing_or_empty_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the deployments file"):
        read_specs(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("name: x\n", encoding="utf-8")
    with pytest.raises(InputError, match="declares no deployments"):
        read_specs(tmp_path / "empty.yaml")


def test_an_entrypoint_that_is_not_a_flow(tmp_path: Path) -> None:
    path = tmp_path / "prefect.yaml"
    path.write_text(
        "deployments:\n  - name: x\n    entrypoint: flows/serve.py:read_specs\n", encoding="utf-8"
    )
    [spec] = read_specs(path)
    with pytest.raises(InputError, match="does not name a Prefect flow"):
        load_flow(spec)

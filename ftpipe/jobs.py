"""Facts about fine-tuning jobs that every part of ftpipe shares."""

from __future__ import annotations

from pathlib import Path

from ftpipe.settings import get_settings

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})  # a job in one of these never changes


def job_ids_path() -> Path:
    """`$FTPIPE_HOME/job_ids.json`: the original module's list of {id, description, created}."""
    return get_settings().home.expanduser() / "job_ids.json"

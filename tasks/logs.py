"""ftpipe's own log lines in Prefect's run logs, so the UI shows what the core did.

The equivalent of PREFECT_LOGGING_EXTRA_LOGGERS=ftpipe, limited to records made inside a flow or
task run (outside one, Prefect's API handler would warn about a missing run).
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler


class _InRun(logging.Filter):
    """Pass records made while a flow or task run is active."""

    def filter(self, record: logging.LogRecord) -> bool:
        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def send_ftpipe_logs_to_runs(name: str = "ftpipe") -> None:
    """Attach Prefect's API log handler to ftpipe's logger, once per process."""
    logger = logging.getLogger(name)
    if any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        return
    handler = APILogHandler()
    handler.addFilter(_InRun())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)

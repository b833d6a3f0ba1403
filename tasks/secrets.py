"""Keys from Prefect Secret blocks, for runs on machines whose environment does not carry them."""

from __future__ import annotations

import os
from typing import Any

from prefect import get_run_logger
from prefect.blocks.system import Secret

# Environment variable -> the Secret block that may hold it (README: "Secrets").
SECRET_BLOCKS = {
    "OPENAI_API_KEY": "ftpipe-openai-api-key",
    "AZURE_OPENAI_API_KEY": "ftpipe-azure-openai-api-key",
}


def load_secret_blocks(*_: Any) -> None:
    """Flow hook: a key missing from the environment is taken from its Secret block, if saved.

    The environment always wins, so a key set for one process is never overridden; the value
    is never logged.
    """
    for variable, block in SECRET_BLOCKS.items():
        if os.environ.get(variable):
            continue
        try:
            value = Secret.load(block).get()
        except ValueError:  # no block of that name: the environment (or nothing) decides
            continue
        if value:
            os.environ[variable] = str(value)
            get_run_logger().info("%s taken from the Secret block %r", variable, block)

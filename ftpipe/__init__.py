"""ftpipe: fine-tuning pipelines for OpenAI-compatible chat models.

`import ftpipe` stays cheap: `ftpipe.OpenAIModel` (the original module's class) is imported on
first use, with the OpenAI SDK and the rest of the core behind it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftpipe.openai_model import OpenAIModel

__version__ = "0.1.0"
__all__ = ["OpenAIModel", "__version__", "no_telemetry"]


def __getattr__(name: str) -> Any:
    """`from ftpipe import OpenAIModel` without paying for it on `import ftpipe`."""
    if name == "OpenAIModel":
        from ftpipe.openai_model import OpenAIModel

        return OpenAIModel
    raise AttributeError(f"module 'ftpipe' has no attribute {name!r}")


def no_telemetry() -> None:
    """Prefect servers that ftpipe's processes start would report usage home and log "Failed to
    send telemetry" with no network; off unless the user set these variables."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")

"""The Prefect API that ad-hoc flow runs (CLI, facade, demo) report to.

Filled in by the long-lived local Prefect server work (issue 13, item 4); until then the block
leaves Prefect's own choice in place.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_prefect() -> Iterator[None]:
    """Run the block's flows against the Prefect API ftpipe found or started."""
    yield

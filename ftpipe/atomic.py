"""The one way ftpipe replaces a file: a synced sibling temp file renamed over the target.

A crash leaves the old content or the new, never half of either.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path


def write_bytes_atomically(path: Path, data: bytes, *, keep_mode: bool = True) -> None:
    """Replace `path` with `data` in one rename; an existing file keeps its permissions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_mode:
            with suppress(FileNotFoundError):
                os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    sync_folder(path.parent)


def write_text_atomically(path: Path, text: str) -> None:
    """`write_bytes_atomically` for UTF-8 text."""
    write_bytes_atomically(path, text.encode("utf-8"))


def sync_folder(folder: Path) -> None:
    """Make a rename durable; some file systems cannot sync a folder, which is fine."""
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

"""Data files that ship inside the package, found with importlib.resources from any folder.

In the repository they sit in the design card's top-level folders (expectations/, deployments/,
data/); installed, they are the packages `ftpipe.expectations`, `ftpipe.deployments` and
`ftpipe.data`, so a wheel install finds them wherever the command runs.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _packaged(package: str, *parts: str) -> Path:
    """A file of an installed package as a real path (packages are installed unzipped)."""
    return Path(str(files(package).joinpath(*parts)))


def expectations_dir() -> Path:
    """The folder of the Great Expectations suites, one JSON file per input kind."""
    return _packaged("ftpipe.expectations")


def deployments_file() -> Path:
    """The prefect.yaml that `ftpipe serve` and `prefect deploy` read."""
    return _packaged("ftpipe.deployments", "prefect.yaml")


def assistants_file() -> Path:
    """The assistants catalogue shipped with ftpipe."""
    return _packaged("ftpipe.data", "assistants.json")


def sample(*parts: str) -> Path:
    """A sample input shipped with ftpipe, e.g. `sample("images", "harbour.png")`."""
    return _packaged("ftpipe.data", "samples", *parts)

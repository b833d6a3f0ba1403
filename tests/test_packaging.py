"""The wheel: every package and data file the code needs, nothing installed as a generic
top-level `flows` or `tasks`, and a wheel install that works from another folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
# what a checkout holds that is not source (.gitignore's entries, and git's own folder)
BUILD_IGNORES = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                 ".ruff_cache", ".ftpipe", "test-artifacts", "processed", ".env")  # fmt: skip


def source_folder(package: str) -> Path:
    """The repository folder a package is built from (package-dir mapping, else its path)."""
    mapping = SETUPTOOLS["package-dir"]
    for prefix in sorted(mapping, key=len, reverse=True):
        if package == prefix or package.startswith(prefix + "."):
            rest = package.removeprefix(prefix).lstrip(".").replace(".", "/")
            return ROOT / mapping[prefix] / rest
    return ROOT / package.replace(".", "/")


def test_every_python_folder_is_a_listed_package() -> None:
    listed = set(SETUPTOOLS["packages"])
    folders = {source_folder(package).resolve() for package in listed}
    for top in ("ftpipe", "flows", "tasks"):
        for module in (ROOT / top).rglob("*.py"):
            if "__pycache__" not in module.parts:
                assert module.parent.resolve() in folders, f"{module} is in no listed package"
    assert not {"flows", "tasks"} & {package.split(".")[0] for package in listed}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # built from a copy: a build writes build/ and *.egg-info, which tests running beside this
    # one (pytest-xdist) may be reading through the editable install
    source = tmp_path_factory.mktemp("source") / "ftpipe"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*BUILD_IGNORES))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(out), str(source)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    [built] = out.glob("ftpipe-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_carries_every_data_file_under_the_ftpipe_namespace(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {name.split("/")[0] for name in names if not name.startswith("ftpipe-")}
    assert tops == {"ftpipe"}
    for required in (
        "ftpipe/flows/finetune.py",
        "ftpipe/tasks/backend.py",
        "ftpipe/expectations/column_pairs.json",
        "ftpipe/expectations/labelled_text.json",
        "ftpipe/expectations/dialogues.json",
        "ftpipe/deployments/prefect.yaml",
        "ftpipe/data/assistants.json",
        "ftpipe/data/samples/positive_feedback.csv",
        "ftpipe/data/samples/ferry_support.jsonl",
        "ftpipe/data/samples/images/harbour.png",
        "ftpipe/catalog/models.json",
    ):
        assert required in names, required
    assert not any("/processed/" in name for name in names)


@pytest.mark.slow
def test_the_installed_wheel_prepares_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    """Installed (not editable) and run where no checkout is: suites and samples are found."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(wheel)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "FTPIPE_HOME": str(tmp_path / "home")}
    where = subprocess.run(
        [sys.executable, "-c", "import ftpipe.resources as r; print(r.expectations_dir())"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout + where.stderr
    done = subprocess.run(
        [sys.executable, "-m", "ftpipe", "prepare", str(ROOT / "data/samples/csv"),
         "--out", str(tmp_path / "out")],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert list((tmp_path / "out").glob("*/train.jsonl"))

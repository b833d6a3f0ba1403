"""Great Expectations costs seconds and hundreds of MB to import: only a run that validates
data may import it, never `import ftpipe.cli` nor a `prepare` that fails before reading."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env(home: Path) -> dict[str, str]:
    """The caller's environment without any ftpipe or OpenAI settings."""
    prefixes = ("FTPIPE_", "OPENAI_", "AZURE_OPENAI_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    return env | {"FTPIPE_ENV_FILE": os.devnull, "FTPIPE_HOME": str(home)}


def python(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=clean_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_importing_the_pipeline_and_the_cli_does_not_import_gx(tmp_path: Path) -> None:
    code = (
        "import sys, ftpipe.prepare.pipeline, ftpipe.prepare.expectations, ftpipe.cli; "
        "assert 'great_expectations' not in sys.modules, 'GX imported'"
    )
    ran = python(["-c", code], tmp_path)
    assert ran.returncode == 0, ran.stderr


def test_prepare_of_a_missing_file_fails_in_one_line_without_gx(tmp_path: Path) -> None:
    ran = python(["-X", "importtime", "-m", "ftpipe", "prepare", "missing.csv"], tmp_path)
    assert ran.returncode != 0
    timings = [line for line in ran.stderr.splitlines() if line.startswith("import time:")]
    assert any(line.endswith("ftpipe.prepare.pipeline") for line in timings)  # it did run
    assert not [line for line in timings if "great_expectations" in line]
    said = [
        line
        for line in (ran.stdout + ran.stderr).splitlines()
        if line.strip() and not line.startswith("import time:")
    ]
    assert len(said) == 1 and "missing.csv" in said[0] and "does not exist" in said[0], said


def test_cli_prepare_leaves_gx_to_its_child_and_never_imports_the_sdk(tmp_path: Path) -> None:
    """`ftpipe prepare` starts GX's import in a child before its own imports, and needs neither
    the OpenAI SDK nor the job registry: its process imports none of them, yet the run has its
    GX validation and Data Docs."""
    ran = python(
        ["-X", "importtime", "-m", "ftpipe", "prepare", str(REPO / "data/samples/csv"),
         "--model", "gpt-4o-mini", "--out", str(tmp_path / "out")],
        tmp_path,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in ran.stderr.splitlines()}
    assert not imported & {"great_expectations", "openai", "sqlalchemy", "ftpipe.registry"}
    [folder] = (tmp_path / "out").iterdir()
    assert (folder / "data_docs" / "index.html").is_file()


def test_validating_imports_gx_and_keeps_it_quiet(tmp_path: Path) -> None:
    code = (
        "import os, sys\n"
        "from ftpipe.prepare.expectations import SuiteRunner\n"
        "runner = SuiteRunner('column_pairs')\n"
        "assert 'great_expectations' in sys.modules\n"
        "assert os.environ['GX_ANALYTICS_ENABLED'] == 'False'\n"
    )
    ran = python(["-c", code], tmp_path)
    assert ran.returncode == 0, ran.stderr

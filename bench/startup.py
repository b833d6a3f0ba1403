"""Start-up benchmark: how long the commands a user types take before and around their work.

Usage: python bench/startup.py [--repeat N] [--keep]

Measured in one run, each command in its own child process, wall time around the child:

* python      - `python -c pass`: the interpreter alone (the floor);
* imports     - `python -c "import prefect, pandas, pyarrow, openai"`: the libraries ftpipe
                stands on, imported the plainest way (what any Prefect+pandas tool pays);
* prepare     - `ftpipe prepare data/samples/csv` (the README's sample folder), into a new
                output folder each time;
* train again - `ftpipe train data/samples/csv` once more after a first run, which found or
                started the long-lived local Prefect server and launched the job.

The last line reads `startup: prepare_s=<s> train_rerun_s=<s> vs_imports=<prepare/imports>`.
Targets (issue 13/14: prepare <= 2.5 s, train re-run <= 5 s on an idle 2-core machine) are
printed with PASS/MISS; a miss never fails the process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples" / "csv"
TARGET_PREPARE_S = 2.5
TARGET_TRAIN_RERUN_S = 5.0


def timed(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of one child process; a failure stops the benchmark with its output."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return elapsed


def best_of(repeat: int, command: list[str], env: dict[str, str], cwd: Path) -> float:
    """The median of `repeat` runs (the machine may be shared)."""
    return statistics.median(timed(command, env, cwd) for _ in range(repeat))


def verdict(value: float, target: float) -> str:
    return "PASS" if value <= target else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the work folder.")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ftpipe-bench-startup-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OPENAI_"))}
    env |= {
        "FTPIPE_HOME": str(work / "home"),
        "PREFECT_HOME": str(work / "prefect-home"),
        "FTPIPE_ENV_FILE": os.devnull,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    python, ftpipe = sys.executable, [sys.executable, "-m", "ftpipe"]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    try:
        floor = best_of(args.repeat, [python, "-c", "pass"], env, work)
        imports = best_of(
            args.repeat, [python, "-c", "import prefect, pandas, pyarrow, openai"], env, work
        )
        # a fresh output folder each time: nothing of an earlier run is there to reuse
        prepare = statistics.median(
            timed([*ftpipe, "prepare", str(SAMPLES), "--out", str(work / f"out-{run}")], env, work)
            for run in range(args.repeat)
        )
        first = timed([*ftpipe, "train", str(SAMPLES)], env, work)
        rerun = best_of(args.repeat, [*ftpipe, "train", str(SAMPLES)], env, work)
    finally:
        subprocess.run(
            [python, "-c", "from ftpipe.flows.prefect_api import stop_server; stop_server()"],
            env=env,
            capture_output=True,
        )
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"python -c pass            {floor:6.2f} s")
    print(f"import prefect+pandas+... {imports:6.2f} s")
    print(f"ftpipe prepare (sample)   {prepare:6.2f} s  {verdict(prepare, TARGET_PREPARE_S)}")
    print(f"ftpipe train (first run)  {first:6.2f} s  (starts the local Prefect server)")
    print(f"ftpipe train (re-run)     {rerun:6.2f} s  {verdict(rerun, TARGET_TRAIN_RERUN_S)}")
    print(
        f"startup: prepare_s={prepare:.2f} train_rerun_s={rerun:.2f} "
        f"vs_imports={prepare / imports:.2f}"
    )


if __name__ == "__main__":
    main()

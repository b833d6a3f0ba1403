"""A throwaway PostgreSQL server for tests: Debian's binaries, loopback only, gone afterwards.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` account.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from sqlalchemy import create_engine, text

BIN_DIR_VAR = "FTPIPE_POSTGRES_BIN"
PROGRAMS = ("initdb", "pg_ctl", "postgres")
SERVER_USER = "postgres"
# Durability costs time and a throwaway cluster needs none of it.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def _version(bin_dir: Path) -> tuple[int, ...]:
    """`/usr/lib/postgresql/15/bin` -> (15,), so 15 sorts above 9.6."""
    return tuple(int(part) for part in bin_dir.parent.name.split(".") if part.isdigit())


def _has_programs(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in PROGRAMS)


def _runnable() -> bool:
    """As root the server needs the `postgres` account and runuser to switch to it."""
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        return False
    return shutil.which("runuser") is not None


def find_bin_dir() -> Path | None:
    """The folder with initdb and pg_ctl: FTPIPE_POSTGRES_BIN when set (a folder without them
    hides PostgreSQL), else Debian's newest /usr/lib/postgresql/*/bin, else PATH."""
    override = os.environ.get(BIN_DIR_VAR)
    if override is not None:
        candidates = [Path(override)]
    else:
        debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
        on_path = shutil.which("initdb")
        candidates = [*debian, *([Path(on_path).parent] if on_path else [])]
    found = next((path for path in candidates if _has_programs(path)), None)
    return found if found is not None and _runnable() else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One cluster in a private temp folder on 127.0.0.1, trust auth, a database per caller."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="ftpipe-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._as_root = os.geteuid() == 0
        self._names = itertools.count(1)

    def _run(self, program: str, *args: str) -> None:
        """Run a server program, as `postgres` when we are root; its output goes in the error."""
        command = [str(self.bin_dir / program), *args]
        if self._as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}")

    def start(self) -> None:
        """initdb, then start on a free loopback port (a few tries: another may take the port)."""
        if self._as_root:
            os.chmod(self.root, 0o700)
            shutil.chown(self.root, SERVER_USER, SERVER_USER)
        self._run(
            "initdb",
            *("-D", str(self.data), "-U", SERVER_USER, "--auth=trust", "--no-locale"),
            *("--encoding=UTF8", "--no-sync", "--no-instructions"),
        )
        for attempt in range(3):
            self.port = _free_port()
            options = [
                *("-c", "listen_addresses=127.0.0.1", "-p", str(self.port), "-k", str(self.root)),
                *itertools.chain.from_iterable(("-c", item) for item in FAST_SETTINGS),
                *("-c", "max_connections=200"),
            ]
            try:
                self._run(
                    "pg_ctl",
                    *("-D", str(self.data), "-l", str(self.log), "-w", "-t", "60"),
                    *("-o", " ".join(options), "start"),
                )
                return
            except RuntimeError:
                if attempt == 2:
                    raise RuntimeError(f"PostgreSQL did not start: {self._log_tail()}") from None

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return "(no server log)"

    def stop(self) -> None:
        """Stop the server (it may already be down) and delete its folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of one database, reached over loopback TCP."""
        return f"postgresql+psycopg://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        """CREATE/DROP DATABASE cannot run in a transaction: autocommit on the admin database."""
        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(sql))
        finally:
            engine.dispose()

    def create_database(self, prefix: str = "ftpipe_test") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made here, cutting off connections a test left open."""
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

"""The durable record of every fine-tuning job ftpipe launched, shared by all its processes.

SQLite (WAL, busy timeout) by default under FTPIPE_HOME, any SQLAlchemy URL (PostgreSQL) through
FTPIPE_DATABASE_URL. Writes are single statements so racing processes queue instead of failing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Index,
    Insert,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    delete,
    event,
    exc,
    insert,
    inspect,
    make_url,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ftpipe.atomic import write_text_atomically
from ftpipe.errors import InputError
from ftpipe.jobs import TERMINAL
from ftpipe.settings import Settings, get_settings, unusable_folder

if TYPE_CHECKING:
    import openai
    from openai.types.fine_tuning import FineTuningJob

log = logging.getLogger(__name__)

DATABASE_URL_VAR = "FTPIPE_DATABASE_URL"
META_DATASET = "ftpipe_dataset"
META_LAUNCH_KEY = "ftpipe_launch_key"
META_DESCRIPTION = "ftpipe_description"
META_SOURCES = "ftpipe_sources"

metadata = MetaData()

jobs_table = Table(
    "jobs",
    metadata,
    Column("job_id", String(255), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("base_model", String(255), nullable=False),
    Column("fine_tuned_model", String(255)),
    Column("dataset_id", String(512)),  # from job metadata, whose values go up to 512
    Column("source_paths", JSON, nullable=False),
    Column("training_file", String(255)),
    Column("validation_file", String(255)),
    Column("options", JSON, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("trained_tokens", BigInteger),
    Column("error", Text),
    Column("endpoint", Text, nullable=False),
    Column("launch_key", String(512)),
    # When this registry first saw the job: orders jobs created within the same second.
    Column("recorded_ns", BigInteger, nullable=False),
    Index("ix_jobs_launch_key", "launch_key"),
    Index("ix_jobs_status", "status"),
)

launches_table = Table(
    "launches",
    metadata,
    Column("launch_key", String(512), primary_key=True),
    Column("job_id", String(255)),
    Column("claimed_at", BigInteger, nullable=False),
    # Who holds the claim: "host|pid|process start", so a claim of a dead process is taken over.
    Column("owner", String(512)),
)

# One row per evaluation of a model (`ftpipe eval`); the whole result is kept as JSON.
evaluations_table = Table(
    "evaluations",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(sqlite.INTEGER(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("job_id", String(255)),
    Column("model", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("verdict", String(32), nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("result", JSON, nullable=False),
    Index("ix_evaluations_job_id", "job_id"),
    Index("ix_evaluations_model", "model"),
)


def database_url(settings: Settings | None = None) -> str:
    """FTPIPE_DATABASE_URL when set, else a SQLite file in the state folder."""
    settings = settings or get_settings()
    url = (settings.database_url or "").strip()
    if url:
        return url
    return f"sqlite:///{settings.state_dir()}/registry.sqlite3"


@dataclass
class JobRecord:
    """One fine-tuning job as the registry knows it."""

    job_id: str
    status: str
    base_model: str
    fine_tuned_model: str | None = None
    dataset_id: str | None = None
    source_paths: list[str] = field(default_factory=list)
    training_file: str | None = None
    validation_file: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    created_at: int = 0
    finished_at: int | None = None
    trained_tokens: int | None = None
    error: str | None = None
    endpoint: str = ""
    launch_key: str | None = None


RECORD_FIELDS = tuple(f.name for f in fields(JobRecord))


def normalize_endpoint(endpoint: str) -> str:
    """`http://h/v1/` and `http://h/v1` are one endpoint; callers pass either."""
    return str(endpoint).rstrip("/")


def _given(value: Any) -> bool:
    """Whether an update carries this value; None, "", [], {} and 0 mean 'not given'."""
    return value not in (None, "", 0) and value != [] and value != {}


def _row_values(record: JobRecord) -> dict[str, Any]:
    values = asdict(record)
    values["endpoint"] = normalize_endpoint(record.endpoint)
    values["source_paths"] = list(record.source_paths)
    values["options"] = dict(record.options)
    return values


def _changes(values: Mapping[str, Any]) -> dict[str, Any]:
    """The SET clause of an update: given fields only, and a terminal status never regresses."""
    changes = {name: value for name, value in values.items() if _given(value)}
    changes.pop("job_id", None)
    if "status" in changes:
        status = jobs_table.c.status
        changes["status"] = case((status.in_(TERMINAL), status), else_=changes["status"])
    return changes


def _from_row(row: Mapping[str, Any]) -> JobRecord:
    values = {name: row[name] for name in RECORD_FIELDS}
    values["source_paths"] = list(values["source_paths"] or [])
    values["options"] = dict(values["options"] or {})
    return JobRecord(**values)


def _sources(raw: str | None, job_id: str) -> list[str]:
    """The source paths a job's metadata carries; a malformed value is kept whole, not lost."""
    if not raw:
        return []
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if isinstance(parsed, list) and all(isinstance(item, str) for item in parsed):
        return parsed
    log.warning("job %s: %s is not a JSON list of paths; kept as one path", job_id, META_SOURCES)
    return [raw]


def record_from_job(job: FineTuningJob, endpoint: str) -> JobRecord:
    """What an SDK job object says about itself, including ftpipe's metadata keys."""
    meta = dict(job.metadata or {})
    return JobRecord(
        job_id=job.id,
        status=job.status,
        base_model=job.model,
        fine_tuned_model=job.fine_tuned_model,
        dataset_id=meta.get(META_DATASET),
        source_paths=_sources(meta.get(META_SOURCES), job.id),
        training_file=job.training_file,
        validation_file=job.validation_file,
        description=meta.get(META_DESCRIPTION, ""),
        created_at=job.created_at,
        finished_at=job.finished_at,
        trained_tokens=job.trained_tokens,
        error=job.error.message if job.error and job.error.message else None,
        endpoint=endpoint,
        launch_key=meta.get(META_LAUNCH_KEY),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers and one writer work at once; set on every new connection."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    finally:
        cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their folder, a 30 s busy timeout and WAL."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().parent
        problem = unusable_folder(folder)
        if problem:  # said before SQLite's bare "unable to open database file"
            raise _unusable(url, OSError(f"its folder {folder} {problem}"))
        folder.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _create_tables(engine: Engine) -> None:
    """Create missing tables and columns; a process racing us to it is not an error."""
    try:
        metadata.create_all(engine)
        _add_owner_column(engine)
    except (exc.OperationalError, exc.ProgrammingError, exc.IntegrityError):
        metadata.create_all(engine)  # someone else created them between our check and ours
        _add_owner_column(engine)


def _add_owner_column(engine: Engine) -> None:
    """Registries made before claims recorded their owner get the column (NULL: owner unknown)."""
    if "owner" in {column["name"] for column in inspect(engine).get_columns("launches")}:
        return
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE launches ADD COLUMN owner VARCHAR(512)")


def _unusable(url: str, error: Exception) -> InputError:
    """A wrong or unreachable database URL as one line, password hidden."""
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        shown = "(not a database URL)"
    cause = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
    if isinstance(error, ImportError):
        cause += " (the database driver for this URL is not installed)"
    return InputError(f"{DATABASE_URL_VAR}={shown}", f"cannot open the job registry: {cause}")


class Registry:
    """Jobs and launch claims in one database, safe for several writing processes."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or database_url()
        try:
            self.engine = make_engine(self.url)
            _create_tables(self.engine)
        except (
            exc.ArgumentError,
            exc.NoSuchModuleError,
            exc.OperationalError,
            ImportError,
        ) as error:
            raise _unusable(self.url, error) from error

    def close(self) -> None:
        """Drop pooled connections (the file stays); a later call reconnects."""
        self.engine.dispose()

    # --- jobs -----------------------------------------------------------------------------

    def record(self, record: JobRecord) -> None:
        """Insert the job, or update it with the fields this record gives.

        A field is given when it is not None, "", [], {} or 0, so a later partial update
        (a status refresh) keeps what an earlier one stored (source paths, options). A status
        that reached succeeded/failed/cancelled never changes again.
        """
        values = _row_values(record)
        values["recorded_ns"] = time.time_ns()
        try:
            with self.engine.begin() as conn:
                self._upsert(conn, values)
        except exc.IntegrityError:
            with self.engine.begin() as conn:  # lost an insert race: the row exists now
                self._upsert(conn, values)

    def _upsert(self, conn: Connection, values: dict[str, Any]) -> None:
        changes = _changes({k: v for k, v in values.items() if k != "recorded_ns"})
        statement = _dialect_insert(conn.dialect.name)
        if statement is None:
            self._insert_or_update(conn, values, changes)
        elif changes:
            key = [jobs_table.c.job_id]
            conn.execute(
                statement.values(values).on_conflict_do_update(index_elements=key, set_=changes)
            )
        else:
            conn.execute(statement.values(values).on_conflict_do_nothing())

    def _insert_or_update(
        self, conn: Connection, values: dict[str, Any], changes: dict[str, Any]
    ) -> None:
        """Upsert for databases without ON CONFLICT (a racing insert raises IntegrityError)."""
        where = jobs_table.c.job_id == values["job_id"]
        if conn.execute(select(jobs_table.c.job_id).where(where)).first() is None:
            conn.execute(insert(jobs_table).values(values))
        elif changes:
            conn.execute(update(jobs_table).where(where).values(changes))

    def update_from_job(self, job: FineTuningJob, endpoint: str) -> JobRecord:
        """Refresh the job from what the endpoint says now; a job never seen is added."""
        self.record(record_from_job(job, endpoint))
        stored = self.get(job.id)
        assert stored is not None
        return stored

    def get(self, job_id: str) -> JobRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs_table).where(jobs_table.c.job_id == job_id)).first()
        return _from_row(row._mapping) if row else None

    def _select(self, *conditions: Any) -> list[JobRecord]:
        """Jobs matching all conditions, newest first."""
        query = (
            select(jobs_table)
            .where(*conditions)
            .order_by(jobs_table.c.created_at.desc(), jobs_table.c.recorded_ns.desc())
        )
        with self.engine.connect() as conn:
            return [_from_row(row._mapping) for row in conn.execute(query)]

    def jobs(self, *, endpoint: str | None = None) -> list[JobRecord]:
        """Every job (of one endpoint when given), newest first."""
        return self._select(*_endpoint_filter(endpoint))

    def active(self, *, endpoint: str | None = None) -> list[JobRecord]:
        """Jobs still worth polling: not succeeded, failed or cancelled."""
        return self._select(jobs_table.c.status.not_in(TERMINAL), *_endpoint_filter(endpoint))

    def by_launch_key(self, key: str) -> list[JobRecord]:
        """The jobs launched for one key, newest first."""
        return self._select(jobs_table.c.launch_key == key)

    # --- launches ---------------------------------------------------------------------------

    def claim_launch(self, key: str, *, stale_after: float | None = None) -> bool:
        """True when this caller alone may create the job for `key`.

        With `stale_after`, an unfinished claim whose owner crashed is taken over: at once when
        the owner ran on this host and its process is gone, else once the claim is older than
        `stale_after` seconds; of several callers doing so at once, one wins.
        """
        values = {"launch_key": key, "claimed_at": _now(), "owner": current_owner()}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(launches_table).values(values))
            return True
        except exc.IntegrityError:
            return stale_after is not None and self._take_over(key, stale_after)

    def _take_over(self, key: str, stale_after: float) -> bool:
        """Take an unfinished claim whose owner is gone (or silent for `stale_after` seconds)."""
        launches = launches_table.c
        pending = [launches.launch_key == key, launches.job_id.is_(None)]
        with self.engine.connect() as conn:
            row = conn.execute(select(launches.owner).where(*pending)).first()
        if row is None:
            return False
        now = _now()
        if owner_is_gone(row.owner):  # only if no one else took it over meanwhile
            held = launches.owner == row.owner
        else:
            held = launches.claimed_at <= now - stale_after
        statement = (
            update(launches_table)
            .where(*pending, held)
            .values(claimed_at=now, owner=current_owner())
        )
        with self.engine.begin() as conn:
            return conn.execute(statement).rowcount == 1

    def complete_launch(self, key: str, job_id: str) -> None:
        """Tie the claim to the job it created, so waiting callers learn the id."""
        statement = (
            update(launches_table).where(launches_table.c.launch_key == key).values(job_id=job_id)
        )
        with self.engine.begin() as conn:
            if conn.execute(statement).rowcount:
                return
            values = {"launch_key": key, "job_id": job_id, "claimed_at": _now()}
            conn.execute(insert(launches_table).values({**values, "owner": current_owner()}))

    def release_launch(self, key: str) -> None:
        """The creation failed: drop the claim so a later caller may try; completed ones stay."""
        launches = launches_table.c
        statement = delete(launches_table).where(
            launches.launch_key == key, launches.job_id.is_(None)
        )
        with self.engine.begin() as conn:
            conn.execute(statement)

    def _launch_row(self, key: str) -> tuple[bool, str | None, str | None]:
        """Whether a claim exists for `key`, the job id it produced if any, and its owner."""
        launches = launches_table.c
        query = select(launches.job_id, launches.owner).where(launches.launch_key == key)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row is not None, row.job_id if row else None, row.owner if row else None)

    def launched_job(self, key: str) -> str | None:
        """The job id a completed claim produced; None while pending or when never claimed."""
        return self._launch_row(key)[1]

    def wait_for_launch(
        self,
        key: str,
        *,
        timeout: float = 60.0,
        poll: float = 0.2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> str | None:
        """For the loser of a race: the winner's job id, or None once it released the claim.

        None also as soon as the claim's owner process (on this host) is gone, and after
        `timeout` seconds with the claim still pending (an owner elsewhere may have died).
        """
        deadline = time.monotonic() + timeout
        while True:
            exists, job_id, owner = self._launch_row(key)
            if job_id or not exists:
                return job_id
            if owner_is_gone(owner):
                log.warning("launch %s was claimed by %s, which is gone", key, owner)
                return None
            if time.monotonic() >= deadline:
                log.warning("launch %s still pending after %.0f s", key, timeout)
                return None
            sleep(poll)

    # --- job_ids.json ------------------------------------------------------------------------

    def export_job_ids(self, path: Path) -> None:
        """Write the original module's job_ids.json, oldest first; readers never see half a file."""
        entries = [_job_id_entry(record) for record in reversed(self.jobs())]
        write_text_atomically(Path(path), json.dumps(entries, indent=2) + "\n")

    # --- evaluations -------------------------------------------------------------------------

    def record_evaluation(self, result: Mapping[str, Any]) -> None:
        """Keep an evaluation's result (EvalResult as a dict) against its job and model."""
        values = {
            "job_id": result.get("job_id"),
            "model": result["tuned_model"],
            "created_at": int(result.get("created_at") or _now()),
            "verdict": result["verdict"],
            "passed": bool(result.get("passed", True)),
            "result": dict(result),
        }
        with self.engine.begin() as conn:
            conn.execute(insert(evaluations_table).values(**values))

    def latest_evaluation(self, job_or_model: str) -> dict[str, Any] | None:
        """The newest evaluation of a job (by id) or of a model (by name)."""
        table = evaluations_table
        query = (
            select(table.c.result)
            .where((table.c.job_id == job_or_model) | (table.c.model == job_or_model))
            .order_by(table.c.created_at.desc(), table.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row[0]) if row else None

    # --- disaster recovery -------------------------------------------------------------------

    def rebuild_from_api(
        self,
        client: openai.OpenAI,
        endpoint: str,
        *,
        metadata_key: str = "ftpipe",
        metadata_value: str = "1",
    ) -> int:
        """Re-record every job the endpoint holds with our metadata mark; returns how many."""
        count = 0
        for job in _jobs_marked(client, metadata_key, metadata_value):
            self.record(record_from_job(job, endpoint))
            count += 1
        return count


def _jobs_marked(client: openai.OpenAI, key: str, value: str) -> Iterable[FineTuningJob]:
    """All pages of jobs carrying metadata key=value, checked again here in case a server
    ignores the filter."""
    for job in client.fine_tuning.jobs.list(metadata={key: value}, limit=100):
        if (job.metadata or {}).get(key) == value:
            yield job


def _dialect_insert(name: str) -> Any:
    """The INSERT with ON CONFLICT of SQLite or PostgreSQL; None for other databases."""
    builders: dict[str, Callable[[Table], Insert]] = {
        "sqlite": sqlite.insert,
        "postgresql": postgresql.insert,
    }
    builder = builders.get(name)
    return builder(jobs_table) if builder else None


def _endpoint_filter(endpoint: str | None) -> list[Any]:
    return [] if endpoint is None else [jobs_table.c.endpoint == normalize_endpoint(endpoint)]


def _now() -> int:
    return int(time.time())


def _job_id_entry(record: JobRecord) -> dict[str, str]:
    created = datetime.fromtimestamp(record.created_at, tz=UTC).isoformat()
    return {"id": record.job_id, "description": record.description, "created": created}


def current_owner() -> str:
    """This process as a claim owner: host, pid and start time (a reused pid is not us)."""
    return f"{socket.gethostname()}|{os.getpid()}|{_started(os.getpid())}"


def owner_is_gone(owner: str | None) -> bool:
    """Whether a claim's owner is known to be dead: a process of this host that no longer runs
    (or whose pid now belongs to a later process). Owners on other hosts cannot be checked."""
    host, _, rest = (owner or "").partition("|")
    pid, _, started = rest.partition("|")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return _started(int(pid)) != started


def _started(pid: int) -> str:
    """When process `pid` started, to the hundredth of a second; "" when it is not running."""
    import psutil  # deferred: only launches need it

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return ""
        return f"{process.create_time():.2f}"
    except psutil.Error:
        return ""


def default_registry() -> Registry:
    """The registry the settings point at (FTPIPE_DATABASE_URL or the state folder)."""
    return Registry(database_url())

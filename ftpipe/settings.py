"""Settings read from the environment (and a `.env` file), one object for the whole library.

Every knob a user may turn lives here so the CLI, the tasks and the local server agree on them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ftpipe.errors import InputError

Backend = Literal["auto", "local", "openai", "azure"]
# The dotenv file read besides the environment; FTPIPE_ENV_FILE moves it (tests point it away).
ENV_FILE = os.environ.get("FTPIPE_ENV_FILE", ".env")


class FaultSettings(BaseSettings):
    """Fault injection for the local server, so retry paths can be exercised for real."""

    model_config = SettingsConfigDict(env_prefix="FTPIPE_FAULT_", env_file=ENV_FILE, extra="ignore")

    rate_429: float = Field(0.0, ge=0.0, le=1.0, description="Share of requests answered 429.")
    rate_500: float = Field(0.0, ge=0.0, le=1.0, description="Share of requests answered 500.")
    rate_500_after: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of requests carried out, then answered 500 (a lost response).",
    )
    latency_ms: int = Field(0, ge=0, description="Delay added before every answer.")
    retry_after_s: float = Field(0.05, ge=0.0, description="The retry-after sent with a 429.")
    seed: int | None = Field(None, description="Seed of the fault dice; None draws fresh ones.")

    @property
    def active(self) -> bool:
        return bool(self.rate_429 or self.rate_500 or self.rate_500_after or self.latency_ms)


class LocalApiSettings(BaseSettings):
    """How the embedded OpenAI-compatible server behaves (moto-style knobs)."""

    model_config = SettingsConfigDict(env_prefix="FTPIPE_LOCAL_", env_file=ENV_FILE, extra="ignore")

    api_key: SecretStr | None = Field(
        None,
        description="Key the local server demands; unset: the in-process server draws a random "
        "key per process (the client factory uses it), `ftpipe local-api` accepts any key.",
    )
    job_speed: str = Field(
        "immediate",
        description="How jobs progress: 'immediate', 'retrieves:N' (done after N reads) "
        "or 'seconds:N' (done N seconds after creation).",
    )
    refuse_fine_tuning: bool = Field(
        False,
        description="Answer job creation with 403, as OpenAI does for organisations it no "
        "longer lets fine-tune (to rehearse the wind-down).",
    )
    ignore_metadata_filter: bool = Field(
        False,
        description="List every fine-tuning job whatever `metadata[...]` filter is asked for, as "
        "some compatible endpoints do (to rehearse one).",
    )
    max_file_bytes: int = Field(512 * 1024**2, gt=0, description="Per-file limit of POST /files.")
    max_part_bytes: int = Field(64 * 1024**2, gt=0, description="Per-part limit of uploads.")
    max_upload_bytes: int = Field(8 * 1024**3, gt=0, description="Total limit of one upload.")

    engine: Literal["auto", "real", "stand-in"] = Field(
        "auto",
        description="Which engine trains and answers: 'real' (transformers + peft + trl, the "
        "train extra), 'stand-in' (the deterministic stand-in for fast pipeline tests), or "
        "'auto': real wherever the train extra is installed.",
    )
    base_models: dict[str, str] = Field(
        default_factory=dict,
        description="Extra base models for the real engine, id -> local folder or Hugging Face "
        "id already pulled (`ftpipe models pull`), e.g. "
        '\'{"qwen2.5-0.5b-instruct": "/models/Qwen2.5-0.5B-Instruct"}\'.',
    )
    training_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where real training runs: CUDA when present, else the CPU."
    )
    training_threads: int = Field(1, ge=1, description="CPU threads per training worker.")
    max_parallel_jobs: int = Field(1, ge=1, description="Training workers at the same time.")
    training_executor: Literal["process", "prefect"] = Field(
        "process",
        description="How a queued real job's training starts: 'process' (a worker process on "
        "this machine) or 'prefect' (a flow run of `training_deployment` on a work pool of GPU "
        "machines; needs PREFECT_API_URL and the store on storage both sides reach).",
    )
    training_deployment: str = Field(
        "train_model/gpu", description="The Prefect deployment the 'prefect' executor runs."
    )
    training_heartbeat_timeout_s: float = Field(
        300.0,
        gt=0,
        description="A Prefect-run worker whose heartbeat (executor.json) is older than this "
        "counts as lost, whatever its flow run's state says (a GPU machine that vanished).",
    )
    inference_threads: int = Field(1, ge=1, description="CPU threads of the inference worker.")
    max_adapters: int = Field(4, ge=1, description="Fine-tuned adapters kept loaded per base.")
    max_engines: int = Field(2, ge=1, description="Base or full models kept loaded at once.")
    default_max_tokens: int = Field(
        512, ge=1, description="Completion length when a request to a real model sets none."
    )

    @field_validator("job_speed")
    @classmethod
    def _check_speed(cls, value: str) -> str:
        from ftpipe.local_api.progress import parse_speed

        parse_speed(value)
        return value


class Settings(BaseSettings):
    """Connection, state folder and defaults; secrets stay SecretStr so they never print."""

    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore")

    openai_api_key: SecretStr | None = Field(None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(None, validation_alias="OPENAI_BASE_URL")
    openai_organization: str | None = Field(None, validation_alias="OPENAI_ORG_ID")
    azure_openai_api_key: SecretStr | None = Field(None, validation_alias="AZURE_OPENAI_API_KEY")
    azure_openai_endpoint: str | None = Field(None, validation_alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_api_version: str = Field(
        "2025-04-01-preview",
        validation_alias=AliasChoices("AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION"),
    )
    backend: Backend = Field("auto", validation_alias="FTPIPE_BACKEND")
    home: Path = Field(Path(".ftpipe"), validation_alias="FTPIPE_HOME")
    default_model: str = Field(
        default_factory=lambda data: _default_model(data),
        validation_alias="FTPIPE_DEFAULT_MODEL",
        description="The model every command, flow and the facade use unless told another: "
        "FTPIPE_DEFAULT_MODEL, else the embedded local model where the local server trains for "
        "real, else gpt-4o-mini. An OpenAI name never silently stands for a local model.",
    )
    max_retries: int = Field(2, ge=0, validation_alias="FTPIPE_MAX_RETRIES")
    upload_direct_max_bytes: int = Field(
        512 * 1024**2,
        gt=0,
        validation_alias="FTPIPE_UPLOAD_DIRECT_MAX_BYTES",
        description="Files up to this size go through files.create; larger ones through Uploads.",
    )
    upload_part_bytes: int = Field(64 * 1024**2, gt=0, validation_alias="FTPIPE_UPLOAD_PART_BYTES")
    timeout_s: float = Field(60.0, gt=0, validation_alias="FTPIPE_TIMEOUT_S")
    database_url: str | None = Field(
        None,
        validation_alias="FTPIPE_DATABASE_URL",
        description="SQLAlchemy URL of the job registry; default a SQLite file in FTPIPE_HOME.",
    )
    assistants_file: Path | None = Field(
        None,
        validation_alias="FTPIPE_ASSISTANTS_FILE",
        description="An assistants catalogue to use instead of the one shipped with ftpipe.",
    )
    expectations_dir: Path | None = Field(
        None,
        validation_alias="FTPIPE_EXPECTATIONS_DIR",
        description="A folder of Great Expectations suites to use instead of the shipped ones.",
    )
    judge_api_key: SecretStr | None = Field(
        None,
        validation_alias="FTPIPE_JUDGE_API_KEY",
        description="Key of the judge endpoint `ftpipe eval --judge-base-url` names.",
    )

    @cached_property
    def local(self) -> LocalApiSettings:
        return LocalApiSettings()

    @cached_property
    def faults(self) -> FaultSettings:
        return FaultSettings()

    @property
    def explicit_backend(self) -> bool:
        """Whether the backend was named (by FTPIPE_BACKEND, a key or an endpoint) rather than
        left to the embedded default that only interactive commands may pick by themselves."""
        return bool(
            self.backend != "auto"
            or self.azure_openai_endpoint
            or self.openai_api_key
            or self.openai_base_url
        )

    @property
    def resolved_backend(self) -> Literal["local", "openai", "azure"]:
        """Azure when its endpoint is set, OpenAI when a key or URL is, else the local server."""
        if self.backend != "auto":
            return self.backend
        if self.azure_openai_endpoint:
            return "azure"
        if self.openai_api_key or self.openai_base_url:
            return "openai"
        return "local"

    def state_dir(self, *parts: str) -> Path:
        """A folder under FTPIPE_HOME, created on first use; a home that cannot be one is a line
        naming FTPIPE_HOME, not an OSError from whichever part of ftpipe asked first."""
        path = self.checked_home().joinpath(*parts)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            problem = f"cannot create {path}: {error.strerror or error}"
            raise InputError(f"FTPIPE_HOME={self.home}", problem) from None
        return path

    def checked_home(self) -> Path:
        """FTPIPE_HOME, resolved, once it is known to be a folder ftpipe can use or create
        (nothing is created here, so commands may check it before any work)."""
        problem = unusable_folder(self.home)
        if problem:
            raise InputError(f"FTPIPE_HOME={self.home}", problem)
        return self.home.expanduser().resolve()


def path_kind(path: Path) -> str:
    """What a path that is not a plain file or folder is, in words ("a pipe", "a broken
    symbolic link to x"), for messages that say why it cannot be used."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            return f"a broken symbolic link to {os.readlink(path)}"
        return "missing"
    except OSError as error:
        return f"unreachable ({error.strerror or error})"
    kinds = {
        stat.S_ISDIR: "a folder",
        stat.S_ISREG: "a file",
        stat.S_ISFIFO: "a pipe",
        stat.S_ISSOCK: "a socket",
        stat.S_ISCHR: "a device",
        stat.S_ISBLK: "a device",
    }
    return next((kind for test, kind in kinds.items() if test(mode)), "not a file")


def unusable_folder(path: Path) -> str | None:
    """Why `path` cannot be used or created as a folder ftpipe writes in, or None. Nothing is
    created: the nearest existing ancestor decides whether it could be."""
    path = Path(os.path.abspath(Path(path).expanduser()))
    at = next(p for p in (path, *path.parents) if os.path.lexists(p))
    if at.is_dir():
        if os.access(at, os.W_OK | os.X_OK):
            return None
        if at == path:
            return "is a folder ftpipe may not write in"
        return f"cannot be created: no permission to write in {at}"
    if at == path:
        return f"is {path_kind(at)}, not a folder"
    return f"cannot be created: {at} is {path_kind(at)}, not a folder"


def _default_model(data: dict[str, object]) -> str:
    """The default model follows the backend (resolved from the fields read before it)."""
    from types import SimpleNamespace

    from ftpipe.local_engine import default_model_for

    backend = Settings.resolved_backend.fget(SimpleNamespace(**data))  # type: ignore[attr-defined]
    home = Path(data.get("home") or ".ftpipe").expanduser().resolve()
    return default_model_for(backend, LocalApiSettings(), home / "local_api" / "models")


# Values given for one scope (a flow run: its backend, a key from a Secret block) without ever
# writing them into os.environ, where subprocesses and Dask workers would inherit them.
_overrides: ContextVar[Mapping[str, object]] = ContextVar(
    "ftpipe_settings_overrides", default=MappingProxyType({})
)


@contextmanager
def overridden(**values: object) -> Iterator[None]:
    """`get_settings()` returns these values (by field name) inside the block, in this context
    and in the tasks it starts on threads; the environment is left as it is."""
    token = _overrides.set(MappingProxyType({**_overrides.get(), **values}))
    try:
        yield
    finally:
        _overrides.reset(token)


def get_settings() -> Settings:
    """Fresh settings each call, so a changed environment (tests, CLI options) is honoured; a
    variable holding a value it cannot take is one line naming it (an InputError)."""
    try:
        return Settings(**{_alias(name): value for name, value in _overrides.get().items()})
    except ValidationError as error:
        raise setting_error(error) from None


# Where the fields of the nested settings are read from (pydantic names only the field).
_PREFIXES = {"LocalApiSettings": "FTPIPE_LOCAL_", "FaultSettings": "FTPIPE_FAULT_"}


def setting_error(error: ValidationError) -> InputError:
    """The first bad setting as its variable, its value (never a secret's) and the problem."""
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    name = _PREFIXES.get(error.title, "") + field.upper() if error.title in _PREFIXES else field
    secret = any(word in name for word in ("KEY", "SECRET", "PASSWORD", "TOKEN"))
    shown = name if secret or "input" not in first else f"{name}={first['input']!r}"
    return InputError(shown, str(first["msg"]).removeprefix("Value error, "))


def _alias(field: str) -> str:
    """The name Settings takes a field's value by (its variable name, e.g. FTPIPE_BACKEND);
    populate_by_name would also read a field like `home` from the unrelated $HOME."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        alias = alias.choices[0]
    return str(alias) if alias else field

"""Data rules as Great Expectations suites (expectations/*.json): the one place each is declared.

The suite files are read here (`read_suite`, plain JSON, no GX) for the column-wise checks that
run on every row (columnar.py), and built into GX suites (`load_suite`) for GX itself. A
SuiteRunner validates batches with GX (one ephemeral context for the life of a preparation run)
and turns GX's unexpected_index_list into per-row failures that the rejects file can name; it
runs every batch only for a suite the column-wise checks cannot take. `validate_samples` is the
run's one GX validation per suite, written as GX Data Docs (validation.py says on what rows).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ftpipe import resources
from ftpipe.settings import get_settings

if TYPE_CHECKING:  # GX costs seconds and hundreds of MB to import: only a validating run pays
    from great_expectations.core import ExpectationSuite
    from great_expectations.core.batch_definition import BatchDefinition
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.expectations.expectation import Expectation
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

KINDS = ("column_pairs", "labelled_text", "dialogues")
EXISTS = "expect_column_to_exist"
NULL_TEXT = "<null>"
RESULT_FORMAT: dict[str, Any] = {
    "result_format": "COMPLETE",
    "partial_unexpected_count": 0,  # the partial lists and value counts are never read
    "return_unexpected_index_query": False,  # a pandas filter string naming every failing row
}
DOCS_RESULT_FORMAT: dict[str, Any] = {  # the run's sample: row lists for the agreement check
    "result_format": "COMPLETE",
    "partial_unexpected_count": 5,  # what Data Docs shows of each rule's failing values
    "return_unexpected_index_query": False,
}
DOCS_SITE = "ftpipe"
UNUSED_DOCS_ASSETS = (  # 3.3 of the site's 4 MB, shown only by the how-to buttons, which are off
    "static/images/glossary_scroller.gif",
    "static/images/validation_failed_unexpected_values.gif",
    "static/images/iterative-dev-loop.png",
)
_RULE = re.compile(r"^[a-z][a-z0-9_]*$")


@cache
def _quiet_gx() -> None:
    """Configure GX before its first import (it reads these then), so it never reaches the
    network nor logs dozens of INFO lines; every function that uses GX calls this first."""
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    logger = logging.getLogger("great_expectations")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    import great_expectations  # noqa: F401  (imported here, after the settings above)


def warm_up() -> None:
    """Import GX, configured as _quiet_gx does, ahead of a validation (the GX process does it
    while the run reads its input, gx_process.py)."""
    _quiet_gx()


def expectations_dir() -> Path:
    """Where the suites live: FTPIPE_EXPECTATIONS_DIR, else the ones shipped with ftpipe."""
    return get_settings().expectations_dir or resources.expectations_dir()


def _suite_path(kind: str) -> Path:
    """The JSON file of one input kind; unknown kinds are refused before touching the disk."""
    if kind not in KINDS:
        raise ValueError(f"unknown input kind {kind!r}; expected one of {', '.join(KINDS)}")
    return expectations_dir() / f"{kind}.json"


def _read_json(path: Path) -> dict[str, Any]:
    """The suite file as a dict, with the file named in every error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: expectation suite file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable JSON file: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
        raise ValueError(f"{path}: not an expectation suite (no 'expectations' list)")
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise ValueError(f"{path}: the suite has no 'name'")
    return data


def _check_meta(path: Path, position: int, item: Any, seen: set[str]) -> str:
    """Each expectation needs a unique snake_case meta.rule: it is what rejects.csv shows."""
    where = f"{path}: expectation {position}"
    if not isinstance(item, dict):
        raise ValueError(f"{where} is not an object")
    meta = item.get("meta")
    rule = meta.get("rule") if isinstance(meta, dict) else None
    if not isinstance(rule, str) or not _RULE.match(rule):
        raise ValueError(f"{where} ({item.get('type')}) needs a snake_case meta.rule")
    if rule in seen:
        raise ValueError(f"{where}: rule {rule!r} is used twice")
    if not isinstance(meta.get("description"), str) or not meta["description"]:
        raise ValueError(f"{where} ({rule}) needs a meta.description")
    seen.add(rule)
    return rule


def _build_expectation(path: Path, position: int, item: dict[str, Any]) -> Expectation:
    """One GX expectation; GX's own suite loader would log and drop a bad one, so build it here."""
    _quiet_gx()
    from great_expectations import exceptions as gx_exceptions
    from great_expectations.expectations.expectation_configuration import (
        ExpectationConfiguration,
    )

    meta = item["meta"]
    item = {"notes": f"{meta['rule']}: {meta['description']}", **item}  # Data Docs show notes
    try:
        return ExpectationConfiguration(**item).to_domain_obj()
    except (gx_exceptions.GreatExpectationsError, ValueError, TypeError) as error:
        rule = item["meta"]["rule"]
        raise ValueError(f"{path}: expectation {position} ({rule}) is invalid: {error}") from None


def read_suite(kind: str) -> tuple[Path, dict[str, Any]]:
    """The suite file of one input kind as JSON, each expectation with a unique snake_case rule
    and a description; GX is not imported (its own checks of the arguments are load_suite's)."""
    path = _suite_path(kind)
    data = _read_json(path)
    seen: set[str] = set()
    for position, item in enumerate(data["expectations"], start=1):
        _check_meta(path, position, item, seen)
    return path, data


def load_suite(kind: str) -> ExpectationSuite:
    """The suite of one input kind, checked so that a broken file fails loudly, naming itself."""
    _quiet_gx()
    from great_expectations.core import ExpectationSuite

    path, data = read_suite(kind)
    expectations = [
        _build_expectation(path, position, item)
        for position, item in enumerate(data["expectations"], start=1)
    ]
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else None
    return ExpectationSuite(name=data["name"], expectations=expectations, meta=meta)


@dataclass(frozen=True)
class RowFailure:
    """One row broke one rule; `row` is the 0-based position in the frame given to validate."""

    row: int
    column: str
    rule: str
    value: str


@dataclass(frozen=True)
class ExpectationOutcome:
    """How one expectation fared on a batch, for reports and counts."""

    rule: str
    expectation: str
    column: str | None
    success: bool
    unexpected: int
    description: str


@dataclass
class BatchOutcome:
    """Every row failure of a batch plus the per-expectation summary."""

    rows: int
    failures: list[RowFailure]
    outcomes: list[ExpectationOutcome]

    @property
    def failed_rows(self) -> set[int]:
        """Positions of rows that broke at least one rule: they go to rejects, not to examples."""
        return {failure.row for failure in self.failures}


def _column(expectation: Expectation | ExpectationConfiguration) -> str | None:
    """The column an expectation runs on, or None for table-level expectations."""
    _quiet_gx()
    from great_expectations.expectations.expectation import Expectation

    config = expectation.configuration if isinstance(expectation, Expectation) else expectation
    column = config.kwargs.get("column")
    return column if isinstance(column, str) else None


def _new_context() -> EphemeralDataContext:
    """An in-memory GX context with analytics, progress bars and the temporary docs site off."""
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _positional(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with a 0..n-1 RangeIndex, so GX's unexpected indices are row positions."""
    index = frame.index
    if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
        return frame
    return frame.reset_index(drop=True)


def _raised(info: Any) -> str | None:
    """GX's message when an expectation crashed; exception_info is flat or keyed by metric."""
    if not isinstance(info, Mapping):
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for nested in info.values():
        message = _raised(nested)
        if message:
            return message
    return None


def _as_text(value: object) -> str:
    """A cell as rejects.csv shows it: "<null>" for a missing value, else its text."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NULL_TEXT
    return str(value)


class SuiteRunner:
    """Validates batches of one input kind with GX, reusing one context and the loaded suite."""

    def __init__(
        self, kind: str, context: EphemeralDataContext | None = None, asset_name: str = "batch"
    ) -> None:
        self.kind = kind
        self.suite = load_suite(kind)
        self._context = context or _new_context()
        source = self._context.data_sources.add_pandas(name=f"ftpipe_{kind}")
        asset = source.add_dataframe_asset(name=asset_name)
        self._batch_definition: BatchDefinition = asset.add_batch_definition_whole_dataframe(
            "whole_batch"
        )
        self._required = {
            column
            for expectation in self.suite.expectations
            if expectation.expectation_type == EXISTS and (column := _column(expectation))
        }
        self._suites: dict[frozenset[str], ExpectationSuite] = {}

    def validate(self, frame: pd.DataFrame) -> BatchOutcome:
        """Run the suite on one batch; raise ValueError when a required column is absent."""
        frame = _positional(frame)
        suite = self._suite_for(frozenset(map(str, frame.columns)))
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(suite, result_format=RESULT_FORMAT)
        return self._batch_outcome(result, frame)

    def validate_into_docs(self, frame: pd.DataFrame, site: str) -> BatchOutcome:
        """Validate as `validate` does, through a GX checkpoint that stores the result and
        updates the Data Docs site `site` of this runner's context."""
        import great_expectations as gx

        frame = _positional(frame)
        suite = self._context.suites.add(self._suite_for(frozenset(map(str, frame.columns))))
        definition = self._context.validation_definitions.add(
            gx.ValidationDefinition(name=self.kind, data=self._batch_definition, suite=suite)
        )
        checkpoint = self._context.checkpoints.add(
            gx.Checkpoint(
                name=f"ftpipe_{self.kind}",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[site])],
                result_format=DOCS_RESULT_FORMAT,
            )
        )
        run = checkpoint.run(batch_parameters={"dataframe": frame})
        [result] = run.run_results.values()
        return self._batch_outcome(result, frame)

    def _batch_outcome(
        self, result: ExpectationSuiteValidationResult, frame: pd.DataFrame
    ) -> BatchOutcome:
        self._refuse_broken(result)
        outcomes = [self._outcome(item) for item in result.results]
        failures = [failure for item in result.results for failure in self._failures(item, frame)]
        failures.sort(key=lambda failure: failure.row)
        return BatchOutcome(rows=len(frame), failures=failures, outcomes=outcomes)

    def _suite_for(self, columns: frozenset[str]) -> ExpectationSuite:
        """The suite minus expectations on absent optional columns, built once per column set.

        When a required column is absent only the column checks run, so the refusal is cheap.
        """
        from great_expectations.core import ExpectationSuite

        if columns not in self._suites:
            complete = self._required <= columns
            kept = [
                expectation.configuration
                for expectation in self.suite.expectations
                if expectation.expectation_type == EXISTS
                or (complete and _column(expectation) in (None, *columns))
            ]
            self._suites[columns] = ExpectationSuite(name=self.suite.name, expectations=kept)
        return self._suites[columns]

    def _refuse_broken(self, result: ExpectationSuiteValidationResult) -> None:
        """A missing required column or a crashed expectation stops the batch, never passes it."""
        missing = [
            _column(item.expectation_config) or "?"
            for item in result.results
            if item.expectation_config.type == EXISTS and not item.success
        ]
        if missing:
            names = ", ".join(repr(name) for name in missing)
            raise ValueError(f"missing required column{'s' if len(missing) > 1 else ''} {names}")
        for item in result.results:
            message = _raised(item.exception_info)
            if message:
                rule = item.expectation_config.meta.get("rule")
                raise RuntimeError(f"{self.kind} rule {rule!r} could not run: {message}")

    def _outcome(self, item: ExpectationValidationResult) -> ExpectationOutcome:
        """The summary line of one expectation; descriptions come from the suite file."""
        config = item.expectation_config
        rule = str(config.meta["rule"])
        return ExpectationOutcome(
            rule=rule,
            expectation=config.type,
            column=_column(config),
            success=bool(item.success),
            unexpected=int(item.result.get("unexpected_count") or 0),
            description=str(config.meta.get("description", "")),
        )

    def _failures(self, item: ExpectationValidationResult, frame: pd.DataFrame) -> list[RowFailure]:
        """One RowFailure per row GX listed as unexpected; values are read back from the frame."""
        indices = item.result.get("unexpected_index_list") or []
        column = _column(item.expectation_config)
        if item.success or not indices or column is None:
            return []
        rule = str(item.expectation_config.meta["rule"])
        values = frame[column].take(indices).tolist()
        return [
            RowFailure(row=int(row), column=column, rule=rule, value=_as_text(value))
            for row, value in zip(indices, values, strict=True)
        ]


def validate_samples(frames: Mapping[str, pd.DataFrame], folder: Path) -> dict[str, BatchOutcome]:
    """The run's one GX validation per suite (of the frame given for it), each stored in one
    ephemeral context whose Data Docs site (HTML) is written to `folder`."""
    context = _new_context()
    context.add_data_docs_site(
        DOCS_SITE,
        {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(folder),
            },
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            # a page per suite (each rule with its notes: rule name and description) and per
            # validation; no profiling pages, no how-to buttons
            "site_section_builders": {"profiling": "0"},
            "show_how_to_buttons": False,
        },
    )
    results = {
        kind: SuiteRunner(kind, context, "run_sample").validate_into_docs(frame, DOCS_SITE)
        for kind, frame in frames.items()
    }
    for name in UNUSED_DOCS_ASSETS:
        (folder / name).unlink(missing_ok=True)
    return results

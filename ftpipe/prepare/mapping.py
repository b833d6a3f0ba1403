"""Which CSV columns become which chat roles: recognised pairs, an explicit map, or label mode.

A plan is made once per file from its header, then applied to every batch as a column
selection, so mapping costs nothing per row. The recognised header names, English and Russian,
live in one data file (`data/column_names.json`, installed as `ftpipe.data`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from ftpipe.errors import InputError
from ftpipe.prepare.options import DEFAULT_LABEL_INSTRUCTION, PrepareOptions

NAMES_PACKAGE, NAMES_FILE = "ftpipe.data", "column_names.json"
_SEPARATORS = re.compile(r"[\s_]+")

Kind = Literal["column_pairs", "labelled_text"]


def header_key(name: str) -> str:
    """How header names are compared: case, surrounding whitespace, underscores and repeated
    spaces ignored, so "  Ответ_Оператора " is "ответ оператора"."""
    return _SEPARATORS.sub(" ", name).strip().casefold()


@cache
def _names() -> dict[str, Any]:
    """The header names data file, read once and checked, so a broken edit names the file."""
    path = files(NAMES_PACKAGE).joinpath(NAMES_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pairs = tuple(_pair(item) for item in data["pairs"])
        lists = {key: tuple(_strings(data[key])) for key in ("system", "text", "label")}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a valid header names file ({error})") from None
    return {"pairs": pairs, **lists}


def _pair(item: object) -> tuple[str, str]:
    """A [user, assistant] pair of header names, else TypeError."""
    names = _strings(item)
    if len(names) != 2:
        raise TypeError(f"a pair is [user, assistant], got {names}")
    return names[0], names[1]


def _strings(values: object) -> list[str]:
    """A JSON list of non-empty strings, else TypeError."""
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise TypeError("expected a list of names")
    return values


PAIRS: tuple[tuple[str, str], ...] = _names()["pairs"]
SYSTEM_NAMES: tuple[str, ...] = _names()["system"]
TEXT_NAMES: tuple[str, ...] = _names()["text"]
LABEL_NAMES: tuple[str, ...] = _names()["label"]


@dataclass(frozen=True)
class ColumnPlan:
    """Source column per role; `label` is set when every row gets the same label."""

    kind: Kind
    columns: dict[str, str]
    label: str | None = None
    system_instruction: str | None = None

    def describe(self) -> str:
        parts = [f"{role} <- {column!r}" for role, column in self.columns.items()]
        if self.label:
            parts.append(f"label = {self.label!r} for every row")
        return ", ".join(parts)


def _find(columns: list[str], names: tuple[str, ...]) -> str | None:
    """The column matching the first of `names` found, compared by `header_key`."""
    by_key: dict[str, str] = {}
    for column in columns:
        by_key.setdefault(header_key(column), column)
    keys = (header_key(name) for name in names)
    return next((by_key[key] for key in keys if key in by_key), None)


def _require(source: str, columns: list[str], wanted: str, what: str) -> str:
    match = _find(columns, (wanted,))
    if match is None:
        raise InputError(source, f"missing required column {wanted!r} ({what}); found {columns}")
    return match


def is_label_header(columns: list[str], options: PrepareOptions) -> bool:
    """Whether a first line names label-mode columns: the configured text or label column, or
    a usual text column name; otherwise CSV text in label mode is read as texts, one a line."""
    text = (options.text_column,) if options.text_column else TEXT_NAMES
    wanted = (*text, options.label_column) if options.label_column else text
    return _find(columns, wanted) is not None


def _label_plan(source: str, columns: list[str], options: PrepareOptions) -> ColumnPlan:
    label_column = (
        _require(source, columns, options.label_column, "label column")
        if options.label_column
        else None
    )
    if options.text_column:
        text = _require(source, columns, options.text_column, "text column")
    else:
        labels = {header_key(name) for name in LABEL_NAMES}
        others = [c for c in columns if c != label_column and header_key(c) not in labels]
        text = _find(columns, TEXT_NAMES) or (others[0] if len(others) == 1 else None)
        if text is None:
            raise InputError(
                source,
                f"no text column found among {columns}; name it with --text-column",
            )
    if options.label is None:
        label_column = label_column or _find(columns, LABEL_NAMES)
        if label_column is None:
            raise InputError(
                source,
                f"label mode needs a label column (one of {list(LABEL_NAMES)}) or --label; "
                f"found {columns}",
            )
    mapped = {"text": text} | ({"label": label_column} if options.label is None else {})
    instruction = options.system_instruction or DEFAULT_LABEL_INSTRUCTION
    return ColumnPlan("labelled_text", mapped, options.label, instruction)


def _pair_plan(columns: list[str]) -> dict[str, str] | None:
    for user, assistant in PAIRS:
        user_column, assistant_column = _find(columns, (user,)), _find(columns, (assistant,))
        if user_column and assistant_column:
            system = _find(columns, SYSTEM_NAMES)
            mapped = {"user": user_column, "assistant": assistant_column}
            return mapped | ({"system": system} if system else {})
    return None


def plan_columns(source: str, columns: list[str], options: PrepareOptions) -> ColumnPlan:
    """Decide the mapping for one file, or say plainly why its columns cannot be used."""
    if options.column_map:
        mapped = {
            role: _require(source, columns, column, f"mapped to {role}")
            for role, column in options.column_map.items()
        }
        return ColumnPlan("column_pairs", mapped, system_instruction=options.system_instruction)
    if options.label_mode:
        return _label_plan(source, columns, options)
    pair = _pair_plan(columns)
    if pair:
        return ColumnPlan("column_pairs", pair, system_instruction=options.system_instruction)
    if _find(columns, TEXT_NAMES) and _find(columns, LABEL_NAMES):
        return _label_plan(source, columns, options)
    names = ", ".join(f"{user}/{assistant}" for user, assistant in PAIRS)
    raise InputError(
        source,
        f"missing required columns: found {columns}; expected a pair such as {names} (any case), "
        "a text and a label column, --label with a text column, or an explicit column map",
    )


def apply_plan(plan: ColumnPlan, table: pa.Table) -> pa.Table:
    """The batch's role columns, trimmed, labels lower-cased, in the suite's column names."""
    arrays: dict[str, pa.Array] = {}
    for role, column in plan.columns.items():
        values = pc.utf8_trim_whitespace(table.column(column).combine_chunks())
        arrays[role] = pc.utf8_lower(values) if role == "label" else values
    if plan.kind == "labelled_text" and plan.label is not None:
        arrays["label"] = pa.repeat(pa.scalar(plan.label, pa.string()), table.num_rows)
    return pa.table(arrays)


def trimmed_cells(plan: ColumnPlan, table: pa.Table) -> int:
    """How many mapped cells had surrounding whitespace (the report's clean-up count)."""
    total = 0
    for column in plan.columns.values():
        values = table.column(column)
        total += pc.sum(pc.not_equal(values, pc.utf8_trim_whitespace(values))).as_py() or 0
    return total


def to_chat_columns(plan: ColumnPlan, mapped: pa.Table) -> dict[str, pa.Array]:
    """system/user/assistant arrays ready to render; system may be absent."""
    rows = mapped.num_rows
    if plan.kind == "labelled_text":
        columns = {"user": mapped.column("text"), "assistant": mapped.column("label")}
    else:
        columns = {"user": mapped.column("user"), "assistant": mapped.column("assistant")}
        if "system" in plan.columns:
            columns["system"] = mapped.column("system")
    if "system" not in columns and plan.system_instruction:
        columns["system"] = pa.repeat(pa.scalar(plan.system_instruction, pa.string()), rows)
    return {
        role: array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
        for role, array in columns.items()
    }

"""Chat examples as JSON lines, written exactly as `json.dumps(..., ensure_ascii=False)` would.

CSV batches are rendered column-wise with pyarrow (escaping and joining in C), so a gigabyte of
rows never passes through a Python loop; examples from dialogues use `json.dumps` itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

ROLE_ORDER = ("system", "user", "assistant")
_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
_RARE_CONTROL = "[\x00-\x08\x0b\x0c\x0e-\x1f]"  # json.dumps writes these as \b, \f or \\u00XX
_RARE_CONTROL_RE = re.compile(_RARE_CONTROL)
_OPEN = '{"messages": ['
_CLOSE = "]}"


def render_example(messages: list[dict[str, Any]], extras: dict[str, Any] | None = None) -> str:
    """One example line, the reference format every other path must match byte for byte;
    `extras` are the example's other top-level keys (tools, functions), kept as they came."""
    return json.dumps({"messages": messages, **(extras or {})}, ensure_ascii=False)


def _escaped(values: pa.Array) -> pa.Array:
    """JSON string bodies (without quotes) of a string array."""
    out = values
    for old, new in _ESCAPES:
        out = pc.replace_substring(out, old, new)
    rare = pc.match_substring_regex(values, _RARE_CONTROL)
    if pc.any(rare).as_py():
        picked = pc.filter(values, rare).to_pylist()
        exact = pa.array([json.dumps(text, ensure_ascii=False)[1:-1] for text in picked])
        out = pc.replace_with_mask(out, rare, exact)
    return out


def _message(role: str, values: pa.Array, separator: str) -> list[pa.Array | str]:
    """The pieces of one message object, joined later with the rest of the line."""
    return [f'{separator}{{"role": "{role}", "content": "', _escaped(values), '"}']


def _optional_system(values: pa.Array) -> pa.Array:
    """The system message and its separator, or "" where the row has no system text: one
    rendering pass whichever rows have one."""
    parts = [*_message("system", values, ""), ", "]
    rendered = pc.binary_join_element_wise(*parts, "")
    return pc.if_else(pc.equal(values, ""), "", rendered)


def render_columns(columns: dict[str, pa.Array]) -> pa.Array:
    """One JSON line per row from system/user/assistant arrays (system optional, "" = none)."""
    roles = [role for role in ROLE_ORDER if role in columns and role != "system"]
    parts: list[pa.Array | str] = [_OPEN]
    if "system" in columns:
        parts.append(_optional_system(columns["system"]))
    for position, role in enumerate(roles):
        parts += _message(role, columns[role], ", " if position else "")
    parts.append(_CLOSE)
    return pc.binary_join_element_wise(*parts, "")

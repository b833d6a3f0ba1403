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


def render_columns(columns: dict[str, pa.Array]) -> pa.Array:
    """One JSON line per row from system/user/assistant arrays (system optional, "" = none)."""
    roles = [role for role in ROLE_ORDER if role in columns]
    parts: list[pa.Array | str] = ['{"messages": [']
    for position, role in enumerate(roles):
        separator = ", " if position else ""
        parts += [f'{separator}{{"role": "{role}", "content": "', _escaped(columns[role]), '"}']
    parts.append("]}")
    full = pc.binary_join_element_wise(*parts, "")
    if "system" not in columns:
        return full
    empty_system = pc.equal(columns["system"], "")
    if not pc.any(empty_system).as_py():
        return full
    without = render_columns({role: columns[role] for role in roles if role != "system"})
    return pc.if_else(empty_system, without, full)

"""Evaluate models on held-out chat examples: does a fine-tune beat its base?

>>> from ftpipe.eval import evaluate, EvalRequest
>>> result = evaluate(EvalRequest(tuned="ft:gpt-4o-mini:acme::abc", base="gpt-4o-mini",
...                               data="data/processed/<id>/validation.jsonl"))  # doctest: +SKIP
>>> result.verdict  # doctest: +SKIP
'better'

The names are loaded on first use (PEP 562), so `ftpipe.eval.gate` and `ftpipe.eval.options`,
which the CLI needs to declare its options, do not import the OpenAI SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftpipe.eval.result import EvalResult
    from ftpipe.eval.run import EvalRequest, GateFailed, evaluate

__all__ = ["EvalRequest", "EvalResult", "GateFailed", "evaluate"]
_HOMES = {
    "EvalRequest": "ftpipe.eval.run",
    "EvalResult": "ftpipe.eval.result",
    "GateFailed": "ftpipe.eval.run",
    "evaluate": "ftpipe.eval.run",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'ftpipe.eval' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)

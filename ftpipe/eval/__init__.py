"""Evaluate models on held-out chat examples: does a fine-tune beat its base?

>>> from ftpipe.eval import evaluate, EvalRequest
>>> result = evaluate(EvalRequest(tuned="ft:gpt-4o-mini:acme::abc", base="gpt-4o-mini",
...                               data="data/processed/<id>/validation.jsonl"))  # doctest: +SKIP
>>> result.verdict  # doctest: +SKIP
'better'
"""

from ftpipe.eval.result import EvalResult
from ftpipe.eval.run import EvalRequest, GateFailed, evaluate

__all__ = ["EvalRequest", "EvalResult", "GateFailed", "evaluate"]

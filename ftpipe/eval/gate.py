"""The --min-improvement gate: a scheduled re-train reports a worse model instead of adopting it.

>>> parse_gate(["accuracy=0.1", "0.02"], primary="token_f1")
{'accuracy': 0.1, 'token_f1': 0.02}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ftpipe.errors import InputError
from ftpipe.eval.result import ANSWER_METRICS, Difference, GateCheck

PRIMARY = "primary"  # stands for the evaluation's main metric until the data is known


def parse_gate(items: Sequence[str], *, primary: str = PRIMARY) -> dict[str, float]:
    """`metric=value` items (a bare value means the main metric) as a mapping."""
    gate: dict[str, float] = {}
    for item in items:
        metric, _, raw = item.rpartition("=")
        metric = metric.strip() or primary
        try:
            gate[metric] = float(raw)
        except ValueError:
            raise InputError(
                f"--min-improvement {item}",
                "expected METRIC=NUMBER or a NUMBER, e.g. accuracy=0.05",
            ) from None
    check_gate_metrics(gate)
    return gate


def check_gate_metrics(gate: Mapping[str, float]) -> None:
    """Unknown metric names are refused before any model is asked."""
    for metric, value in gate.items():
        if metric != PRIMARY and metric not in ANSWER_METRICS:
            raise InputError(
                f"--min-improvement {metric}",
                f"unknown metric (one of: {', '.join(ANSWER_METRICS)})",
            )
        if not -1.0 <= value <= 1.0:
            raise InputError(
                f"--min-improvement {metric}={value}",
                "an improvement is a difference of scores between -1 and 1",
            )


def resolve(gate: Mapping[str, float], primary: str) -> dict[str, float]:
    """'primary' replaced by the main metric once the data has chosen it."""
    return {(primary if metric == PRIMARY else metric): value for metric, value in gate.items()}


def check(gate: Mapping[str, float], differences: Sequence[Difference]) -> list[GateCheck]:
    """Each required improvement against the measured difference (tuned minus base)."""
    measured = {d.metric: d.difference for d in differences}
    checks = []
    for metric, required in gate.items():
        if metric not in measured:
            raise InputError(
                f"--min-improvement {metric}",
                f"this evaluation does not measure {metric} (it measures {', '.join(measured)})",
            )
        difference = measured[metric]
        checks.append(
            GateCheck(
                metric=metric,
                required=required,
                difference=difference,
                passed=difference >= required - 1e-12,
            )
        )
    return checks

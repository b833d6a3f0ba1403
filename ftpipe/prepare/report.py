"""The dataset report: report.json for machines, report.md for people."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftpipe.estimate import CostEstimate

PERCENTILES = (50, 90, 95, 99)


@dataclass
class SourceSummary:
    """What one input contributed."""

    name: str
    kind: str
    rows: int = 0
    examples: int = 0
    rejected: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class RuleOutcome:
    """One data rule (GX expectation or chat-format rule) over the whole run."""

    check: str  # "gx:<suite>" or "format"
    rule: str
    description: str
    column: str | None = None
    failed_rows: int = 0

    @property
    def success(self) -> bool:
        return self.failed_rows == 0


def token_summary(counts: np.ndarray, limit: int | None) -> dict[str, Any]:
    """Total, spread and percentiles of the examples' token counts, and a coarse histogram."""
    if counts.size == 0:
        return {"examples": 0, "total": 0}
    low, high = int(counts.min()), int(counts.max()) + 1
    edges = np.unique(np.geomspace(max(1, low), high, num=9).astype(int))
    if edges.size < 2:
        edges = np.array([low, high])
    histogram, bins = np.histogram(counts, bins=edges)
    return {
        "examples": int(counts.size),
        "total": int(counts.sum()),
        "min": int(counts.min()),
        "max": int(counts.max()),
        "mean": round(float(counts.mean()), 1),
        **{f"p{p}": int(np.percentile(counts, p)) for p in PERCENTILES},
        "limit": limit,
        "histogram": [
            {"from": int(low), "to": int(high) - 1, "examples": int(n)}
            for low, high, n in zip(bins[:-1], bins[1:], histogram, strict=True)
        ],
    }


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def cost_dict(cost: CostEstimate) -> dict[str, Any]:
    return asdict(cost)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """A readable report with the counts, the rules, the token spread and the cost estimate."""
    counts, tokens, cost = report["counts"], report["tokens"], report["cost"]
    out = [
        f"# Dataset {report['dataset_id']}",
        "",
        f"Model `{report['options']['model']}`; status **{report['status']}**"
        + (f": {report['error']}" if report.get("error") else "."),
        "",
        "## Counts",
        "",
        *_table(
            ["what", "count"], [[key.replace("_", " "), value] for key, value in counts.items()]
        ),
        "",
        "## Inputs",
        "",
        *_table(
            ["source", "kind", "rows", "examples", "rejected", "notes"],
            [
                [
                    s["name"],
                    s["kind"],
                    s["rows"],
                    s["examples"],
                    s["rejected"],
                    "; ".join(s["notes"]),
                ]
                for s in report["sources"]
            ],
        ),
        "",
        "## Clean-up",
        "",
        *_table(["step", "count"], [[step["step"], step["count"]] for step in report["cleanup"]]),
        "",
        "## Rules",
        "",
        *_table(
            ["check", "rule", "column", "failed rows", "result", "description"],
            [
                [
                    r["check"],
                    r["rule"],
                    r["column"] or "",
                    r["failed_rows"],
                    "pass" if r["failed_rows"] == 0 else "FAIL",
                    r["description"],
                ]
                for r in report["rules"]
            ],
        ),
        "",
        "## Tokens per example",
        "",
    ]
    if tokens.get("examples"):
        out += _table(
            ["total", "min", "mean", "p50", "p90", "p95", "p99", "max", "limit"],
            [
                [
                    tokens[k]
                    for k in ("total", "min", "mean", "p50", "p90", "p95", "p99", "max", "limit")
                ]
            ],
        )
        out += [
            "",
            *_table(
                ["tokens", "examples"],
                [[f"{h['from']}-{h['to']}", h["examples"]] for h in tokens["histogram"]],
            ),
        ]
    price = "unknown" if cost["usd"] is None else f"${cost['usd']:.4f}"
    out += [
        "",
        "## Cost estimate",
        "",
        f"{cost['examples']} training examples x {cost['epochs']} epochs = "
        f"{cost['billed_tokens']:,} billed tokens at "
        f"{'?' if cost['price_per_1m'] is None else cost['price_per_1m']} USD per 1M "
        f"({cost['model']}): **{price}**. Validation examples are not billed.",
        "",
        "## Outputs",
        "",
        *[f"- {name}: `{path}`" for name, path in report["outputs"].items() if path],
        "",
    ]
    return "\n".join(out)

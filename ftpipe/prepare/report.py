"""The dataset report: report.json for machines, report.md for people."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ftpipe.estimate import CostEstimate
from ftpipe.prepare.redaction import KINDS as REDACTION_KINDS

PERCENTILES = (50, 90, 95, 99)
REDACTION_NAMES = {"email": "e-mail addresses", "phone": "phone numbers", "card": "card numbers"}


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
    """One data rule (GX expectation or chat-format rule) over the whole run, with how far it
    was run: on every row, or only on a sample of rows that hold by construction."""

    check: str  # "gx:<suite>", "format", "limits" or "dialogues"
    rule: str
    description: str
    column: str | None = None
    failed_rows: int = 0
    checked_rows: int = 0  # rows the rule ran on
    built_rows: int = 0  # rows ftpipe wrote itself, so the rule holds by construction
    sampled_rows: int = 0  # of those, rows the rule was still run on (a spot check)

    @property
    def success(self) -> bool:
        return self.failed_rows == 0

    def add(self, other: RuleOutcome) -> None:
        """Fold in the same rule's outcome on more rows (another batch or source)."""
        self.failed_rows += other.failed_rows
        self.checked_rows += other.checked_rows
        self.built_rows += other.built_rows
        self.sampled_rows += other.sampled_rows

    @property
    def rows(self) -> int:
        """Every row the result speaks for: those checked and those true by construction."""
        return self.checked_rows + self.built_rows

    @property
    def rows_run(self) -> int:
        """The rows the rule actually ran on."""
        return self.checked_rows + self.sampled_rows

    @property
    def result(self) -> str:
        """What may honestly be said: a 0 counts as a pass only where every row was checked."""
        if self.failed_rows:
            return "FAIL"
        if not self.rows:
            return "not run"
        if self.rows_run == self.rows:
            return "pass"
        if self.sampled_rows:
            return "holds by construction, checked on a sample"
        return "holds by construction"

    @property
    def coverage(self) -> str:
        """Which rows the result speaks for, in words."""
        if not self.rows:
            return "no rows"
        if self.rows_run == self.rows:
            return f"all {self.rows} checked"
        unchecked = self.built_rows - self.sampled_rows
        return f"{self.rows_run} of {self.rows} checked; {unchecked} by construction"

    def as_dict(self) -> dict[str, Any]:
        """The rule as report.json lists it."""
        return {
            "check": self.check,
            "rule": self.rule,
            "column": self.column,
            "description": self.description,
            "failed_rows": self.failed_rows,
            "success": self.success,
            "result": self.result,
            "checked_rows": self.checked_rows,
            "by_construction_rows": self.built_rows,
            "sampled_rows": self.sampled_rows,
            "coverage": self.coverage,
        }


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


def redaction_dict(redact: bool, counts: dict[str, int]) -> dict[str, Any] | None:
    """What redaction found and replaced, per kind; None when it was not asked for."""
    if not redact:
        return None
    found = {kind: counts.get(kind, 0) for kind in REDACTION_KINDS}
    return {"applies_to": "dialogues", "replaced": found, "total": sum(found.values())}


def _redaction(redaction: dict[str, Any] | None) -> list[str]:
    """The report.md section on redaction: counts per kind, or that it found nothing."""
    if redaction is None:
        return []
    rows = [[REDACTION_NAMES[kind], count] for kind, count in redaction["replaced"].items()]
    found = "nothing to replace" if not redaction["total"] else f"{redaction['total']} replaced"
    return [
        "## Redaction",
        "",
        f"Personal data in {redaction['applies_to']}: {found}.",
        "",
        *_table(["kind", "replaced"], rows),
        "",
    ]


def _skipped(skipped: list[dict[str, str]]) -> list[str]:
    """The report.md section on inputs found in the folders but not read, each with why."""
    if not skipped:
        return []
    rows = [[entry["path"].replace("|", "\\|"), entry["reason"]] for entry in skipped]
    return [
        "## Skipped inputs",
        "",
        f"{len(skipped)} found but not read:",
        "",
        *_table(["path", "why"], rows),
        "",
    ]


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
        *_skipped(report.get("skipped_inputs") or []),
        "## Clean-up",
        "",
        *_table(["step", "count"], [[step["step"], step["count"]] for step in report["cleanup"]]),
        "",
        *_redaction(report.get("redaction")),
        "## Rules",
        "",
        *_table(
            ["check", "rule", "column", "failed rows", "rows", "result", "description"],
            [
                [
                    r["check"],
                    r["rule"],
                    r["column"] or "",
                    r["failed_rows"],
                    r.get("coverage", ""),
                    r.get("result", "pass" if r["failed_rows"] == 0 else "FAIL"),
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

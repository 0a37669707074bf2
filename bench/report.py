"""Figures, the table and bench/results/latest.json.

A `Figure` is one measured quantity over repetitions. When it has a baseline measured in the
same run, its `ratio` (value / baseline median, one per repetition) is the headline and the
target applies to the ratio; otherwise the target applies to the value itself.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

RESULTS = Path(__file__).parent / "results" / "latest.json"


@dataclass(frozen=True)
class Target:
    """`value <= limit` or `value >= limit`, on the ratio or on the figure's own value."""

    op: Literal["<=", ">="]
    limit: float
    on: Literal["ratio", "value"] = "ratio"

    def met(self, x: float) -> bool:
        return x <= self.limit if self.op == "<=" else x >= self.limit

    def __str__(self) -> str:
        suffix = "x" if self.on == "ratio" else ""
        return f"{self.op}{self.limit:g}{suffix}"


@dataclass
class Figure:
    case: str
    name: str
    unit: str
    values: list[float]
    baseline: list[float] | None = None
    baseline_name: str = ""
    target: Target | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratios(self) -> list[float] | None:
        if not self.baseline or not self.values:
            return None
        base = statistics.median(self.baseline)
        return [v / base for v in self.values] if base else None

    @property
    def met(self) -> bool | None:
        if self.target is None or not self.values:
            return None
        ratios = self.ratios
        if self.target.on == "ratio":
            return None if ratios is None else self.target.met(statistics.median(ratios))
        return self.target.met(statistics.median(self.values))

    def as_dict(self) -> dict[str, Any]:
        ratios = self.ratios
        return {
            "case": self.case,
            "figure": self.name,
            "unit": self.unit,
            "value": _summary(self.values),
            "baseline": _summary(self.baseline) if self.baseline else None,
            "baseline_name": self.baseline_name or None,
            "ratio": _summary(ratios) if ratios else None,
            "target": str(self.target) if self.target else None,
            "met": self.met,
            "note": self.note or None,
            **self.extra,
        }


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of `values`; NaN if there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _num(x: float) -> str:
    if x != x:  # NaN
        return "nan"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def table(figures: list[Figure]) -> str:
    head = ("figure", "median", "min-max", "baseline", "ratio", "target", "met?")
    rows = [head]
    for f in figures:
        values = f.values or [float("nan")]
        ratios = f.ratios
        met = {True: "yes", False: "NO", None: "-"}[f.met]
        baseline = (
            f"{_num(statistics.median(f.baseline))} {f.baseline_name}".strip()
            if f.baseline
            else "-"
        )
        ratio = (
            f"{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]"
            if ratios
            else "-"
        )
        rows.append(
            (
                f"{f.case}: {f.name} ({f.unit})",
                _num(statistics.median(values)),
                f"{_num(min(values))}-{_num(max(values))}",
                baseline,
                ratio,
                str(f.target) if f.target else "-",
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def write(figures: list[Figure], args: dict[str, Any], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "args": args,
        "figures": [f.as_dict() for f in figures],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _cpus() -> int:
    import os

    return os.cpu_count() or 0

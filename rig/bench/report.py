"""The benchmark's output: one table for people, one JSON file for comparing runs."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from rig.bench.figures import Figure, median, nearest_rank

COLUMNS = (
    "figure", "n", "median", "p95", "max", "unit",
    "ref median", "ref p95", "ratio", "ratio p95", "target", "met",
)
NUMERIC = frozenset(range(1, 10))


def machine() -> dict[str, Any]:
    """What the figures are measured on, how busy it is, and when (the run's start)."""
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "processor": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def results(figures: list[Figure], before: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: when, where, with which plan, and every figure's summary."""
    where = {k: v for k, v in before.items() if k != "date"}
    return {
        "date": before["date"],
        "machine": {**where, "loadavg_after": machine()["loadavg"]},
        "plan": plan,
        "figures": {f.key: f.summary() for f in figures},
    }


def conditions(document: dict[str, Any]) -> str:
    """One line on where and when, and how busy the machine was: figures depend on it."""
    m = document["machine"]
    return (
        f"Measured {document['date']} on {m['cpus']} CPUs ({m['processor']}), Linux "
        f"{m['kernel']}, Python {m['python']}; load average {' '.join(m['loadavg'])} "
        f"before, {' '.join(m['loadavg_after'])} after."
    )


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def publish(
    out: Path, figures: list[Figure], before: dict[str, Any], plan: dict[str, Any]
) -> None:
    """The end of every benchmark run: the table and its conditions on the terminal, the
    JSON document in `out` (each bench reports alike, so their runs compare)."""
    document = results(figures, before, plan)
    print(table(figures))
    print(f"\n{conditions(document)}")
    write_json(out, document)
    print(f"bench: wrote {out}")


def _number(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def table(figures: list[Figure]) -> str:
    """The figures as aligned columns (with the reference's beside the box's where there
    is one), then each figure's method and note."""
    rows = [COLUMNS]
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "MISSED")
        compared = (
            (_number(median(f.reference)), _number(nearest_rank(f.reference, 95)),
             _times(f.ratio), _times(f.ratio_p95))
            if f.reference
            else ("", "", "", "")
        )
        rows.append(
            (
                f.title,
                str(len(f.samples)),
                _number(f.median),
                _number(f.p95),
                _number(f.max),
                f.unit,
                *compared,
                f.target,
                met,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.rjust(widths[i]) if i in NUMERIC else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        "How each figure was measured (ref: the same figure on what it is compared with, "
        "in this run; ratio: the box's over it):"
    )
    for f in figures:
        against = f" Compared with: {f.against}." if f.against else ""
        lines.append(f"- {f.title}: {f.method}{against}")
        if f.note:
            lines.append(f"  {f.note}")
    return "\n".join(lines)


def _times(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}"

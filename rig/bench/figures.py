"""A measured figure: its samples, their summary, and one sentence on how it was measured."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def nearest_rank(samples: list[float], percent: float) -> float:
    """The nearest-rank percentile: a value that was measured, never an interpolation."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[rank - 1]


def median(samples: list[float]) -> float:
    """The middle value (the mean of the two middle ones for an even count)."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


@dataclass
class Figure:
    """One number the benchmark reports, with what it is compared against.

    `target` is the goal in words; `met` is whether it is reached, None where the
    benchmark cannot judge it. `note` carries what a reader needs beside the value
    (e.g. the loopback's own latency). `reference` holds the same figure measured
    in the same run on what the box is compared with (`against`: the reference
    client, or `arecord` alone), so that `ratio` means something on a busy machine.
    """

    key: str
    title: str
    unit: str
    method: str
    samples: list[float] = field(default_factory=list)
    target: str = ""
    met: bool | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    reference: list[float] = field(default_factory=list)
    against: str = ""

    @property
    def median(self) -> float:
        return median(self.samples)

    @property
    def p95(self) -> float:
        return nearest_rank(self.samples, 95)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def ratio(self) -> float | None:
        """The box's median over the reference's (None without a reference or with a zero)."""
        return _ratio(self.median, median(self.reference)) if self.reference else None

    @property
    def ratio_p95(self) -> float | None:
        return _ratio(self.p95, nearest_rank(self.reference, 95)) if self.reference else None

    def summary(self) -> dict[str, Any]:
        """The JSON form: the summary, the method, the target, the reference, and the raw
        samples."""
        compared = self.reference and {
            "reference": {
                "against": self.against,
                "n": len(self.reference),
                "median": round(median(self.reference), 3),
                "p95": round(nearest_rank(self.reference, 95), 3),
                "max": round(max(self.reference), 3),
                "samples": [round(s, 3) for s in self.reference],
            },
            "ratio": _rounded(self.ratio),
            "ratio_p95": _rounded(self.ratio_p95),
        }
        return {
            "title": self.title,
            "unit": self.unit,
            "n": len(self.samples),
            "median": round(self.median, 3),
            "p95": round(self.p95, 3),
            "max": round(self.max, 3),
            "method": self.method,
            "target": self.target,
            "met": self.met,
            "note": self.note,
            "samples": [round(s, 3) for s in self.samples],
            **({"details": self.details} if self.details else {}),
            **(compared or {}),
        }


def _ratio(value: float, base: float) -> float | None:
    return value / base if base else None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

"""The report: the readings, their spread, the worst clock, and in-sync."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .model import Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """Readings judged against a tolerance; the local clock counts as offset 0."""

    readings: tuple[Reading, ...]
    tolerance: float
    in_sync: bool
    """Every readable clock within ``tolerance`` of the local clock."""
    spread: float | None
    """Largest minus smallest offset, the local clock's 0 included."""
    worst: Reading | None
    out_of_tolerance: tuple[Reading, ...]
    unreadable: tuple[Reading, ...]

    def as_dict(self) -> dict[str, Any]:
        """Return the report in the command line's JSON shape."""
        return {
            "in_sync": self.in_sync,
            "spread": self.spread,
            "tolerance": self.tolerance,
            "worst": self.worst.name if self.worst else None,
            "readings": [reading.as_dict() for reading in self.readings],
        }


def build_report(readings: Iterable[Reading], tolerance: float) -> Report:
    """Judge the readings against the tolerance."""
    all_readings = tuple(readings)
    readable = [
        (reading, reading.offset)
        for reading in all_readings
        if reading.error is None and reading.offset is not None
    ]
    offsets = [0.0, *(offset for _, offset in readable)]
    worst = max(readable, key=lambda pair: abs(pair[1]), default=None)
    return Report(
        readings=all_readings,
        tolerance=tolerance,
        in_sync=all(abs(offset) <= tolerance for _, offset in readable),
        spread=max(offsets) - min(offsets) if readable else None,
        worst=worst[0] if worst else None,
        out_of_tolerance=tuple(r for r, offset in readable if abs(offset) > tolerance),
        unreadable=tuple(reading for reading in all_readings if not reading.ok),
    )

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
        raise NotImplementedError


def build_report(readings: Iterable[Reading], tolerance: float) -> Report:
    """Judge the readings against the tolerance."""
    raise NotImplementedError

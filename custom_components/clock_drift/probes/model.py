"""The shared measurement model: a reading, a timed sample, and the probe errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self


class ClockKind(StrEnum):
    """The kinds of clock a probe reads."""

    NTP = "ntp"
    REDIS = "redis"
    CONTAINER = "container"
    DOCKER_HOST = "docker_host"
    CELERY = "celery"
    CHRONY = "chrony"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One clock read against the local clock, or why it could not be read.

    ``offset`` is the source's clock minus the local clock in seconds (positive: the
    source is ahead); ``uncertainty`` bounds ``|measured - true|`` for that link;
    ``taken_at`` is the local ``time.time()`` the offset refers to.
    """

    kind: ClockKind
    name: str
    offset: float | None = None
    uncertainty: float | None = None
    taken_at: float | None = None
    error: str | None = None

    @classmethod
    def failed(cls, kind: ClockKind, name: str, error: str) -> Self:
        """Return a reading that records why the clock could not be read."""
        return cls(kind=kind, name=name, error=error)

    @property
    def ok(self) -> bool:
        """Return whether the clock was read."""
        return self.error is None and self.offset is not None

    def as_dict(self) -> dict[str, Any]:
        """Return the reading in the report's JSON shape."""
        return {
            "kind": str(self.kind),
            "name": self.name,
            "offset": self.offset,
            "uncertainty": self.uncertainty,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Sample:
    """A remote clock value read between two local clock reads ``t0`` and ``t1``."""

    t0: float
    t1: float
    remote: float
    resolution: float = 0.0

    @property
    def round_trip(self) -> float:
        """Return the time the exchange took on the local clock."""
        return self.t1 - self.t0

    @property
    def midpoint(self) -> float:
        """Return the local time the remote value is assumed to have been read at."""
        return (self.t0 + self.t1) / 2

    @property
    def offset(self) -> float:
        """Return the remote clock minus the local clock at the midpoint."""
        return self.remote - self.midpoint

    @property
    def uncertainty(self) -> float:
        """Return half the round trip, or the remote clock's resolution if larger."""
        return max(self.round_trip / 2, self.resolution)


def best_sample(samples: Iterable[Sample]) -> Sample:
    """Return the sample with the smallest uncertainty (NTP's clock-filter idea)."""
    return min(samples, key=lambda sample: sample.uncertainty)


class ProbeError(Exception):
    """A clock could not be read; the message says why and never holds a secret."""


class ProbeTimeoutError(ProbeError):
    """The source did not answer in time."""


class ProbeConnectionError(ProbeError):
    """The source could not be reached."""


class ProbeAuthError(ProbeError):
    """The source refused our credentials or permissions."""


class ProbeResponseError(ProbeError):
    """The source answered with something that is not a valid reading."""


class ProbeCommandError(ProbeError):
    """A command (chronyc) ran but reported a failure."""

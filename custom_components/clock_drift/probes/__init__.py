"""Clock probes: measure how far each clock of a stack is from the local clock.

Pure asyncio, no Home Assistant import. Every offset is the source's clock minus the
local clock, in seconds, signed (positive: the source is ahead), with the uncertainty of
the link it was read through and the local time it was taken at.
"""

from .model import (
    ClockKind,
    ProbeAuthError,
    ProbeCommandError,
    ProbeConnectionError,
    ProbeError,
    ProbeResponseError,
    ProbeTimeoutError,
    Reading,
    Sample,
    best_sample,
)

__all__ = [
    "ClockKind",
    "ProbeAuthError",
    "ProbeCommandError",
    "ProbeConnectionError",
    "ProbeError",
    "ProbeResponseError",
    "ProbeTimeoutError",
    "Reading",
    "Sample",
    "best_sample",
]

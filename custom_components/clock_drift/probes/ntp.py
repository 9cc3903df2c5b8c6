"""NTP probe: SNTP client queries over an asyncio datagram endpoint (ntplib's codec)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpReading(Reading):
    """An NTP server's clock: ``offset`` is the server minus the local clock."""

    delay: float
    stratum: int
    ref_id: str
    leap: int


async def query_ntp(
    server: str, *, samples: int = 4, timeout: float = 1.0
) -> NtpReading:
    """Query ``host`` or ``host:port`` and return the sample with the smallest delay.

    Raises ProbeTimeoutError, ProbeConnectionError or ProbeResponseError (spoofed or
    stale origin, wrong mode, Kiss-o'-Death, unsynchronised server, bad datagram).
    """
    raise NotImplementedError


async def query_ntp_servers(
    servers: Sequence[str], *, samples: int = 4, timeout: float = 1.0
) -> list[Reading]:
    """Query every server concurrently: an NtpReading each, or a failed Reading."""
    raise NotImplementedError


def median_offset(readings: Sequence[Reading]) -> float | None:
    """Return the median offset of the readable servers, None when none was read."""
    raise NotImplementedError

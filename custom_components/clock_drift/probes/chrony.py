"""chrony probe: ``chronyc -c tracking`` and ``chronyc makestep`` with fixed argv."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .docker import DockerClocks
from .model import Reading


class LeapStatus(StrEnum):
    """chrony's leap status."""

    NORMAL = "normal"
    INSERT = "insert_second"
    DELETE = "delete_second"
    NOT_SYNCHRONISED = "not_synchronised"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChronyTracking:
    """Every field of ``chronyc -c tracking``, in seconds unless named ppm."""

    ref_id: str
    ref_name: str
    stratum: int
    ref_time: float
    system_time: float
    """How far the system clock is ahead of NTP time (positive: fast)."""
    last_offset: float
    rms_offset: float
    frequency_ppm: float
    residual_frequency_ppm: float
    skew_ppm: float
    root_delay: float
    root_dispersion: float
    update_interval: float
    leap_status: LeapStatus

    def reading(self, name: str) -> Reading:
        """Return NTP time minus the system clock as a CHRONY reading."""
        raise NotImplementedError


class ChronyClient:
    """Runs chronyc through a local command socket or inside a container."""

    name: str

    @classmethod
    def local(cls, socket_path: str, *, chronyc: str = "chronyc") -> ChronyClient:
        """Return a client for ``chronyc -h SOCKET``."""
        raise NotImplementedError

    @classmethod
    def in_container(cls, docker: DockerClocks, container: str) -> ChronyClient:
        """Return a client that execs ``chronyc`` in a container through Docker."""
        raise NotImplementedError

    async def tracking(self) -> ChronyTracking:
        """Return chrony's tracking report.

        Raises ProbeConnectionError, ProbeAuthError ("Not authorised"),
        ProbeCommandError, ProbeResponseError.
        """
        raise NotImplementedError

    async def makestep(self) -> str:
        """Run ``makestep`` and return chrony's answer; a failure raises."""
        raise NotImplementedError

"""Celery probe: a long-lived listener for worker heartbeats on a Redis broker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .model import Reading


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerState:
    """What the heartbeats of one worker say."""

    hostname: str
    offset: float
    """Largest ``timestamp - received`` over the recent heartbeats, in seconds."""
    uncertainty: float
    last_heartbeat: float
    """Local time the last heartbeat was received."""
    freq: float
    utcoffset: int | None
    """The worker's ``utcoffset`` field as sent (Celery's convention, whole hours)."""
    utcoffset_mismatch: bool
    """Whether the worker's UTC offset differs from the local one."""
    sw_ver: str | None
    active: int | None
    processed: int | None
    loadavg: tuple[float, ...] | None

    def online(self, now: float) -> bool:
        """Return whether a heartbeat came within two heartbeat periods."""
        raise NotImplementedError


class HeartbeatListener:
    """PSUBSCRIBEs to ``/{db}.celeryev/worker.*`` and tracks every worker's clock."""

    name: str
    """The broker, never with credentials."""

    def __init__(
        self,
        broker_url: str,
        *,
        local_utcoffset: Callable[[], int] | None = None,
        window: int = 10,
        max_workers: int = 1000,
    ) -> None:
        """Prepare a listener for a ``redis://`` or ``rediss://`` broker URL."""
        raise NotImplementedError

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        raise NotImplementedError

    async def start(self) -> None:
        """Start ``run`` in a task of its own (for callers without a task manager)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Cancel the listening task and close the connection."""
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        """Return whether the listener is subscribed now."""
        raise NotImplementedError

    @property
    def last_error(self) -> str | None:
        """Return why the last connection attempt failed, None when connected."""
        raise NotImplementedError

    def workers(self) -> dict[str, WorkerState]:
        """Return the state of every worker heard from, by hostname."""
        raise NotImplementedError

    def readings(self, now: float | None = None) -> list[Reading]:
        """Return a CELERY reading per worker heard from."""
        raise NotImplementedError

    def forget(self, hostname: str) -> None:
        """Drop a worker (gone longer than the caller's stale limit)."""
        raise NotImplementedError

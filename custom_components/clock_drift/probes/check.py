"""One-shot check: read every configured clock concurrently and build the report."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .celery import HeartbeatListener
from .chrony import ChronyClient
from .docker import DockerClocks
from .model import ClockKind, ProbeError, Reading
from .ntp import query_ntp_servers
from .redis import RedisClock, redis_name
from .report import Report, build_report


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckConfig:
    """Which clocks to read, and how."""

    ntp: Sequence[str] = ()
    redis: str | None = None
    docker: str | None = None
    containers: Sequence[str] = ()
    celery: str | None = None
    listen: float = 5.0
    """Seconds to listen for Celery heartbeats (two heartbeat periods and more)."""
    chrony_socket: str | None = None
    chrony_container: str | None = None
    tolerance: float = 30.0


async def _guarded(
    kind: ClockKind, name: str, read: Callable[[], Awaitable[list[Reading]]]
) -> list[Reading]:
    """Return the readings of ``read``, or a failed reading that says why."""
    try:
        return await read()
    except ProbeError as err:
        return [Reading.failed(kind, name, str(err))]
    except ValueError:
        # Not str(err): a library's message about a URL may quote its credentials.
        return [Reading.failed(kind, name, f"invalid {kind} configuration")]


async def _redis(url: str) -> list[Reading]:
    """Read a Redis server's clock."""
    clock = RedisClock(url)
    try:
        return [await clock.read()]
    finally:
        await clock.close()


async def _docker(config: CheckConfig, url: str) -> list[Reading]:
    """Read a Docker daemon's clock, its containers', and chrony inside one."""
    docker = DockerClocks(url, containers=config.containers)
    try:
        name = docker.name
        jobs = [
            _guarded(ClockKind.DOCKER_HOST, name, _one(docker.read_host)),
            _guarded(ClockKind.CONTAINER, name, docker.read_containers),
        ]
        if config.chrony_container:
            chrony = ChronyClient.in_container(docker, config.chrony_container)
            jobs.append(_guarded(ClockKind.CHRONY, chrony.name, _one(chrony.read)))
        return [reading for group in await asyncio.gather(*jobs) for reading in group]
    finally:
        await docker.close()


async def _celery(url: str, listen: float) -> list[Reading]:
    """Listen to the broker for ``listen`` seconds and read every worker heard."""
    listener = HeartbeatListener(url)
    await listener.start()
    try:
        await asyncio.sleep(listen)
        readings = listener.readings()
        error = listener.last_error
    finally:
        await listener.stop()
    if readings:
        return readings
    return [
        Reading.failed(
            ClockKind.CELERY,
            listener.name,
            error or f"no worker heartbeat within {listen:g} s",
        )
    ]


def _one(
    read: Callable[[], Awaitable[Reading]],
) -> Callable[[], Awaitable[list[Reading]]]:
    """Adapt a single-reading coroutine function to return a list."""

    async def run() -> list[Reading]:
        """Return the single reading as a list."""
        return [await read()]

    return run


async def check(config: CheckConfig) -> Report:
    """Read every configured clock concurrently and judge them against the tolerance."""
    jobs: list[Awaitable[list[Reading]]] = []
    if config.ntp:
        jobs.append(query_ntp_servers(config.ntp))
    if config.redis:
        url = config.redis
        try:
            name = redis_name(url)
        except ValueError:
            name = "redis"
        jobs.append(_guarded(ClockKind.REDIS, name, lambda: _redis(url)))
    if config.docker:
        docker_url = config.docker
        jobs.append(
            _guarded(
                ClockKind.DOCKER_HOST, "docker", lambda: _docker(config, docker_url)
            )
        )
    if config.celery:
        celery_url = config.celery
        jobs.append(
            _guarded(
                ClockKind.CELERY, "celery", lambda: _celery(celery_url, config.listen)
            )
        )
    if config.chrony_socket:
        chrony = ChronyClient.local(config.chrony_socket)
        jobs.append(_one(chrony.read)())
    groups = await asyncio.gather(*jobs)
    return build_report(
        [reading for group in groups for reading in group], config.tolerance
    )

"""Data update coordinator: samples every clock of the site concurrently."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
import time
from typing import Any, override

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import device_registry as dr, issue_registry as ir
from homeassistant.helpers.update_coordinator import DataUpdateCoordinator, UpdateFailed
from homeassistant.util import dt as dt_util

from .const import (
    CHRONYC,
    CONF_CELERY_BROKER_URL,
    CONF_CHRONY_CONTAINER,
    CONF_CHRONY_SOCKET,
    CONF_CONTAINERS,
    CONF_DOCKER_URL,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    CONF_SCAN_INTERVAL,
    CONF_STALE_AFTER,
    CONF_TOLERANCE,
    DEFAULT_SCAN_INTERVAL,
    DEFAULT_STALE_AFTER,
    DEFAULT_TOLERANCE,
    DOMAIN,
    LOGGER,
    OUT_OF_SYNC_CYCLES,
)
from .probes import ClockKind, ProbeAuthError, ProbeError, Reading
from .probes.celery import HeartbeatListener, WorkerState
from .probes.chrony import ChronyClient, ChronyTracking
from .probes.docker import DockerClocks
from .probes.ntp import median_offset, query_ntp_servers
from .probes.redis import RedisClock
from .probes.report import Report, build_report

SOURCE_NTP = "ntp"
SOURCE_REDIS = "redis"
SOURCE_DOCKER = "docker"
SOURCE_CELERY = "celery"
SOURCE_CHRONY = "chrony"


def split_list(value: str | None) -> list[str]:
    """Return the non-empty items of a comma-separated field."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@dataclass(slots=True, kw_only=True)
class ClockDriftClients:
    """The probe clients of one site, built from its connection fields (no I/O)."""

    ntp_servers: list[str]
    redis: RedisClock | None = None
    docker: DockerClocks | None = None
    chrony: ChronyClient | None = None
    broker_url: str | None = None

    @classmethod
    def from_config(cls, data: Mapping[str, Any]) -> ClockDriftClients:
        """Build the clients for the fields that are filled in."""
        clients = cls(ntp_servers=split_list(data.get(CONF_NTP_SERVERS)))
        if redis_url := (data.get(CONF_REDIS_URL) or "").strip():
            clients.redis = RedisClock(redis_url)
        if docker_url := (data.get(CONF_DOCKER_URL) or "").strip():
            clients.docker = DockerClocks(
                docker_url, containers=split_list(data.get(CONF_CONTAINERS))
            )
        if chrony_socket := (data.get(CONF_CHRONY_SOCKET) or "").strip():
            clients.chrony = ChronyClient.local(chrony_socket, chronyc=CHRONYC)
        elif (chrony_container := (data.get(CONF_CHRONY_CONTAINER) or "").strip()) and (
            clients.docker is not None
        ):
            clients.chrony = ChronyClient.in_container(clients.docker, chrony_container)
        if broker_url := (data.get(CONF_CELERY_BROKER_URL) or "").strip():
            clients.broker_url = broker_url
        return clients

    async def close(self) -> None:
        """Close every connection the clients hold."""
        if self.redis is not None:
            await self.redis.close()
        if self.docker is not None:
            await self.docker.close()


@dataclass(slots=True, kw_only=True)
class ClockDriftRuntimeData:
    """What a loaded entry holds while it runs."""

    clients: ClockDriftClients
    coordinator: ClockDriftCoordinator
    listener: HeartbeatListener | None


type ClockDriftConfigEntry = ConfigEntry[ClockDriftRuntimeData]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockDriftData:
    """One cycle's snapshot of every clock of the site."""

    ntp: list[Reading]
    ntp_offset: float | None
    redis: Reading | None
    docker_host: Reading | None
    containers: dict[str, Reading]
    """Every tracked container, a failed reading for those not running now."""
    workers: dict[str, WorkerState]
    chrony: ChronyTracking | None
    errors: dict[str, str]
    """Why a configured source could not be read, by source."""
    report: Report
    taken_at: float
    online: dict[str, bool] = field(default_factory=dict)
    """Whether each worker's heartbeats are current."""


class ClockDriftCoordinator(DataUpdateCoordinator[ClockDriftData]):
    """Samples every configured clock each cycle, concurrently."""

    config_entry: ClockDriftConfigEntry

    def __init__(
        self,
        hass: HomeAssistant,
        entry: ClockDriftConfigEntry,
        clients: ClockDriftClients,
        listener: HeartbeatListener | None,
    ) -> None:
        """Prepare the coordinator for an entry's clients."""
        super().__init__(
            hass,
            LOGGER,
            config_entry=entry,
            name=f"{DOMAIN}_{entry.entry_id}",
            update_interval=timedelta(
                seconds=entry.options.get(CONF_SCAN_INTERVAL, DEFAULT_SCAN_INTERVAL)
            ),
        )
        self.clients = clients
        self.listener = listener
        self.tolerance: float = entry.options.get(CONF_TOLERANCE, DEFAULT_TOLERANCE)
        self.stale_after: float = entry.options.get(
            CONF_STALE_AFTER, DEFAULT_STALE_AFTER
        )
        self._container_seen: dict[str, float] = {}
        self._unavailable: set[str] = set()
        self._out_of_sync_cycles = 0
        self._utcoffset_issues: set[str] = set()
        self._redis_refused = False
        self._reauth_asked: set[str] = set()

    @property
    def site_key(self) -> str:
        """Return the prefix of the site's unique ids."""
        return self.config_entry.unique_id or self.config_entry.entry_id

    @override
    async def _async_update_data(self) -> ClockDriftData:
        """Sample every clock once, concurrently, and judge them."""
        clients = self.clients
        ntp_task = self._ntp()
        redis_task = self._redis()
        docker_task = self._docker()
        chrony_task = self._chrony()
        (ntp, redis, (docker_host, container_readings), chrony) = await asyncio.gather(
            ntp_task, redis_task, docker_task, chrony_task
        )
        now = time.time()
        errors: dict[str, str] = {}
        if clients.ntp_servers and not any(reading.ok for reading in ntp):
            errors[SOURCE_NTP] = "; ".join(
                f"{reading.name}: {reading.error}" for reading in ntp
            )
        if redis is not None and not redis.ok:
            errors[SOURCE_REDIS] = redis.error or "unreadable"
        if docker_host is not None and not docker_host.ok:
            errors[SOURCE_DOCKER] = docker_host.error or "unreadable"
        chrony_reading: Reading | None = None
        if clients.chrony is not None and isinstance(chrony, str):
            errors[SOURCE_CHRONY] = chrony
            chrony_reading = Reading.failed(
                ClockKind.CHRONY, clients.chrony.name, chrony
            )
        elif clients.chrony is not None and isinstance(chrony, ChronyTracking):
            chrony_reading = chrony.reading(clients.chrony.name)

        containers = self._track_containers(container_readings, now)
        workers, worker_readings = self._track_workers(now)
        # A listener that has not failed yet is still connecting: not an error.
        if (
            self.listener is not None
            and not self.listener.connected
            and (listener_error := self.listener.last_error)
        ):
            errors[SOURCE_CELERY] = listener_error

        self._log_availability(errors)
        self._ask_reauth(errors)
        configured = self._configured_sources()
        if configured and set(configured) <= set(errors):
            raise UpdateFailed(
                translation_domain=DOMAIN,
                translation_key="all_sources_failed",
                translation_placeholders={
                    "errors": "; ".join(
                        f"{source}: {error}" for source, error in errors.items()
                    )
                },
            )

        readings: list[Reading] = [*ntp]
        readings.extend(
            reading
            for reading in (redis, docker_host, chrony_reading)
            if reading is not None
        )
        readings.extend(containers.values())
        readings.extend(worker_readings)
        report = build_report(readings, self.tolerance)
        self._update_issues(report, workers)
        return ClockDriftData(
            ntp=ntp,
            ntp_offset=median_offset(ntp) if ntp else None,
            redis=redis,
            docker_host=docker_host,
            containers=containers,
            workers=workers,
            online={name: state.online(now) for name, state in workers.items()},
            chrony=chrony if isinstance(chrony, ChronyTracking) else None,
            errors=errors,
            report=report,
            taken_at=now,
        )

    def _configured_sources(self) -> list[str]:
        """Return the sources this entry reads."""
        clients = self.clients
        sources = []
        if clients.ntp_servers:
            sources.append(SOURCE_NTP)
        if clients.redis is not None:
            sources.append(SOURCE_REDIS)
        if clients.docker is not None:
            sources.append(SOURCE_DOCKER)
        if clients.chrony is not None:
            sources.append(SOURCE_CHRONY)
        if self.listener is not None:
            sources.append(SOURCE_CELERY)
        return sources

    async def _ntp(self) -> list[Reading]:
        """Query the NTP servers (failed ones give failed readings)."""
        if not self.clients.ntp_servers:
            return []
        return await query_ntp_servers(self.clients.ntp_servers)

    async def _redis(self) -> Reading | None:
        """Read the Redis server's clock, or why it could not be read."""
        self._redis_refused = False
        if (redis := self.clients.redis) is None:
            return None
        try:
            return await redis.read()
        except ProbeError as err:
            self._redis_refused = isinstance(err, ProbeAuthError)
            return Reading.failed(ClockKind.REDIS, redis.name, str(err))

    async def _docker(self) -> tuple[Reading | None, list[Reading]]:
        """Read the Docker daemon's clock and its containers'."""
        if (docker := self.clients.docker) is None:
            return None, []
        host, containers = await asyncio.gather(
            _probe(docker.read_host()), _probe(docker.read_containers())
        )
        if isinstance(host, ProbeError):
            host = Reading.failed(ClockKind.DOCKER_HOST, docker.name, str(host))
        if isinstance(containers, ProbeError):
            # The daemon is out of reach, not the containers gone: keep their devices
            # and say why they could not be read.
            containers = [
                Reading.failed(ClockKind.CONTAINER, name, str(containers))
                for name in self._container_seen
            ]
        return host, containers

    async def _chrony(self) -> ChronyTracking | str | None:
        """Return chrony's tracking report, or why it could not be read."""
        if (chrony := self.clients.chrony) is None:
            return None
        try:
            return await chrony.tracking()
        except ProbeError as err:
            return str(err)

    def _track_containers(
        self, readings: list[Reading], now: float
    ) -> dict[str, Reading]:
        """Keep containers seen recently, and remove those gone for too long."""
        current = {reading.name: reading for reading in readings}
        for name in current:
            self._container_seen[name] = now
        containers: dict[str, Reading] = {}
        for name, seen in list(self._container_seen.items()):
            if name in current:
                containers[name] = current[name]
            elif now - seen > self.stale_after:
                del self._container_seen[name]
                LOGGER.info("Container %s is gone, removing its device", name)
                self._remove_device(f"container_{name}")
            else:
                containers[name] = Reading.failed(
                    ClockKind.CONTAINER, name, "not running"
                )
        return containers

    def _track_workers(
        self, now: float
    ) -> tuple[dict[str, WorkerState], list[Reading]]:
        """Return the workers heard from recently, forgetting those gone too long."""
        if self.listener is None:
            return {}, []
        workers = dict(self.listener.workers())
        for hostname, state in list(workers.items()):
            if now - state.last_heartbeat > self.stale_after:
                LOGGER.info("Celery worker %s is gone, removing its device", hostname)
                self.listener.forget(hostname)
                del workers[hostname]
                self._remove_device(f"worker_{hostname}")
        readings = [
            reading
            for reading in self.listener.readings(now)
            if reading.name in workers
        ]
        return workers, readings

    def _remove_device(self, clock: str) -> None:
        """Remove a clock's device (and so its entities) from the registries."""
        registry = dr.async_get(self.hass)
        if device := registry.async_get_device_by_identifier(
            (DOMAIN, f"{self.site_key}_{clock}"), self.config_entry.entry_id
        ):
            registry.async_update_device(
                device.id, remove_config_entry_id=self.config_entry.entry_id
            )

    def _log_availability(self, errors: dict[str, str]) -> None:
        """Log one line when clocks go away and one when they come back."""
        if gone := [source for source in errors if source not in self._unavailable]:
            LOGGER.warning(
                "Clocks unavailable: %s",
                "; ".join(f"{source} ({errors[source]})" for source in gone),
            )
        if back := sorted(self._unavailable - errors.keys()):
            LOGGER.info("Clocks available again: %s", ", ".join(back))
        self._unavailable = set(errors)

    def _ask_reauth(self, errors: Mapping[str, str]) -> None:
        """Start a reauth flow when a source refuses our credentials, once per outage.

        Only the refusing source goes unavailable; the others keep being read.
        """
        refused: set[str] = set()
        if self._redis_refused:
            refused.add(SOURCE_REDIS)
        if (
            self.listener is not None
            and SOURCE_CELERY in errors
            and self.listener.auth_failed
        ):
            refused.add(SOURCE_CELERY)
        if refused - self._reauth_asked:
            self.config_entry.async_start_reauth(self.hass)
        # Asked until the source is read again (a refusal may hide behind an outage).
        self._reauth_asked = (self._reauth_asked | refused) & errors.keys()

    def _update_issues(self, report: Report, workers: dict[str, WorkerState]) -> None:
        """Raise or clear the repair issues this cycle calls for."""
        entry = self.config_entry
        issue_id = f"out_of_sync_{entry.entry_id}"
        if report.in_sync:
            self._out_of_sync_cycles = 0
            ir.async_delete_issue(self.hass, DOMAIN, issue_id)
        else:
            self._out_of_sync_cycles += 1
            if self._out_of_sync_cycles >= OUT_OF_SYNC_CYCLES:
                fixable = self.clients.chrony is not None
                ir.async_create_issue(
                    self.hass,
                    DOMAIN,
                    issue_id,
                    data={"entry_id": entry.entry_id},
                    is_fixable=fixable,
                    severity=ir.IssueSeverity.WARNING,
                    translation_key="out_of_sync"
                    if fixable
                    else "out_of_sync_no_chrony",
                    translation_placeholders={
                        "site": entry.title,
                        "clocks": ", ".join(
                            f"{reading.name} ({reading.offset:+.3f} s)"
                            for reading in report.out_of_tolerance
                            if reading.offset is not None
                        ),
                        "tolerance": f"{self.tolerance:g}",
                    },
                )
        local_hours = local_utcoffset_hours()
        wanted: set[str] = set()
        for hostname, state in workers.items():
            if not state.utcoffset_mismatch:
                continue
            worker_issue = f"utcoffset_mismatch_{entry.entry_id}_{hostname}"
            wanted.add(worker_issue)
            ir.async_create_issue(
                self.hass,
                DOMAIN,
                worker_issue,
                is_fixable=False,
                severity=ir.IssueSeverity.WARNING,
                translation_key="utcoffset_mismatch",
                translation_placeholders={
                    "worker": hostname,
                    "worker_utcoffset": str(state.utcoffset),
                    "local_utcoffset": str(local_hours),
                },
            )
        for stale_issue in self._utcoffset_issues - wanted:
            ir.async_delete_issue(self.hass, DOMAIN, stale_issue)
        self._utcoffset_issues = wanted

    @callback
    def async_clear_issues(self) -> None:
        """Delete every issue this entry raised (on unload)."""
        ir.async_delete_issue(
            self.hass, DOMAIN, f"out_of_sync_{self.config_entry.entry_id}"
        )
        for issue_id in self._utcoffset_issues:
            ir.async_delete_issue(self.hass, DOMAIN, issue_id)
        self._utcoffset_issues = set()


async def _probe[T](call: Awaitable[T]) -> T | ProbeError:
    """Return what a probe call returns, or the probe error it raised."""
    try:
        return await call
    except ProbeError as err:
        return err


def local_utcoffset_hours() -> int:
    """Return Home Assistant's UTC offset in Celery's convention (whole hours)."""
    offset = dt_util.now().utcoffset()
    seconds = offset.total_seconds() if offset is not None else 0.0
    return int(-seconds // 3600)

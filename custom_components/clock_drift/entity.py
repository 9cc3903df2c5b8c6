"""The base entity of Clock Drift Monitor: one device per clock."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import override

from homeassistant.core import callback
from homeassistant.helpers.device_registry import DeviceEntryType, DeviceInfo
from homeassistant.helpers.entity import Entity, EntityDescription
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.update_coordinator import CoordinatorEntity

from .const import DOMAIN
from .coordinator import (
    SOURCE_CELERY,
    ClockDriftConfigEntry,
    ClockDriftCoordinator,
    ClockDriftData,
)

CLOCK_HOST = "host"
CLOCK_DOCKER_HOST = "docker_host"
CLOCK_CHRONY = "chrony"
CLOCK_REDIS = "redis"
CLOCK_SUMMARY = "summary"
CONTAINER_PREFIX = "container_"
WORKER_PREFIX = "worker_"

_DEVICE_MODELS = {
    CLOCK_HOST: "NTP servers",
    CLOCK_DOCKER_HOST: "Docker Engine",
    CLOCK_CHRONY: "chronyd",
    CLOCK_REDIS: "Redis",
    CLOCK_SUMMARY: "Site summary",
}


def clock_available(data: ClockDriftData, clock: str, item: str) -> bool:
    """Return whether a clock was read in the snapshot (its entities' availability)."""
    if clock.startswith(CONTAINER_PREFIX):
        return (reading := data.containers.get(item)) is not None and reading.ok
    if clock.startswith(WORKER_PREFIX):
        # With the broker lost no heartbeat can arrive: the worker's state is unknown.
        return item in data.workers and SOURCE_CELERY not in data.errors
    if clock == CLOCK_HOST:
        return any(reading.ok for reading in data.ntp)
    if clock == CLOCK_CHRONY:
        return data.chrony is not None
    single = {CLOCK_DOCKER_HOST: data.docker_host, CLOCK_REDIS: data.redis}
    if clock in single:
        return (reading := single[clock]) is not None and reading.ok
    return True


class ClockDriftEntity[T: EntityDescription](CoordinatorEntity[ClockDriftCoordinator]):
    """An entity reading one clock of the coordinator's snapshot."""

    _attr_has_entity_name = True

    def __init__(
        self,
        *,
        coordinator: ClockDriftCoordinator,
        description: T,
        clock: str,
        item: str = "",
    ) -> None:
        """Attach the entity to a clock (``item``: container or worker name)."""
        super().__init__(coordinator=coordinator)
        self.entity_description = description
        self.clock = clock
        self.item = item
        site = coordinator.site_key
        self._attr_unique_id = f"{site}_{clock}_{description.key}"
        identifiers = {(DOMAIN, f"{site}_{clock}")}
        if clock.startswith(CONTAINER_PREFIX):
            self._attr_device_info = DeviceInfo(
                entry_type=DeviceEntryType.SERVICE,
                identifiers=identifiers,
                model="Docker container",
                name=item,
            )
        elif clock.startswith(WORKER_PREFIX):
            self._attr_device_info = DeviceInfo(
                entry_type=DeviceEntryType.SERVICE,
                identifiers=identifiers,
                model="Celery worker",
                name=item,
            )
        else:
            self._attr_device_info = DeviceInfo(
                entry_type=DeviceEntryType.SERVICE,
                identifiers=identifiers,
                model=_DEVICE_MODELS[clock],
                translation_key=clock,
            )

    @property
    @override
    def available(self) -> bool:
        """Return whether this entity's own clock was read this cycle."""
        return super().available and clock_available(
            self.coordinator.data, self.clock, self.item
        )


@callback
def async_add_clock_entities(
    entry: ClockDriftConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
    fixed: Iterable[Entity],
    containers: Callable[[str], Iterable[Entity]],
    workers: Callable[[str], Iterable[Entity]],
) -> None:
    """Add the fixed entities now, and the per-container/worker ones as they appear."""
    coordinator = entry.runtime_data.coordinator
    known_containers: set[str] = set()
    known_workers: set[str] = set()

    @callback
    def _add_new() -> None:
        """Add entities for containers and workers seen for the first time."""
        data: ClockDriftData = coordinator.data
        new: list[Entity] = []
        for name in data.containers.keys() - known_containers:
            new.extend(containers(name))
        for hostname in data.workers.keys() - known_workers:
            new.extend(workers(hostname))
        # Forget the ones removed as stale, so they come back if they return.
        known_containers.clear()
        known_containers.update(data.containers)
        known_workers.clear()
        known_workers.update(data.workers)
        if new:
            async_add_entities(new)

    async_add_entities(list(fixed))
    _add_new()
    entry.async_on_unload(coordinator.async_add_listener(_add_new))

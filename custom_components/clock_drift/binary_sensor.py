"""Binary sensors: In sync for the site, online and UTC offset per Celery worker."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, override

from homeassistant.components.binary_sensor import (
    BinarySensorEntity,
    BinarySensorEntityDescription,
)
from homeassistant.components.binary_sensor.const import BinarySensorDeviceClass
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import ATTR_OUT_OF_TOLERANCE, ATTR_UNREADABLE
from .coordinator import ClockDriftConfigEntry, ClockDriftData
from .entity import (
    CLOCK_SUMMARY,
    WORKER_PREFIX,
    ClockDriftEntity,
    async_add_clock_entities,
)

PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class ClockDriftBinarySensorDescription(BinarySensorEntityDescription):
    """Describes a binary sensor reading the snapshot."""

    attributes_fn: Callable[[ClockDriftData, str], dict[str, Any]] | None = None
    is_on_fn: Callable[[ClockDriftData, str], bool]


def _in_sync_attributes(data: ClockDriftData, _: str) -> dict[str, Any]:
    """Name the clocks out of tolerance and those that could not be read."""
    report = data.report
    return {
        ATTR_OUT_OF_TOLERANCE: sorted(
            reading.name for reading in report.out_of_tolerance
        ),
        ATTR_UNREADABLE: sorted(reading.name for reading in report.unreadable),
        "tolerance": report.tolerance,
    }


# No device class: PROBLEM would invert the meaning, and "on" here means in sync.
SUMMARY_BINARY_SENSORS: tuple[ClockDriftBinarySensorDescription, ...] = (
    ClockDriftBinarySensorDescription(
        key="in_sync",
        translation_key="in_sync",
        attributes_fn=_in_sync_attributes,
        is_on_fn=lambda data, _: data.report.in_sync,
    ),
)

WORKER_BINARY_SENSORS: tuple[ClockDriftBinarySensorDescription, ...] = (
    ClockDriftBinarySensorDescription(
        key="online",
        translation_key="worker_online",
        device_class=BinarySensorDeviceClass.CONNECTIVITY,
        is_on_fn=lambda data, name: data.online.get(name, False),
    ),
    ClockDriftBinarySensorDescription(
        key="utcoffset_mismatch",
        translation_key="worker_utcoffset_mismatch",
        device_class=BinarySensorDeviceClass.PROBLEM,
        entity_category=EntityCategory.DIAGNOSTIC,
        attributes_fn=lambda data, name: {"utcoffset": data.workers[name].utcoffset},
        is_on_fn=lambda data, name: data.workers[name].utcoffset_mismatch,
    ),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: ClockDriftConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up In sync, and the binary sensors of workers as they appear."""
    coordinator = entry.runtime_data.coordinator
    async_add_clock_entities(
        entry,
        async_add_entities,
        (
            ClockDriftBinarySensor(
                coordinator=coordinator, description=description, clock=CLOCK_SUMMARY
            )
            for description in SUMMARY_BINARY_SENSORS
        ),
        lambda _: (),
        lambda hostname: (
            ClockDriftBinarySensor(
                coordinator=coordinator,
                description=description,
                clock=f"{WORKER_PREFIX}{hostname}",
                item=hostname,
            )
            for description in WORKER_BINARY_SENSORS
        ),
    )


class ClockDriftBinarySensor(
    ClockDriftEntity[ClockDriftBinarySensorDescription], BinarySensorEntity
):
    """A yes/no fact about the site or one of its clocks."""

    entity_description: ClockDriftBinarySensorDescription

    @property
    @override
    def is_on(self) -> bool:
        """Return the fact from the latest snapshot."""
        return self.entity_description.is_on_fn(self.coordinator.data, self.item)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the attributes the description names."""
        if (attributes_fn := self.entity_description.attributes_fn) is None:
            return None
        return attributes_fn(self.coordinator.data, self.item)

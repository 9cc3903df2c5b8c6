"""Offset sensors: one device per clock, a summary for the site."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, override

from homeassistant.components.sensor import (
    SensorDeviceClass,
    SensorEntity,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory, UnitOfTime
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback
from homeassistant.helpers.typing import StateType
from homeassistant.util import dt as dt_util

from .const import ATTR_UNCERTAINTY
from .coordinator import ClockDriftConfigEntry, ClockDriftData
from .entity import (
    CLOCK_CHRONY,
    CLOCK_DOCKER_HOST,
    CLOCK_HOST,
    CLOCK_REDIS,
    CLOCK_SUMMARY,
    CONTAINER_PREFIX,
    WORKER_PREFIX,
    ClockDriftEntity,
    async_add_clock_entities,
)
from .probes import Reading
from .probes.chrony import LeapStatus
from .probes.ntp import NtpReading

PARALLEL_UPDATES = 0

PPM = "ppm"


@dataclass(frozen=True, kw_only=True)
class ClockDriftSensorDescription(SensorEntityDescription):
    """Describes a sensor reading one value of a clock from the snapshot."""

    attributes_fn: Callable[[ClockDriftData, str], dict[str, Any]] | None = None
    value_fn: Callable[[ClockDriftData, str], StateType | datetime]


def _offset(
    key: str, translation_key: str, **kwargs: Any
) -> ClockDriftSensorDescription:
    """Return the description of a signed offset in seconds."""
    return ClockDriftSensorDescription(
        key=key,
        translation_key=translation_key,
        device_class=SensorDeviceClass.DURATION,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=3,
        **kwargs,
    )


def _uncertainty(reading: Reading | None) -> dict[str, Any]:
    """Return a reading's uncertainty as an attribute."""
    if reading is None or reading.uncertainty is None:
        return {}
    return {ATTR_UNCERTAINTY: round(reading.uncertainty, 6)}


def _reading_offset(
    translation_key: str, reading_fn: Callable[[ClockDriftData, str], Reading | None]
) -> ClockDriftSensorDescription:
    """Return the description of one reading's offset, its uncertainty an attribute."""
    return _offset(
        "offset",
        translation_key,
        attributes_fn=lambda data, item: _uncertainty(reading_fn(data, item)),
        value_fn=lambda data, item: (
            reading.offset if (reading := reading_fn(data, item)) else None
        ),
    )


def _best_ntp(data: ClockDriftData) -> NtpReading | None:
    """Return the NTP reading closest to the median (the one taken as true time)."""
    readings = [
        reading
        for reading in data.ntp
        if isinstance(reading, NtpReading) and reading.ok
    ]
    if not readings or data.ntp_offset is None:
        return None
    median = data.ntp_offset
    return min(readings, key=lambda reading: abs((reading.offset or 0.0) - median))


def _ntp_delay(data: ClockDriftData, _: str) -> float | None:
    """Return the round trip of the NTP reading used."""
    return reading.delay if (reading := _best_ntp(data)) else None


def _ntp_stratum(data: ClockDriftData, _: str) -> int | None:
    """Return the stratum of the NTP server used."""
    return reading.stratum if (reading := _best_ntp(data)) else None


def _chrony(
    getter: Callable[[Any], StateType],
) -> Callable[[ClockDriftData, str], StateType]:
    """Return a value_fn reading one field of chrony's tracking report."""
    return lambda data, _: getter(data.chrony) if data.chrony is not None else None


HOST_SENSORS: tuple[ClockDriftSensorDescription, ...] = (
    _offset("ntp_offset", "ntp_offset", value_fn=lambda data, _: data.ntp_offset),
    ClockDriftSensorDescription(
        key="ntp_delay",
        translation_key="ntp_delay",
        device_class=SensorDeviceClass.DURATION,
        entity_category=EntityCategory.DIAGNOSTIC,
        native_unit_of_measurement=UnitOfTime.SECONDS,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=3,
        value_fn=_ntp_delay,
    ),
    ClockDriftSensorDescription(
        key="ntp_stratum",
        translation_key="ntp_stratum",
        entity_category=EntityCategory.DIAGNOSTIC,
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=_ntp_stratum,
    ),
)

DOCKER_HOST_SENSORS: tuple[ClockDriftSensorDescription, ...] = (
    _reading_offset("docker_host_offset", lambda data, _: data.docker_host),
)

CHRONY_SENSORS: tuple[ClockDriftSensorDescription, ...] = (
    _offset(
        "system_time",
        "chrony_system_time",
        value_fn=_chrony(lambda tracking: tracking.system_time),
    ),
    _offset(
        "last_offset",
        "chrony_last_offset",
        value_fn=_chrony(lambda tracking: tracking.last_offset),
    ),
    _offset(
        "rms_offset",
        "chrony_rms_offset",
        value_fn=_chrony(lambda tracking: tracking.rms_offset),
    ),
    ClockDriftSensorDescription(
        key="frequency",
        translation_key="chrony_frequency",
        native_unit_of_measurement=PPM,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=3,
        value_fn=_chrony(lambda tracking: tracking.frequency_ppm),
    ),
    ClockDriftSensorDescription(
        key="skew",
        translation_key="chrony_skew",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        native_unit_of_measurement=PPM,
        state_class=SensorStateClass.MEASUREMENT,
        suggested_display_precision=3,
        value_fn=_chrony(lambda tracking: tracking.skew_ppm),
    ),
    _offset(
        "root_delay",
        "chrony_root_delay",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=_chrony(lambda tracking: tracking.root_delay),
    ),
    _offset(
        "root_dispersion",
        "chrony_root_dispersion",
        entity_category=EntityCategory.DIAGNOSTIC,
        entity_registry_enabled_default=False,
        value_fn=_chrony(lambda tracking: tracking.root_dispersion),
    ),
    ClockDriftSensorDescription(
        key="stratum",
        translation_key="chrony_stratum",
        entity_category=EntityCategory.DIAGNOSTIC,
        state_class=SensorStateClass.MEASUREMENT,
        value_fn=_chrony(lambda tracking: tracking.stratum),
    ),
    ClockDriftSensorDescription(
        key="leap_status",
        translation_key="chrony_leap_status",
        device_class=SensorDeviceClass.ENUM,
        entity_category=EntityCategory.DIAGNOSTIC,
        options=[str(status) for status in LeapStatus],
        value_fn=_chrony(lambda tracking: str(tracking.leap_status)),
    ),
    ClockDriftSensorDescription(
        key="reference",
        translation_key="chrony_reference",
        entity_category=EntityCategory.DIAGNOSTIC,
        value_fn=_chrony(lambda tracking: tracking.ref_name or tracking.ref_id),
    ),
)

REDIS_SENSORS: tuple[ClockDriftSensorDescription, ...] = (
    _reading_offset("redis_offset", lambda data, _: data.redis),
)

CONTAINER_SENSORS: tuple[ClockDriftSensorDescription, ...] = (
    _reading_offset("container_offset", lambda data, name: data.containers.get(name)),
)

WORKER_SENSORS: tuple[ClockDriftSensorDescription, ...] = (
    _offset(
        "offset",
        "worker_offset",
        attributes_fn=lambda data, name: {
            ATTR_UNCERTAINTY: round(data.workers[name].uncertainty, 6)
        },
        value_fn=lambda data, name: data.workers[name].offset,
    ),
    ClockDriftSensorDescription(
        key="last_heartbeat",
        translation_key="worker_last_heartbeat",
        device_class=SensorDeviceClass.TIMESTAMP,
        value_fn=lambda data, name: dt_util.utc_from_timestamp(
            data.workers[name].last_heartbeat
        ),
    ),
)

SUMMARY_SENSORS: tuple[ClockDriftSensorDescription, ...] = (
    _offset(
        "largest_drift",
        "largest_drift",
        attributes_fn=lambda data, _: (
            {"clock": worst.name, "kind": str(worst.kind)}
            if (worst := data.report.worst) is not None
            else {}
        ),
        value_fn=lambda data, _: (
            worst.offset if (worst := data.report.worst) is not None else None
        ),
    ),
    _offset("spread", "spread", value_fn=lambda data, _: data.report.spread),
)


async def async_setup_entry(
    hass: HomeAssistant,
    entry: ClockDriftConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Set up the sensors of every clock, and of clocks that appear later."""
    coordinator = entry.runtime_data.coordinator
    clients = entry.runtime_data.clients
    groups: list[tuple[str, tuple[ClockDriftSensorDescription, ...]]] = [
        (CLOCK_SUMMARY, SUMMARY_SENSORS)
    ]
    if clients.ntp_servers:
        groups.append((CLOCK_HOST, HOST_SENSORS))
    if clients.docker is not None:
        groups.append((CLOCK_DOCKER_HOST, DOCKER_HOST_SENSORS))
    if clients.chrony is not None:
        groups.append((CLOCK_CHRONY, CHRONY_SENSORS))
    if clients.redis is not None:
        groups.append((CLOCK_REDIS, REDIS_SENSORS))

    async_add_clock_entities(
        entry,
        async_add_entities,
        (
            ClockDriftSensor(
                coordinator=coordinator, description=description, clock=clock
            )
            for clock, descriptions in groups
            for description in descriptions
        ),
        lambda name: (
            ClockDriftSensor(
                coordinator=coordinator,
                description=description,
                clock=f"{CONTAINER_PREFIX}{name}",
                item=name,
            )
            for description in CONTAINER_SENSORS
        ),
        lambda hostname: (
            ClockDriftSensor(
                coordinator=coordinator,
                description=description,
                clock=f"{WORKER_PREFIX}{hostname}",
                item=hostname,
            )
            for description in WORKER_SENSORS
        ),
    )


class ClockDriftSensor(ClockDriftEntity[ClockDriftSensorDescription], SensorEntity):
    """A value of one clock."""

    entity_description: ClockDriftSensorDescription

    @property
    @override
    def native_value(self) -> StateType | datetime:
        """Return the value from the latest snapshot."""
        return self.entity_description.value_fn(self.coordinator.data, self.item)

    @property
    @override
    def extra_state_attributes(self) -> dict[str, Any] | None:
        """Return the reading's uncertainty where it has one."""
        if (attributes_fn := self.entity_description.attributes_fn) is None:
            return None
        return attributes_fn(self.coordinator.data, self.item)

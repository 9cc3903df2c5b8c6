"""Tests for the sensors, on a site of real servers."""

from __future__ import annotations

from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from syrupy.assertion import SnapshotAssertion

from custom_components.clock_drift.const import DOMAIN
from tests.conftest import CONTAINER, WORKER, Site, stable

# The clocks' true offsets on the site: Redis runs under faketime +42 s.
REDIS_SKEW = 42.0


@pytest.mark.usefixtures("entity_registry_enabled_by_default")
async def test_sensors(
    hass: HomeAssistant,
    full_site: Site,
    entity_registry: er.EntityRegistry,
    device_registry: dr.DeviceRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """Test every sensor of a full site: registry entries, states, and values.

    Offsets come from real clocks and vary by microseconds between runs, so the
    snapshot holds the registry entries and each state's shape (numbers masked),
    and the values are asserted here within the uncertainty of the links.
    """
    entry = full_site.entry
    entries = sorted(
        (
            entity_entry
            for entity_entry in er.async_entries_for_config_entry(
                entity_registry, entry.entry_id
            )
            if entity_entry.domain == "sensor"
        ),
        key=lambda entity_entry: entity_entry.unique_id,
    )
    for entity_entry in entries:
        assert entity_entry == snapshot(name=f"{entity_entry.unique_id}-entry")
        state = hass.states.get(entity_entry.entity_id)
        assert state is not None
        assert stable(state) == snapshot(name=f"{entity_entry.unique_id}-state")

    devices = dr.async_entries_for_config_entry(device_registry, entry.entry_id)
    assert all(
        identifier[0] == DOMAIN
        for device in devices
        for identifier in device.identifiers
    )
    assert sorted(device.name or "" for device in devices) == [
        "Clock drift summary",
        "Docker host",
        "Home Assistant host",
        "Redis server",
        CONTAINER,
        "chrony",
        WORKER,
    ]

    def value(entity_id: str) -> float:
        """Return a sensor's number."""
        state = hass.states.get(entity_id)
        assert state is not None
        return float(state.state)

    assert abs(value("sensor.redis_server_offset") - REDIS_SKEW) < 0.05
    assert abs(value("sensor.clock_drift_summary_largest_drift") - REDIS_SKEW) < 0.05
    assert abs(value("sensor.clock_drift_summary_spread") - REDIS_SKEW) < 0.05
    for true_clock in (
        "sensor.home_assistant_host_ntp_offset",
        "sensor.busybox_1_offset",
        "sensor.docker_host_offset",
        "sensor.scan_worker_1_pi_offset",
        "sensor.chrony_system_time_offset",
    ):
        assert abs(value(true_clock)) < 0.05, true_clock
    assert 0 <= value("sensor.home_assistant_host_ntp_delay") < 0.05
    assert value("sensor.home_assistant_host_ntp_stratum") == 8
    assert value("sensor.chrony_stratum") == 9

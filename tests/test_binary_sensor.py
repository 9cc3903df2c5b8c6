"""Tests for the binary sensors: In sync, and each Celery worker's online and UTC."""

from __future__ import annotations

import asyncio

from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er
from syrupy.assertion import SnapshotAssertion

from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_STALE_AFTER,
    DOMAIN,
)
from tests.conftest import SetupEntry, Site, mask, refresh, stable, wait_for_workers
from tests.harness import StartCeleryWorker, StartRedis

IN_SYNC = "binary_sensor.clock_drift_summary_in_sync"


async def test_binary_sensors(
    hass: HomeAssistant,
    full_site: Site,
    entity_registry: er.EntityRegistry,
    snapshot: SnapshotAssertion,
) -> None:
    """Test the binary sensors of a full site whose Redis is 42 s ahead.

    The registry entries and the states are stable (on/off and the names of the
    clocks, with the servers' random ports masked), so they are snapshot whole.
    """
    entries = sorted(
        (
            entity_entry
            for entity_entry in er.async_entries_for_config_entry(
                entity_registry, full_site.entry.entry_id
            )
            if entity_entry.domain == "binary_sensor"
        ),
        key=lambda entity_entry: entity_entry.unique_id,
    )
    assert [entity_entry.unique_id for entity_entry in entries] == [
        "site_summary_in_sync",
        "site_worker_scan-worker-1@pi_online",
        "site_worker_scan-worker-1@pi_utcoffset_mismatch",
    ]
    for entity_entry in entries:
        assert entity_entry == snapshot(name=f"{entity_entry.unique_id}-entry")
        state = hass.states.get(entity_entry.entity_id)
        assert state is not None
        assert stable(state) == snapshot(name=f"{entity_entry.unique_id}-state")

    state = hass.states.get(IN_SYNC)
    assert state is not None
    assert state.state == STATE_OFF
    assert mask(state.attributes["out_of_tolerance"]) == ["127.0.0.1:<port>/0"]
    assert state.attributes["unreadable"] == []


async def test_skewed_worker_in_sync_off_then_on_when_gone(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    start_redis: StartRedis,
    start_celery_worker: StartCeleryWorker,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Test a real worker at +42 s: In sync off, back on once it is gone (stale)."""
    broker = start_redis()
    entry = await setup_entry(
        {CONF_CELERY_BROKER_URL: broker.url}, options={CONF_STALE_AFTER: 5}
    )
    assert hass.states.get(IN_SYNC).state == STATE_ON  # type: ignore[union-attr]

    worker = start_celery_worker(broker.url, skew=42, hostname="scan-worker-1@pi")
    await wait_for_workers(hass, entry, "scan-worker-1@pi")
    state = hass.states.get(IN_SYNC)
    assert state is not None
    assert state.state == STATE_OFF
    assert state.attributes["out_of_tolerance"] == ["scan-worker-1@pi"]
    offset = hass.states.get("sensor.scan_worker_1_pi_offset")
    assert offset is not None
    assert abs(float(offset.state) - 42) < 0.1
    online = hass.states.get("binary_sensor.scan_worker_1_pi_online")
    assert online is not None
    assert online.state == STATE_ON
    device_id = (DOMAIN, "site_worker_scan-worker-1@pi")
    assert (
        device_registry.async_get_device_by_identifier(device_id, entry.entry_id)
        is not None
    )

    worker.stop()
    async with asyncio.timeout(20):
        while (
            online := hass.states.get("binary_sensor.scan_worker_1_pi_online")
        ) is not None and online.state == STATE_ON:
            await asyncio.sleep(0.5)
            await refresh(hass, entry)
    async with asyncio.timeout(20):
        while (
            device_registry.async_get_device_by_identifier(device_id, entry.entry_id)
            is not None
        ):
            await asyncio.sleep(0.5)
            await refresh(hass, entry)
    state = hass.states.get(IN_SYNC)
    assert state is not None
    assert state.state == STATE_ON
    assert state.attributes["out_of_tolerance"] == []
    assert hass.states.get("sensor.scan_worker_1_pi_offset") is None
    assert entry.runtime_data.listener is not None
    assert "scan-worker-1@pi" not in entry.runtime_data.listener.workers()

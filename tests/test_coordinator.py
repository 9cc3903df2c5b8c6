"""Tests for the coordinator: failing clocks, recovery, and clocks coming and going."""

from __future__ import annotations

import asyncio
import socket

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
import pytest

from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_CHRONY_SOCKET,
    CONF_DOCKER_URL,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    CONF_STALE_AFTER,
    DOMAIN,
)
from tests.conftest import SetupEntry, refresh
from tests.harness import BUSYBOX_IMAGE, Containers, NtpServer, StartRedis
from tests.harness.servers import free_port

IN_SYNC = "binary_sensor.clock_drift_summary_in_sync"
REDIS_OFFSET = "sensor.redis_server_offset"
NTP_OFFSET = "sensor.home_assistant_host_ntp_offset"


def _state(hass: HomeAssistant, entity_id: str) -> str:
    """Return an entity's state."""
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


async def test_failing_clock_only_its_entities(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    start_redis: StartRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test Redis going away and back: only its entities, one log line each way."""
    redis = start_redis(password="do-not-log-me")
    entry = await setup_entry(
        {CONF_NTP_SERVERS: ntp_server.address, CONF_REDIS_URL: redis.url}
    )
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE

    redis.stop()
    await refresh(hass, entry)
    await refresh(hass, entry)
    assert _state(hass, REDIS_OFFSET) == STATE_UNAVAILABLE
    assert _state(hass, NTP_OFFSET) != STATE_UNAVAILABLE
    in_sync = hass.states.get(IN_SYNC)
    assert in_sync is not None
    assert in_sync.state == "on"
    assert in_sync.attributes["unreadable"] == [f"127.0.0.1:{redis.port}/0"]
    assert caplog.text.count("Clocks unavailable: redis (") == 1

    redis.start()
    await refresh(hass, entry)
    await refresh(hass, entry)
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE
    assert caplog.text.count("Clocks available again: redis") == 1
    assert "do-not-log-me" not in caplog.text


async def test_every_clock_failing(
    hass: HomeAssistant, setup_entry: SetupEntry, start_redis: StartRedis
) -> None:
    """Test that the update fails (translated) only when every clock failed."""
    redis = start_redis()
    entry = await setup_entry({CONF_REDIS_URL: redis.url})
    coordinator = entry.runtime_data.coordinator

    redis.stop()
    await refresh(hass, entry)
    assert not coordinator.last_update_success
    assert str(coordinator.last_exception).startswith(
        "No clock of the site could be read: redis: "
    )
    assert _state(hass, IN_SYNC) == STATE_UNAVAILABLE

    redis.start()
    await refresh(hass, entry)
    assert coordinator.last_update_success
    assert _state(hass, IN_SYNC) == "on"


async def test_setup_retries_when_nothing_answers(
    hass: HomeAssistant, setup_entry: SetupEntry, real_sockets: None
) -> None:
    """Test that an entry none of whose clocks answer is retried later."""
    entry = await setup_entry({CONF_REDIS_URL: f"redis://127.0.0.1:{free_port()}/0"})
    assert entry.state is ConfigEntryState.SETUP_RETRY


async def test_unreachable_docker_and_chrony(
    hass: HomeAssistant, setup_entry: SetupEntry, ntp_server: NtpServer
) -> None:
    """Test a missing Docker socket and chrony socket: their entities unavailable."""
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: ntp_server.address,
            CONF_DOCKER_URL: "unix:///nonexistent/docker.sock",
            CONF_CHRONY_SOCKET: "/nonexistent/chronyd.sock",
        }
    )
    assert entry.state is ConfigEntryState.LOADED
    data = entry.runtime_data.coordinator.data
    assert set(data.errors) == {"docker", "chrony"}
    assert _state(hass, "sensor.docker_host_offset") == STATE_UNAVAILABLE
    assert _state(hass, "sensor.chrony_system_time_offset") == STATE_UNAVAILABLE
    assert _state(hass, NTP_OFFSET) != STATE_UNAVAILABLE
    assert sorted(_unreadable(hass)) == [
        "/nonexistent/chronyd.sock",
        "unix:///nonexistent/docker.sock",
    ]


def _unreadable(hass: HomeAssistant) -> list[str]:
    """Return the clocks In sync names as unreadable."""
    state = hass.states.get(IN_SYNC)
    assert state is not None
    return list(state.attributes["unreadable"])


async def test_containers_appear_and_go_stale(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    docker: Containers,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Test a new container getting a device without reload, and a stale one removed."""
    first = docker.run_container(BUSYBOX_IMAGE, name="first-1")
    entry = await setup_entry(
        {CONF_DOCKER_URL: docker.url}, options={CONF_STALE_AFTER: 3}
    )
    assert _state(hass, "sensor.first_1_offset") != STATE_UNAVAILABLE
    assert hass.states.get("sensor.second_2_offset") is None

    docker.run_container(BUSYBOX_IMAGE, name="second-2")
    await refresh(hass, entry)
    assert abs(float(_state(hass, "sensor.second_2_offset"))) < 0.05
    device = (DOMAIN, "site_container_second-2")
    assert device_registry.async_get_device_by_identifier(device, entry.entry_id)

    docker.stop_container("second-2")
    await refresh(hass, entry)
    assert _state(hass, "sensor.second_2_offset") == STATE_UNAVAILABLE
    assert device_registry.async_get_device_by_identifier(device, entry.entry_id)

    await asyncio.sleep(3.1)
    await refresh(hass, entry)
    assert (
        device_registry.async_get_device_by_identifier(device, entry.entry_id) is None
    )
    assert hass.states.get("sensor.second_2_offset") is None
    assert _state(hass, f"sensor.{first.replace('-', '_')}_offset") != STATE_UNAVAILABLE

    # Back after removal: a new device, no reload, no duplicate unique id.
    docker.cli("start", "second-2")
    await refresh(hass, entry)
    assert device_registry.async_get_device_by_identifier(device, entry.entry_id)
    assert _state(hass, "sensor.second_2_offset") != STATE_UNAVAILABLE


async def test_unreachable_ntp_and_broker(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    start_redis: StartRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test NTP servers that do not answer and a broker that stops answering."""
    redis = start_redis()
    broker = start_redis(password="broker-pw-never-logged")
    closed = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: closed,
            CONF_REDIS_URL: redis.url,
            CONF_CELERY_BROKER_URL: broker.url,
        }
    )
    listener = entry.runtime_data.listener
    assert listener is not None
    assert _state(hass, NTP_OFFSET) == STATE_UNAVAILABLE
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE
    assert entry.runtime_data.coordinator.data.errors.keys() == {"ntp"}

    broker.stop()
    async with asyncio.timeout(15):
        while listener.last_error is None:
            await asyncio.sleep(0.1)
    await refresh(hass, entry)
    assert entry.runtime_data.coordinator.data.errors.keys() == {"ntp", "celery"}
    assert caplog.text.count("Clocks unavailable: celery (") == 1
    assert "broker-pw-never-logged" not in caplog.text

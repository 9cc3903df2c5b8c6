"""Tests for setting up and unloading the integration against real servers."""

from __future__ import annotations

import asyncio

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from redis import Redis

from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_CONTAINERS,
    CONF_DOCKER_URL,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
)
from tests.conftest import SetupEntry
from tests.harness import BUSYBOX_IMAGE, Containers, NtpServer, StartRedis


async def test_setup_and_unload(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    start_redis: StartRedis,
) -> None:
    """Test that an entry loads its clocks and unload leaves no task or connection."""
    redis = start_redis()
    broker = start_redis()
    tasks_before = asyncio.all_tasks()
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: ntp_server.address,
            CONF_REDIS_URL: redis.url,
            CONF_CELERY_BROKER_URL: broker.url,
        }
    )
    assert entry.state is ConfigEntryState.LOADED
    runtime = entry.runtime_data
    data = runtime.coordinator.data
    assert data.redis is not None
    assert data.redis.ok
    assert data.ntp_offset is not None
    assert abs(data.ntp_offset) < 0.05
    assert runtime.listener is not None

    async with asyncio.timeout(10):
        while not runtime.listener.connected:
            await asyncio.sleep(0.05)
    for server in (redis, broker):
        with Redis.from_url(server.url) as client:
            assert len(client.client_list()) > 1

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.NOT_LOADED
    assert not runtime.listener.connected
    leftover = [
        task
        for task in asyncio.all_tasks() - tasks_before
        if not task.done() and task is not asyncio.current_task()
    ]
    assert not leftover
    # Every connection the entry opened is closed: only our own is left.
    for server in (redis, broker):
        with Redis.from_url(server.url) as client:
            assert len(client.client_list()) == 1


async def test_unload_closes_exec_streams(
    hass: HomeAssistant, setup_entry: SetupEntry, docker: Containers
) -> None:
    """Test that the exec streams reading a container's clock end with the entry."""
    name = docker.run_container(BUSYBOX_IMAGE)

    def processes() -> int:
        """Return how many processes run in the container (header line excluded)."""
        return len(docker.cli("top", name).strip().splitlines()) - 1

    assert processes() == 1
    entry = await setup_entry({CONF_DOCKER_URL: docker.url, CONF_CONTAINERS: name})
    assert entry.runtime_data.coordinator.data.containers[name].ok
    assert processes() > 1

    assert await hass.config_entries.async_unload(entry.entry_id)
    async with asyncio.timeout(10):
        while processes() > 1:
            await asyncio.sleep(0.1)

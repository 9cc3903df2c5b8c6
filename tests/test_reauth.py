"""Tests for reauthentication: a real Redis changes its password under an entry."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from unittest.mock import patch

from homeassistant.config_entries import SOURCE_REAUTH, ConfigEntryState
from homeassistant.const import STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
import pytest
import redis.asyncio as aioredis

from custom_components.clock_drift import config_flow
from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    DOMAIN,
)
from tests.conftest import SetupEntry, refresh
from tests.harness import NtpServer, RedisServer, StartRedis

REDIS_OFFSET = "sensor.redis_server_offset"
NTP_OFFSET = "sensor.home_assistant_host_ntp_offset"
OLD = "old-staple-password"
NEW = "new-staple-password"


def _state(hass: HomeAssistant, entity_id: str) -> str:
    """Return an entity's state."""
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


async def rotate_password(server: RedisServer, password: str) -> None:
    """Change a real Redis's password and drop its clients, as an admin would."""
    admin = aioredis.Redis.from_url(server.url)
    try:
        await admin.config_set("requirepass", password)
        # Connections opened before keep their login: drop them (not ours).
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await admin.aclose()
    server.password = password


def _reauth_flows(hass: HomeAssistant) -> list[Any]:
    """Return the reauth flows in progress for the integration."""
    return [
        flow
        for flow in hass.config_entries.flow.async_progress_by_handler(DOMAIN)
        if flow["context"]["source"] == SOURCE_REAUTH
    ]


async def _open_form(hass: HomeAssistant, entry_id: str) -> Any:
    """Return the form of the one reauth flow in progress for the entry."""
    flows = _reauth_flows(hass)
    assert len(flows) == 1
    assert flows[0]["context"]["entry_id"] == entry_id
    assert flows[0]["step_id"] == "reauth_confirm"
    result = await hass.config_entries.flow.async_configure(flows[0]["flow_id"])
    assert result["type"] is FlowResultType.FORM
    return result


def _fields(result: Any) -> list[str]:
    """Return the field names of a form."""
    return [str(key) for key in result["data_schema"].schema]


async def test_redis_password_rotated(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    start_redis: StartRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test a rotated Redis password: one reauth flow, its errors, then recovery."""
    caplog.set_level(logging.DEBUG, logger="custom_components.clock_drift")
    redis = start_redis(password=OLD)
    other = start_redis(password=NEW)
    entry = await setup_entry(
        {CONF_NTP_SERVERS: ntp_server.address, CONF_REDIS_URL: redis.url}
    )
    coordinator = entry.runtime_data.coordinator
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE
    assert not _reauth_flows(hass)

    await rotate_password(redis, NEW)
    with patch.object(
        entry, "async_start_reauth", wraps=entry.async_start_reauth
    ) as start_reauth:
        for _ in range(3):
            await refresh(hass, entry)
    assert start_reauth.call_count == 1
    assert coordinator.last_update_success
    assert _state(hass, REDIS_OFFSET) == STATE_UNAVAILABLE
    assert _state(hass, NTP_OFFSET) != STATE_UNAVAILABLE

    result = await _open_form(hass, entry.entry_id)
    assert _fields(result) == [CONF_REDIS_URL]
    assert result["description_placeholders"]["servers"] == f"127.0.0.1:{redis.port}/0"
    assert OLD not in str(result)
    for url, error in (
        (f"redis://:wrong-password@127.0.0.1:{redis.port}/0", "invalid_auth"),
        (f"http://127.0.0.1:{redis.port}/0", "invalid_url"),
        (other.url, "different_server"),
    ):
        result = await hass.config_entries.flow.async_configure(
            result["flow_id"], {CONF_REDIS_URL: url}
        )
        assert result["type"] is FlowResultType.FORM
        assert result["errors"] == {CONF_REDIS_URL: error}

    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_REDIS_URL: f" {redis.url} "}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.data[CONF_REDIS_URL] == redis.url
    assert entry.data[CONF_NTP_SERVERS] == ntp_server.address
    assert entry.unique_id == "site"
    assert entry.runtime_data.coordinator is not coordinator
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE
    assert not _reauth_flows(hass)
    assert OLD not in caplog.text
    assert NEW not in caplog.text


async def test_broker_password_rotated(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    start_redis: StartRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test a rotated broker password: only Celery fails; reauth keeps the Redis URL."""
    caplog.set_level(logging.DEBUG, logger="custom_components.clock_drift")
    redis = start_redis(password="redis-keeps-its-password")
    broker = start_redis(password=OLD)
    entry = await setup_entry(
        {CONF_REDIS_URL: redis.url, CONF_CELERY_BROKER_URL: broker.url}
    )
    listener = entry.runtime_data.listener
    assert listener is not None
    async with asyncio.timeout(15):
        while not listener.connected:
            await asyncio.sleep(0.05)

    await rotate_password(broker, NEW)
    async with asyncio.timeout(15):
        while not listener.auth_failed:
            await asyncio.sleep(0.05)
    await refresh(hass, entry)
    await refresh(hass, entry)
    assert entry.runtime_data.coordinator.data.errors.keys() == {"celery"}
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE

    result = await _open_form(hass, entry.entry_id)
    assert _fields(result) == [CONF_REDIS_URL, CONF_CELERY_BROKER_URL]
    assert result["description_placeholders"]["servers"] == (
        f"127.0.0.1:{redis.port}/0, 127.0.0.1:{broker.port}/0"
    )
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_REDIS_URL: "", CONF_CELERY_BROKER_URL: broker.url}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert entry.data[CONF_CELERY_BROKER_URL] == broker.url
    assert entry.data[CONF_REDIS_URL] == redis.url
    reloaded = entry.runtime_data.listener
    assert reloaded is not None
    assert reloaded is not listener
    async with asyncio.timeout(15):
        while not reloaded.connected:
            await asyncio.sleep(0.05)
    await refresh(hass, entry)
    assert not entry.runtime_data.coordinator.data.errors
    assert not reloaded.auth_failed
    assert OLD not in caplog.text
    assert NEW not in caplog.text


async def test_password_changed_while_stopped(
    hass: HomeAssistant, setup_entry: SetupEntry, start_redis: StartRedis
) -> None:
    """Test an entry whose only server refuses the saved password at start-up."""
    redis = start_redis(password=NEW)
    stale = redis.url.replace(NEW, OLD)
    entry = await setup_entry({CONF_REDIS_URL: stale, CONF_CELERY_BROKER_URL: ""})
    assert entry.state is ConfigEntryState.SETUP_RETRY

    result = await _open_form(hass, entry.entry_id)
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_REDIS_URL: ""}
    )
    assert result["errors"] == {CONF_REDIS_URL: "invalid_auth"}
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_REDIS_URL: redis.url}
    )
    assert result["reason"] == "reauth_successful"
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.coordinator.data.redis is not None
    assert entry.runtime_data.coordinator.data.redis.ok


@pytest.mark.parametrize(
    ("url", "server"),
    [
        ("redis://:pw@Redis.local/3", "redis.local:6379/3"),
        ("rediss://u:pw@127.0.0.1:6380?db=2", "127.0.0.1:6380/2"),
        ("http://127.0.0.1:6379/0", ""),
    ],
)
def test_server_names_no_credentials(url: str, server: str) -> None:
    """Test the server a reauth URL names: credentials left out, '' when not Redis."""
    assert config_flow._server(url) == server

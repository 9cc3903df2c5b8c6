"""Hostile input through a loaded entry: the Celery channel and the config flow."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path
import random
import re
import time
from typing import Any

from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import device_registry as dr, entity_registry as er
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import redis
import redis.asyncio as aioredis

from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_CHRONY_SOCKET,
    CONF_DOCKER_URL,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    CONNECTION_FIELDS,
    DOMAIN,
)
from custom_components.clock_drift.probes.celery import HeartbeatListener
from tests.conftest import SetupEntry, refresh
from tests.harness import NtpServer, RedisServer

CHANNEL = "/0.celeryev/worker.heartbeat"
_UNSAFE_IN_NAMES = re.compile(r"[\x00-\x1f\x7f<>&\"'`]")


def _envelope(body: dict[str, Any]) -> bytes:
    """Return a kombu JSON envelope around an event body, as Celery publishes it."""
    return json.dumps(
        {
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"hostname": body.get("hostname")},
            "properties": {"body_encoding": "base64", "delivery_mode": 1},
        }
    ).encode()


def _heartbeat(hostname: Any, timestamp: Any, **extra: Any) -> dict[str, Any]:
    """Return a worker-heartbeat body like Celery 5.7 sends."""
    return {
        "hostname": hostname,
        "utcoffset": 0,
        "pid": 4242,
        "clock": 12,
        "freq": 2.0,
        "active": 0,
        "processed": 3,
        "loadavg": [0.1, 0.2, 0.3],
        "sw_ident": "py-celery",
        "sw_ver": "5.7.0",
        "sw_sys": "Linux",
        "timestamp": timestamp,
        "type": "worker-heartbeat",
        **extra,
    }


async def _until(check: Any, timeout: float = 10.0) -> None:
    """Wait until ``check()`` is true."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def _listening_entry(
    setup_entry: SetupEntry, broker: RedisServer
) -> tuple[MockConfigEntry, HeartbeatListener]:
    """Set up an entry on ``broker`` and return it once its listener is subscribed."""
    entry = await setup_entry({CONF_CELERY_BROKER_URL: broker.url})
    listener = entry.runtime_data.listener
    assert listener is not None
    await _until(lambda: listener.connected)
    return entry, listener


async def test_garbage_and_hostile_hostnames_through_an_entry(  # noqa: PLR0917
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    redis_server: RedisServer,
    device_registry: dr.DeviceRegistry,
    entity_registry: er.EntityRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test garbage on the real broker ignored, and hostile hostnames made harmless."""
    entry, listener = await _listening_entry(setup_entry, redis_server)
    now = time.time()
    rng = random.Random(77)
    garbage = [
        rng.randbytes(200),
        b"{not json",
        json.dumps(
            {"body": "%%%not base64", "properties": {"body_encoding": "base64"}}
        ).encode(),
        _envelope(_heartbeat(42, now)),
        _envelope({"type": "worker-heartbeat"}),
        _envelope(_heartbeat("nan@h", float("nan"))),
        _envelope(_heartbeat("inf@h", float("inf"))),
        _envelope(_heartbeat("huge@h", 1e300)),
        _envelope(_heartbeat("big@h", now, padding="x" * (1 << 20))),
    ]
    hostile = [
        "<img src=x onerror=alert(1)>@evil",
        "line\nbreak\x1b[31m\x00@evil",
        "quote\"'`&amp;@evil",
        "x" * 5000,
    ]
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        with caplog.at_level(logging.DEBUG):
            for message in garbage:
                await client.publish(CHANNEL, message)
            for hostname in hostile:
                await client.publish(
                    CHANNEL, _envelope(_heartbeat(hostname, time.time()))
                )
            await _until(lambda: len(listener.workers()) == len(hostile))
    finally:
        await client.aclose()
    await refresh(hass, entry)

    assert listener.connected
    assert not any(
        name in listener.workers() for name in ("nan@h", "inf@h", "huge@h", "big@h")
    )
    devices = [
        device
        for device in dr.async_entries_for_config_entry(device_registry, entry.entry_id)
        if device.model == "Celery worker"
    ]
    assert len(devices) == len(hostile)
    for device in devices:
        assert device.name is not None
        assert not _UNSAFE_IN_NAMES.search(device.name), device.name
        assert len(device.name) <= 255
    entities = er.async_entries_for_config_entry(entity_registry, entry.entry_id)
    worker_states = [
        hass.states.get(entity.entity_id)
        for entity in entities
        if "_worker_" in (entity.unique_id or "")
    ]
    assert len(worker_states) == 4 * len(hostile)
    for state in worker_states:
        assert state is not None
        assert re.fullmatch(r"[a-z0-9_]+\.[a-z0-9_]+", state.entity_id)
        name = state.attributes["friendly_name"]
        assert not _UNSAFE_IN_NAMES.search(name), name
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "malformed" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "Error" not in caplog.text.replace("ConnectionError", "")


async def test_flood_of_hostnames_is_capped(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test 100 000 fake hostnames: 1000 tracked, one warning, Home Assistant fine."""
    entry, listener = await _listening_entry(setup_entry, redis_server)
    began = time.monotonic()
    await asyncio.to_thread(_flood, redis_server, 100_000)
    # Messages arrive in order: once the marker is in, the flood was read.
    await _until(lambda: listener.workers()["first@h"].offset > 500, timeout=60)
    flood_seconds = time.monotonic() - began
    assert listener.connected
    assert len(listener.workers()) == 1000
    assert caplog.text.count("ignoring new ones") == 1
    began = time.monotonic()
    await refresh(hass, entry)
    refresh_seconds = time.monotonic() - began
    assert entry.runtime_data.coordinator.last_update_success
    assert len(entry.runtime_data.coordinator.data.workers) == 1000
    assert flood_seconds < 45, flood_seconds
    assert refresh_seconds < 10, refresh_seconds


def _flood(server: RedisServer, count: int) -> None:
    """Publish a known worker, ``count`` fake ones, then the known one 1000 s ahead."""
    client = redis.Redis(port=server.port)
    try:
        client.publish(CHANNEL, _envelope(_heartbeat("first@h", time.time())))
        for start in range(0, count, 10_000):
            pipe = client.pipeline(transaction=False)
            for index in range(start, min(start + 10_000, count)):
                pipe.publish(CHANNEL, _envelope(_heartbeat(f"fake-{index}@h", 1e9)))
            pipe.execute()
            # Let the listener catch up: Redis drops a pub/sub client 32 MB behind.
            while any(
                int(client_info["omem"]) > 1 << 20
                for client_info in client.client_list()
                # The subscriber by its patterns: its last command may be a PING.
                if int(client_info["psub"]) > 0
            ):
                time.sleep(0.05)
        client.publish(CHANNEL, _envelope(_heartbeat("first@h", time.time() + 1000)))
    finally:
        client.close()


def _fields(**values: str) -> dict[str, str]:
    """Return every connection field, empty unless given."""
    return {key: values.get(key, "") for key in CONNECTION_FIELDS}


async def _submit(hass: HomeAssistant, user_input: dict[str, str]) -> Any:
    """Start a user flow and submit the form once."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    return await hass.config_entries.flow.async_configure(result["flow_id"], user_input)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        (CONF_REDIS_URL, "redis://[::1", "invalid_url"),
        (CONF_REDIS_URL, "not a url at all", "invalid_url"),
        (CONF_REDIS_URL, "redis://127.0.0.1:99999/0", "invalid_url"),
        (CONF_REDIS_URL, "gopher://127.0.0.1/0", "invalid_url"),
        (CONF_REDIS_URL, "redis://no-such-host.invalid:6379/0", "cannot_connect"),
        (CONF_CELERY_BROKER_URL, "amqp://guest:guest@127.0.0.1//", "invalid_url"),
        (CONF_CELERY_BROKER_URL, "redis://[::1", "invalid_url"),
        (CONF_CELERY_BROKER_URL, "redis://no-such-host.invalid/0", "cannot_connect"),
        (CONF_DOCKER_URL, "ssh://user@127.0.0.1", "invalid_url"),
        (CONF_DOCKER_URL, "unix://", "invalid_url"),
        (CONF_DOCKER_URL, "tcp://127.0.0.1:notaport", "invalid_url"),
        (CONF_DOCKER_URL, "tcp://no-such-host.invalid:2375", "cannot_connect"),
        (CONF_NTP_SERVERS, "127.0.0.1:notaport", "cannot_connect"),
    ],
)
async def test_malformed_and_unreachable(
    hass: HomeAssistant,
    ntp_server: NtpServer,
    field: str,
    value: str,
    error: str,
) -> None:
    """Test malformed URLs, unknown schemes and unresolvable hosts: a field error."""
    fields = _fields(**{CONF_NTP_SERVERS: ntp_server.address})
    fields[field] = value
    result = await _submit(hass, fields)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: error}


@pytest.mark.parametrize("field", [CONF_CHRONY_SOCKET, CONF_DOCKER_URL])
async def test_regular_file_where_a_socket_is_expected(
    hass: HomeAssistant, ntp_server: NtpServer, tmp_path: Path, field: str
) -> None:
    """Test a plain file given as chrony's or Docker's socket: cannot connect."""
    plain = tmp_path / "not-a-socket"
    plain.write_text("hello\n")
    value = f"unix://{plain}" if field == CONF_DOCKER_URL else str(plain)
    result = await _submit(
        hass, _fields(**{CONF_NTP_SERVERS: ntp_server.address, field: value})
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: "cannot_connect"}
    assert plain.read_text() == "hello\n"

"""Tests for the config, reconfigure and options flows, against real servers."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.clock_drift import config_flow
from custom_components.clock_drift.const import (
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
    CONNECTION_FIELDS,
    DEFAULT_DOCKER_URL,
    DEFAULT_NTP_SERVERS,
    DOMAIN,
)
from tests.conftest import make_entry
from tests.harness import (
    BUSYBOX_IMAGE,
    TIMESYNC_IMAGE,
    ChronyCommandServer,
    Containers,
    NtpServer,
    RedisServer,
    StartRedis,
)
from tests.harness.servers import free_port

PASSWORD = "correct-horse-battery"


def _fields(**values: str) -> dict[str, str]:
    """Return every connection field, empty unless given (defaults cleared)."""
    return {key: values.get(key, "") for key in CONNECTION_FIELDS}


async def _submit(hass: HomeAssistant, user_input: dict[str, str]) -> Any:
    """Start a user flow and submit the form once."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    return await hass.config_entries.flow.async_configure(result["flow_id"], user_input)


async def _finish(hass: HomeAssistant, result: Any, user_input: dict[str, str]) -> Any:
    """Submit the fixed form, check the entry is created, and unload it."""
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], user_input
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY, result.get("errors")
    entry = result["result"]
    await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(entry.entry_id)
    return result


async def test_form_suggests_defaults(hass: HomeAssistant) -> None:
    """Test that the form suggests pool.ntp.org and the local Docker socket."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    suggested = {
        str(key): key.description["suggested_value"]
        for key in result["data_schema"].schema
        if key.description
    }
    assert suggested == {
        CONF_NTP_SERVERS: DEFAULT_NTP_SERVERS,
        CONF_DOCKER_URL: DEFAULT_DOCKER_URL,
    }


async def test_user_flow_every_clock(
    hass: HomeAssistant,
    ntp_server: NtpServer,
    start_redis: StartRedis,
    docker: Containers,
    chrony_command_server: ChronyCommandServer,
) -> None:
    """Test an entry with every kind of clock, tested live, then saved."""
    redis = start_redis(password=PASSWORD)
    container = docker.run_container(BUSYBOX_IMAGE)
    user_input = _fields(
        ntp_servers=f" {ntp_server.address} ",
        redis_url=redis.url,
        celery_broker_url=redis.url,
        docker_url=docker.url,
        containers=container,
        chrony_socket=chrony_command_server.socket_path,
    )
    result = await _submit(hass, user_input)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result.get("errors")
    assert result["data"] == {**user_input, CONF_NTP_SERVERS: ntp_server.address}
    assert result["options"] == {
        CONF_SCAN_INTERVAL: 30,
        CONF_TOLERANCE: 30.0,
        CONF_STALE_AFTER: 600,
    }
    entry = result["result"]
    assert entry.unique_id == f"docker:{docker.url}"
    assert entry.title == "Clock drift on this host"
    await hass.async_block_till_done()
    assert await hass.config_entries.async_unload(entry.entry_id)


@pytest.mark.parametrize("field", [CONF_REDIS_URL, CONF_CELERY_BROKER_URL])
@pytest.mark.parametrize(
    ("failure", "error"),
    [
        ("wrong_password", "invalid_auth"),
        ("no_password", "invalid_auth"),
        ("closed_port", "cannot_connect"),
        ("not_redis", "invalid_url"),
        ("bad_port", "invalid_url"),
    ],
)
async def test_user_flow_redis_errors(
    hass: HomeAssistant,
    start_redis: StartRedis,
    field: str,
    failure: str,
    error: str,
) -> None:
    """Test each Redis failure on a password-protected Redis, then the fix."""
    redis = start_redis(password=PASSWORD)
    bad = {
        "wrong_password": f"redis://:wrong@127.0.0.1:{redis.port}/0",
        "no_password": f"redis://127.0.0.1:{redis.port}/0",
        "closed_port": f"redis://127.0.0.1:{free_port()}/0",
        "not_redis": f"http://127.0.0.1:{redis.port}/0",
        "bad_port": "redis://127.0.0.1:port/0",
    }[failure]
    result = await _submit(hass, _fields(**{field: bad}))
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {field: error}
    result = await _finish(hass, result, _fields(**{field: redis.url}))
    assert result["result"].unique_id == f"redis:127.0.0.1:{redis.port}/0"
    assert result["title"] == "Clock drift on 127.0.0.1"


async def test_user_flow_ntp_error(hass: HomeAssistant, ntp_server: NtpServer) -> None:
    """Test an NTP server that does not answer (a closed UDP port), then the fix."""
    closed = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    result = await _submit(hass, _fields(ntp_servers=closed))
    assert result["errors"] == {CONF_NTP_SERVERS: "cannot_connect"}
    await _finish(hass, result, _fields(ntp_servers=f"{closed}, {ntp_server.address}"))


@pytest.mark.parametrize(
    ("failure", "errors"),
    [
        ("missing_socket", {CONF_DOCKER_URL: "cannot_connect"}),
        ("not_docker", {CONF_DOCKER_URL: "invalid_url"}),
        ("missing_container", {CONF_CONTAINERS: "container_not_found"}),
        ("missing_chrony_container", {CONF_CHRONY_CONTAINER: "container_not_found"}),
        ("no_chronyc", {CONF_CHRONY_CONTAINER: "chronyc_failed"}),
        (
            "no_docker",
            {
                CONF_CONTAINERS: "docker_required",
                CONF_CHRONY_CONTAINER: "docker_required",
            },
        ),
    ],
)
async def test_user_flow_docker_errors(
    hass: HomeAssistant,
    docker: Containers,
    failure: str,
    errors: dict[str, str],
) -> None:
    """Test each Docker failure against the real daemon, then the fix."""
    busybox = docker.run_container(BUSYBOX_IMAGE)
    timesync = docker.run_container(TIMESYNC_IMAGE)
    good = _fields(docker_url=docker.url, containers=busybox, chrony_container=timesync)
    bad = dict(good)
    match failure:
        case "missing_socket":
            bad[CONF_DOCKER_URL] = "unix:///nonexistent/docker.sock"
        case "not_docker":
            bad[CONF_DOCKER_URL] = "ftp://127.0.0.1/"
        case "missing_container":
            bad[CONF_CONTAINERS] = f"{busybox}, no-such-container"
        case "missing_chrony_container":
            bad[CONF_CHRONY_CONTAINER] = "no-such-container"
        case "no_chronyc":
            bad[CONF_CHRONY_CONTAINER] = busybox
        case "no_docker":
            bad[CONF_DOCKER_URL] = ""
            bad[CONF_NTP_SERVERS] = "127.0.0.1:1"
    result = await _submit(hass, bad)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {
        **errors,
        **({CONF_NTP_SERVERS: "cannot_connect"} if failure == "no_docker" else {}),
    }
    await _finish(hass, result, good)


@pytest.mark.parametrize(
    ("failure", "error"),
    [("missing_socket", "cannot_connect"), ("twice", "chrony_twice")],
)
async def test_user_flow_chrony_socket_errors(
    hass: HomeAssistant,
    chrony_command_server: ChronyCommandServer,
    failure: str,
    error: str,
) -> None:
    """Test a chrony command socket that is not there, or given twice, then the fix."""
    good = _fields(chrony_socket=chrony_command_server.socket_path)
    if failure == "missing_socket":
        bad = _fields(chrony_socket="/nonexistent/chronyd.sock")
        field = CONF_CHRONY_SOCKET
    else:
        bad = {**good, CONF_CHRONY_CONTAINER: "timesync"}
        field = CONF_CHRONY_CONTAINER
    result = await _submit(hass, bad)
    assert result["errors"][field] == error
    result = await _finish(hass, result, good)
    assert result["result"].unique_id == f"chrony:{chrony_command_server.socket_path}"


async def test_user_flow_no_clocks(hass: HomeAssistant, ntp_server: NtpServer) -> None:
    """Test that at least one clock is required."""
    result = await _submit(hass, {CONF_CONTAINERS: "", CONF_CHRONY_CONTAINER: ""})
    assert result["errors"] == {"base": "no_clocks"}
    result = await _finish(hass, result, _fields(ntp_servers=ntp_server.address))
    assert result["result"].unique_id == f"ntp:{ntp_server.address}"


async def test_user_flow_unknown_error(
    hass: HomeAssistant,
    ntp_server: NtpServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test that an unexpected failure is logged and shown as unknown.

    Nothing the real servers do raises outside the probe errors, so the fault is
    injected into the NTP query.
    """
    real_query = config_flow.query_ntp_servers

    async def broken(*args: Any, **kwargs: Any) -> Any:
        """Fail the way a bug would."""
        raise RuntimeError("boom")

    monkeypatch.setattr(config_flow, "query_ntp_servers", broken)
    result = await _submit(hass, _fields(ntp_servers=ntp_server.address))
    assert result["errors"] == {"base": "unknown"}
    assert "Unexpected exception while testing the clocks" in caplog.text
    monkeypatch.setattr(config_flow, "query_ntp_servers", real_query)
    await _finish(hass, result, _fields(ntp_servers=ntp_server.address))


async def test_user_flow_already_configured(
    hass: HomeAssistant, start_redis: StartRedis
) -> None:
    """Test that a second entry for the same site aborts before any test."""
    redis = start_redis()
    MockConfigEntry(
        domain=DOMAIN, unique_id=f"redis:127.0.0.1:{redis.port}/0"
    ).add_to_hass(hass)
    result = await _submit(
        hass, _fields(redis_url=f"redis://:ignored@127.0.0.1:{redis.port}")
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_reconfigure_flow(hass: HomeAssistant, start_redis: StartRedis) -> None:
    """Test that reconfigure tests the new fields, then saves and reloads."""
    redis = start_redis(password=PASSWORD)
    entry = make_entry(_fields(redis_url=redis.url), unique_id="redis:site")
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()

    result = await entry.start_reconfigure_flow(hass)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"],
        _fields(redis_url=f"redis://:wrong@127.0.0.1:{redis.port}/0"),
    )
    assert result["errors"] == {CONF_REDIS_URL: "invalid_auth"}

    moved = start_redis(password="another")
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], _fields(redis_url=moved.url)
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await hass.async_block_till_done()
    assert entry.data[CONF_REDIS_URL] == moved.url
    assert entry.unique_id == "redis:site"
    assert entry.runtime_data.coordinator.data.redis is not None
    assert entry.runtime_data.coordinator.data.redis.ok
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_options_flow(hass: HomeAssistant, start_redis: StartRedis) -> None:
    """Test that the options are saved and the entry reloaded with them."""
    redis = start_redis()
    entry = make_entry(_fields(redis_url=redis.url))
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    coordinator = entry.runtime_data.coordinator

    result = await hass.config_entries.options.async_init(entry.entry_id)
    assert result["type"] is FlowResultType.FORM
    result = await hass.config_entries.options.async_configure(
        result["flow_id"],
        {CONF_SCAN_INTERVAL: 10.0, CONF_TOLERANCE: 16.0, CONF_STALE_AFTER: 120.0},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await hass.async_block_till_done()
    assert entry.options == {
        CONF_SCAN_INTERVAL: 10,
        CONF_TOLERANCE: 16.0,
        CONF_STALE_AFTER: 120,
    }
    reloaded = entry.runtime_data.coordinator
    assert reloaded is not coordinator
    assert reloaded.tolerance == 16.0
    assert reloaded.update_interval is not None
    assert reloaded.update_interval.total_seconds() == 10
    assert await hass.config_entries.async_unload(entry.entry_id)


async def test_user_flow_redis_bad_answer(
    hass: HomeAssistant, redis_server: RedisServer
) -> None:
    """Test a RESP server that refuses TIME (a small bad server), then the fix."""

    async def refuse(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer every command with an error, as a server without TIME would."""
        while data := await reader.read(1024):
            writer.write(b"-ERR unknown command 'TIME'\r\n" * max(data.count(b"*"), 1))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await _submit(hass, _fields(redis_url=f"redis://127.0.0.1:{port}/0"))
        assert result["errors"] == {CONF_REDIS_URL: "invalid_response"}
    finally:
        server.close()
        await server.wait_closed()
    await _finish(hass, result, _fields(redis_url=redis_server.url))

"""Tests for the makestep and check actions."""

from __future__ import annotations

from homeassistant.auth.models import User
from homeassistant.const import ATTR_CONFIG_ENTRY_ID
from homeassistant.core import Context, HomeAssistant
from homeassistant.exceptions import (
    HomeAssistantError,
    ServiceValidationError,
    Unauthorized,
)
import pytest

from custom_components.clock_drift.const import (
    CONF_CHRONY_SOCKET,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    DOMAIN,
)
from tests.conftest import SetupEntry
from tests.harness import ChronyCommandServer, NtpServer, StartRedis


async def test_makestep_surfaces_chrony_failure(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    chrony_command_server: ChronyCommandServer,
) -> None:
    """Test makestep against the real chronyd, which answers 500 Failure under -x."""
    entry = await setup_entry({CONF_CHRONY_SOCKET: chrony_command_server.socket_path})
    with pytest.raises(HomeAssistantError) as raised:
        await hass.services.async_call(
            DOMAIN,
            "makestep",
            {ATTR_CONFIG_ENTRY_ID: entry.entry_id},
            blocking=True,
            return_response=True,
        )
    assert raised.value.translation_key == "makestep_failed"
    assert "500 Failure" in str(raised.value)
    assert str(raised.value).startswith("chrony could not step the clock of Test site")


@pytest.mark.usefixtures("chronyc_stand_in")
async def test_makestep_returns_answer_and_offsets(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    chrony_command_server: ChronyCommandServer,
) -> None:
    """Test a successful makestep's answer and offsets (chronyc stand-in: fixture)."""
    entry = await setup_entry({CONF_CHRONY_SOCKET: chrony_command_server.socket_path})

    response = await hass.services.async_call(
        DOMAIN,
        "makestep",
        {ATTR_CONFIG_ENTRY_ID: entry.entry_id},
        blocking=True,
        return_response=True,
    )
    assert response is not None
    assert response["answer"] == "200 OK"
    for moment in ("before", "after"):
        assert abs(response[moment]["chrony_system_time"]) < 0.05
        readings = response[moment]["report"]["readings"]
        assert [reading["kind"] for reading in readings] == ["chrony"]

    # Without return_response the action still runs and returns nothing.
    assert (
        await hass.services.async_call(
            DOMAIN, "makestep", {ATTR_CONFIG_ENTRY_ID: entry.entry_id}, blocking=True
        )
        is None
    )


async def test_makestep_admin_only(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    hass_read_only_user: User,
) -> None:
    """Test that a non-admin user may not run makestep."""
    entry = await setup_entry({CONF_NTP_SERVERS: ntp_server.address})
    with pytest.raises(Unauthorized):
        await hass.services.async_call(
            DOMAIN,
            "makestep",
            {ATTR_CONFIG_ENTRY_ID: entry.entry_id},
            blocking=True,
            context=Context(user_id=hass_read_only_user.id),
        )


async def test_makestep_without_chrony(
    hass: HomeAssistant, setup_entry: SetupEntry, ntp_server: NtpServer
) -> None:
    """Test that makestep on a site without chrony is refused, translated."""
    entry = await setup_entry({CONF_NTP_SERVERS: ntp_server.address})
    with pytest.raises(ServiceValidationError) as raised:
        await hass.services.async_call(
            DOMAIN,
            "makestep",
            {ATTR_CONFIG_ENTRY_ID: entry.entry_id},
            blocking=True,
        )
    assert raised.value.translation_key == "no_chrony"


@pytest.mark.parametrize("service", ["makestep", "check"])
async def test_unknown_or_unloaded_entry(
    hass: HomeAssistant, setup_entry: SetupEntry, ntp_server: NtpServer, service: str
) -> None:
    """Test that an unknown or unloaded entry is refused, translated."""
    entry = await setup_entry({CONF_NTP_SERVERS: ntp_server.address})
    with pytest.raises(ServiceValidationError) as raised:
        await hass.services.async_call(
            DOMAIN,
            service,
            {ATTR_CONFIG_ENTRY_ID: "no-such-entry"},
            blocking=True,
            return_response=True,
        )
    assert raised.value.translation_key == "service_config_entry_not_found"

    assert await hass.config_entries.async_unload(entry.entry_id)
    with pytest.raises(ServiceValidationError) as raised:
        await hass.services.async_call(
            DOMAIN,
            service,
            {ATTR_CONFIG_ENTRY_ID: entry.entry_id},
            blocking=True,
            return_response=True,
        )
    assert raised.value.translation_key == "service_config_entry_not_loaded"


async def test_check_returns_report(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    start_redis: StartRedis,
) -> None:
    """Test that check samples now and returns the probes' report."""
    redis = start_redis(skew=42)
    entry = await setup_entry(
        {CONF_NTP_SERVERS: ntp_server.address, CONF_REDIS_URL: redis.url}
    )
    before = entry.runtime_data.coordinator.data.taken_at
    response = await hass.services.async_call(
        DOMAIN,
        "check",
        {ATTR_CONFIG_ENTRY_ID: entry.entry_id},
        blocking=True,
        return_response=True,
    )
    assert entry.runtime_data.coordinator.data.taken_at > before
    assert response is not None
    assert response == entry.runtime_data.coordinator.data.report.as_dict()
    assert response["in_sync"] is False
    assert response["worst"] == f"127.0.0.1:{redis.port}/0"
    offsets = {reading["kind"]: reading["offset"] for reading in response["readings"]}
    assert abs(offsets["redis"] - 42) < 0.05
    assert abs(offsets["ntp"]) < 0.05


async def test_check_fails_when_nothing_answers(
    hass: HomeAssistant, setup_entry: SetupEntry, start_redis: StartRedis
) -> None:
    """Test that check raises a translated error when no clock can be read."""
    redis = start_redis()
    entry = await setup_entry({CONF_REDIS_URL: redis.url})
    redis.stop()
    with pytest.raises(HomeAssistantError) as raised:
        await hass.services.async_call(
            DOMAIN,
            "check",
            {ATTR_CONFIG_ENTRY_ID: entry.entry_id},
            blocking=True,
            return_response=True,
        )
    assert raised.value.translation_key == "check_failed"

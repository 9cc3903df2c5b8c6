"""Tests for setting up and unloading the integration."""

from __future__ import annotations

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.clock_drift.const import CONF_NTP_SERVERS, DOMAIN


async def test_setup_and_unload(hass: HomeAssistant) -> None:
    """Test that an entry loads with its runtime data and unloads."""
    entry = MockConfigEntry(
        domain=DOMAIN, data={CONF_NTP_SERVERS: "127.0.0.1, 127.0.0.2"}, unique_id="x"
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.ntp_servers == ("127.0.0.1", "127.0.0.2")
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert entry.state is ConfigEntryState.NOT_LOADED

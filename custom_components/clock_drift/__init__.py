"""The Clock Drift Monitor integration."""

from __future__ import annotations

from dataclasses import dataclass

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant

from .const import CONF_NTP_SERVERS


@dataclass(slots=True)
class ClockDriftRuntimeData:
    """What a loaded entry holds while it runs."""

    ntp_servers: tuple[str, ...]


type ClockDriftConfigEntry = ConfigEntry[ClockDriftRuntimeData]


async def async_setup_entry(hass: HomeAssistant, entry: ClockDriftConfigEntry) -> bool:
    """Set up Clock Drift Monitor from a config entry."""
    servers = entry.data[CONF_NTP_SERVERS].split(",")
    entry.runtime_data = ClockDriftRuntimeData(
        ntp_servers=tuple(server.strip() for server in servers if server.strip())
    )
    return True


async def async_unload_entry(hass: HomeAssistant, entry: ClockDriftConfigEntry) -> bool:
    """Unload a config entry."""
    return True

"""The Clock Drift Monitor integration."""

from __future__ import annotations

from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import config_validation as cv
from homeassistant.helpers.typing import ConfigType

from .const import DOMAIN
from .coordinator import (
    ClockDriftClients,
    ClockDriftConfigEntry,
    ClockDriftCoordinator,
    ClockDriftRuntimeData,
    local_utcoffset_hours,
)
from .probes.celery import HeartbeatListener
from .services import async_setup_services

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

PLATFORMS = [Platform.BINARY_SENSOR, Platform.SENSOR]


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Set up the Clock Drift Monitor actions."""
    async_setup_services(hass)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: ClockDriftConfigEntry) -> bool:
    """Set up Clock Drift Monitor from a config entry."""
    # Build the probe clients; they close with the entry, however setup ends
    clients = ClockDriftClients.from_config(entry.data)
    entry.async_on_unload(clients.close)

    # Start the Celery heartbeat listener, which lives as long as the entry
    listener: HeartbeatListener | None = None
    if clients.broker_url is not None:
        listener = HeartbeatListener(
            clients.broker_url, local_utcoffset=local_utcoffset_hours
        )
        entry.async_create_background_task(
            hass, listener.run(), name=f"{DOMAIN} {entry.title} heartbeat listener"
        )
        entry.async_on_unload(listener.stop)

    # Sample every clock once before the entities exist
    coordinator = ClockDriftCoordinator(hass, entry, clients, listener)
    await coordinator.async_config_entry_first_refresh()
    entry.runtime_data = ClockDriftRuntimeData(
        clients=clients, coordinator=coordinator, listener=listener
    )
    entry.async_on_unload(coordinator.async_clear_issues)

    # Forward the setup to the platforms
    await hass.config_entries.async_forward_entry_setups(entry, PLATFORMS)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: ClockDriftConfigEntry) -> bool:
    """Unload a config entry; the clients and the listener close with it."""
    return await hass.config_entries.async_unload_platforms(entry, PLATFORMS)

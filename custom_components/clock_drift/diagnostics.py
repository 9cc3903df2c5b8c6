"""Diagnostics for Clock Drift Monitor: settings redacted, the latest report."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.core import HomeAssistant

from .const import CONF_CELERY_BROKER_URL, CONF_DOCKER_URL, CONF_REDIS_URL
from .coordinator import ClockDriftConfigEntry

# These URLs carry the Redis password: redacted whole.
TO_REDACT = {CONF_CELERY_BROKER_URL, CONF_REDIS_URL}


def _strip_credentials(url: str) -> str:
    """Return a URL without the user and password it may carry."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"**REDACTED**@{netloc}"))


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: ClockDriftConfigEntry
) -> dict[str, Any]:
    """Return the entry's settings (redacted) and the latest report."""
    data = async_redact_data(dict(entry.data), TO_REDACT)
    if docker_url := data.get(CONF_DOCKER_URL):
        data[CONF_DOCKER_URL] = _strip_credentials(docker_url)
    runtime = entry.runtime_data
    coordinator = runtime.coordinator
    snapshot = coordinator.data
    listener = runtime.listener
    return {
        "entry": {"data": data, "options": dict(entry.options)},
        "last_update_success": coordinator.last_update_success,
        "report": snapshot.report.as_dict(),
        "errors": snapshot.errors,
        "chrony": asdict(snapshot.chrony) if snapshot.chrony else None,
        "workers": {name: asdict(state) for name, state in snapshot.workers.items()},
        "listener": (
            {
                "broker": listener.name,
                "connected": listener.connected,
                "last_error": listener.last_error,
            }
            if listener is not None
            else None
        ),
    }

"""Shared fixtures: Home Assistant set-up and the real servers of the test harness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from homeassistant.core import HomeAssistant
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

# Import the integration at collection time: otherwise `custom_components` resolves to
# the plugin's own testing config and Home Assistant reports "Integration not found".
import custom_components.clock_drift  # noqa: F401
from custom_components.clock_drift.const import (
    CONF_SCAN_INTERVAL,
    CONF_STALE_AFTER,
    CONF_TOLERANCE,
    CONNECTION_FIELDS,
    DOMAIN,
)

pytest_plugins = ["tests.harness"]

type SetupEntry = Callable[..., Awaitable[MockConfigEntry]]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""


@pytest.fixture(autouse=True)
async def utc_time_zone(hass: HomeAssistant) -> None:
    """Run Home Assistant in UTC, like the Celery workers of the harness."""
    await hass.config.async_set_time_zone("UTC")


def make_entry(
    data: Mapping[str, str],
    *,
    options: Mapping[str, Any] | None = None,
    unique_id: str = "site",
) -> MockConfigEntry:
    """Return an entry with every connection field (empty unless given)."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Test site",
        unique_id=unique_id,
        data={key: data.get(key, "") for key in CONNECTION_FIELDS},
        options={
            CONF_SCAN_INTERVAL: 3600,
            CONF_TOLERANCE: 30.0,
            CONF_STALE_AFTER: 600,
            **(options or {}),
        },
    )


@pytest.fixture
def setup_entry(hass: HomeAssistant) -> SetupEntry:
    """Return a helper that adds an entry for the given fields and sets it up.

    The scan interval defaults to an hour: tests drive cycles with
    ``coordinator.async_refresh()`` instead of waiting.
    """

    async def setup(
        data: Mapping[str, str],
        *,
        options: Mapping[str, Any] | None = None,
        unique_id: str = "site",
    ) -> MockConfigEntry:
        """Add and set up the entry."""
        entry = make_entry(data, options=options, unique_id=unique_id)
        entry.add_to_hass(hass)
        await hass.config_entries.async_setup(entry.entry_id)
        await hass.async_block_till_done()
        return entry

    return setup

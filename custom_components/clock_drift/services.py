"""Actions of Clock Drift Monitor: makestep (admin) and check."""

from __future__ import annotations

from typing import Any

from homeassistant.const import ATTR_CONFIG_ENTRY_ID
from homeassistant.core import (
    HomeAssistant,
    ServiceCall,
    ServiceResponse,
    SupportsResponse,
    callback,
)
from homeassistant.exceptions import HomeAssistantError, ServiceValidationError
from homeassistant.helpers.service import (
    async_get_config_entry,
    async_register_admin_service,
)
import probatio

from .const import DOMAIN
from .coordinator import ClockDriftConfigEntry
from .probes import ProbeError

SERVICE_CHECK = "check"
SERVICE_MAKESTEP = "makestep"

ENTRY_SCHEMA = probatio.Schema({probatio.Required(ATTR_CONFIG_ENTRY_ID): str})


def _get_entry(hass: HomeAssistant, entry_id: str) -> ClockDriftConfigEntry:
    """Return a loaded entry of ours (translated errors otherwise)."""
    entry: ClockDriftConfigEntry = async_get_config_entry(hass, DOMAIN, entry_id)
    return entry


async def _sample(entry: ClockDriftConfigEntry) -> dict[str, Any]:
    """Sample every clock of the site now and return the report."""
    coordinator = entry.runtime_data.coordinator
    await coordinator.async_refresh()
    if not coordinator.last_update_success:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="check_failed",
            translation_placeholders={"site": entry.title},
        )
    return coordinator.data.report.as_dict()


async def async_makestep(entry: ClockDriftConfigEntry) -> dict[str, Any]:
    """Make chrony step the clock; return its answer and the offsets around it."""
    chrony = entry.runtime_data.clients.chrony
    if chrony is None:
        raise ServiceValidationError(
            translation_domain=DOMAIN,
            translation_key="no_chrony",
            translation_placeholders={"site": entry.title},
        )
    coordinator = entry.runtime_data.coordinator
    try:
        before = await chrony.tracking()
        await coordinator.async_refresh()
        report_before = coordinator.data.report.as_dict()
        answer = await chrony.makestep()
        after = await chrony.tracking()
    except ProbeError as err:
        raise HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key="makestep_failed",
            translation_placeholders={"site": entry.title, "error": str(err)},
        ) from err
    await coordinator.async_refresh()
    return {
        "answer": answer,
        "before": {"chrony_system_time": before.system_time, "report": report_before},
        "after": {
            "chrony_system_time": after.system_time,
            "report": coordinator.data.report.as_dict(),
        },
    }


async def _async_makestep(call: ServiceCall) -> ServiceResponse:
    """Handle the makestep action."""
    entry = _get_entry(call.hass, call.data[ATTR_CONFIG_ENTRY_ID])
    response = await async_makestep(entry)
    return response if call.return_response else None


async def _async_check(call: ServiceCall) -> ServiceResponse:
    """Handle the check action: sample now and return the report."""
    entry = _get_entry(call.hass, call.data[ATTR_CONFIG_ENTRY_ID])
    return await _sample(entry)


@callback
def async_setup_services(hass: HomeAssistant) -> None:
    """Register the actions of the integration."""
    async_register_admin_service(
        hass,
        DOMAIN,
        SERVICE_MAKESTEP,
        _async_makestep,
        schema=ENTRY_SCHEMA,
        supports_response=SupportsResponse.OPTIONAL,
    )
    hass.services.async_register(
        DOMAIN,
        SERVICE_CHECK,
        _async_check,
        schema=ENTRY_SCHEMA,
        supports_response=SupportsResponse.ONLY,
    )

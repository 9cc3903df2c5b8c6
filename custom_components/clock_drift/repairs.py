"""Repair flows: offer to make chrony step the clock when the site is out of sync."""

from __future__ import annotations

from typing import Any

from homeassistant.components.repairs import (
    ConfirmRepairFlow,
    RepairsFlow,
    RepairsFlowResult,
)
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
import probatio

from .coordinator import ClockDriftConfigEntry
from .services import async_makestep


class MakestepRepairFlow(RepairsFlow):
    """Confirm, then make chrony step the clock of the site."""

    def __init__(self, entry_id: str) -> None:
        """Remember the site the issue is about."""
        self.entry_id = entry_id

    async def async_step_init(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """Start with the confirmation."""
        return await self.async_step_confirm()

    async def async_step_confirm(
        self, user_input: dict[str, str] | None = None
    ) -> RepairsFlowResult:
        """Run makestep once the user confirms."""
        entry: ClockDriftConfigEntry | None = self.hass.config_entries.async_get_entry(
            self.entry_id
        )
        if entry is None or entry.state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        errors: dict[str, str] = {}
        placeholders = {"site": entry.title, "error": ""}
        if user_input is not None:
            try:
                await async_makestep(entry)
            except HomeAssistantError as err:
                errors["base"] = "makestep_failed"
                placeholders["error"] = str(err)
            else:
                return self.async_create_entry(data={})
        return self.async_show_form(
            step_id="confirm",
            data_schema=probatio.Schema({}),
            description_placeholders=placeholders,
            errors=errors,
        )


async def async_create_fix_flow(
    hass: HomeAssistant, issue_id: str, data: dict[str, Any] | None
) -> RepairsFlow:
    """Return the flow that fixes an issue of ours."""
    if issue_id.startswith("out_of_sync_") and data and "entry_id" in data:
        return MakestepRepairFlow(str(data["entry_id"]))
    return ConfirmRepairFlow()

"""Config flow for Clock Drift Monitor."""

from __future__ import annotations

from typing import Any

from homeassistant.config_entries import ConfigFlow, ConfigFlowResult
import probatio

from .const import CONF_NTP_SERVERS, DEFAULT_NTP_SERVERS, DOMAIN


class ClockDriftConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up a site whose clocks are watched."""

    VERSION = 1

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the clocks to watch."""
        if user_input is not None:
            servers = user_input[CONF_NTP_SERVERS].strip()
            await self.async_set_unique_id(servers)
            self._abort_if_unique_id_configured()
            return self.async_create_entry(
                title="Clock Drift Monitor", data={CONF_NTP_SERVERS: servers}
            )
        return self.async_show_form(
            step_id="user",
            data_schema=probatio.Schema(
                {probatio.Required(CONF_NTP_SERVERS, default=DEFAULT_NTP_SERVERS): str}
            ),
        )

"""Constants of the Clock Drift Monitor integration."""

from __future__ import annotations

import logging
from typing import Final

DOMAIN: Final = "clock_drift"
LOGGER = logging.getLogger(__package__)

CONF_NTP_SERVERS: Final = "ntp_servers"

DEFAULT_NTP_SERVERS: Final = "pool.ntp.org"

"""Constants of the Clock Drift Monitor integration."""

from __future__ import annotations

import logging
from typing import Final

DOMAIN: Final = "clock_drift"
LOGGER = logging.getLogger(__package__)

# Connection fields (config entry data).
CONF_NTP_SERVERS: Final = "ntp_servers"
CONF_REDIS_URL: Final = "redis_url"
CONF_CELERY_BROKER_URL: Final = "celery_broker_url"
CONF_DOCKER_URL: Final = "docker_url"
CONF_CONTAINERS: Final = "containers"
CONF_CHRONY_SOCKET: Final = "chrony_socket"
CONF_CHRONY_CONTAINER: Final = "chrony_container"

CONNECTION_FIELDS: Final = (
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    CONF_CELERY_BROKER_URL,
    CONF_DOCKER_URL,
    CONF_CONTAINERS,
    CONF_CHRONY_SOCKET,
    CONF_CHRONY_CONTAINER,
)

# Options.
CONF_SCAN_INTERVAL: Final = "scan_interval"
CONF_TOLERANCE: Final = "tolerance"
CONF_STALE_AFTER: Final = "stale_after"

DEFAULT_NTP_SERVERS: Final = "pool.ntp.org"
DEFAULT_DOCKER_URL: Final = "unix:///var/run/docker.sock"
DEFAULT_SCAN_INTERVAL: Final = 30
# The users' alert level; Celery itself warns from 16 s (HEARTBEAT_DRIFT_MAX).
DEFAULT_TOLERANCE: Final = 30.0
DEFAULT_STALE_AFTER: Final = 600

# The chronyc binary the chrony_socket path runs (a constant so tests can point at a
# stand-in for the one answer chronyd under -x never gives: a successful makestep).
CHRONYC: Final = "chronyc"

# Cycles out of sync before a repair issue is raised.
OUT_OF_SYNC_CYCLES: Final = 3

ATTR_OUT_OF_TOLERANCE: Final = "out_of_tolerance"
ATTR_UNREADABLE: Final = "unreadable"
ATTR_UNCERTAINTY: Final = "uncertainty"

"""Shared fixtures: Home Assistant set-up and the real servers of the test harness."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
import re
import shutil
from typing import Any
from unittest.mock import PropertyMock, patch

from homeassistant.core import HomeAssistant, State
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.syrupy import HomeAssistantSnapshotExtension
from syrupy.assertion import SnapshotAssertion

# Import the integration at collection time: otherwise `custom_components` resolves to
# the plugin's own testing config and Home Assistant reports "Integration not found".
import custom_components.clock_drift  # noqa: F401
from custom_components.clock_drift import coordinator as coordinator_module
from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_CHRONY_SOCKET,
    CONF_CONTAINERS,
    CONF_DOCKER_URL,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    CONF_SCAN_INTERVAL,
    CONF_STALE_AFTER,
    CONF_TOLERANCE,
    CONNECTION_FIELDS,
    DOMAIN,
)
from tests.harness import (
    BUSYBOX_IMAGE,
    CeleryWorker,
    ChronyCommandServer,
    Containers,
    NtpServer,
    RedisServer,
    StartCeleryWorker,
    StartRedis,
)

pytest_plugins = ["tests.harness"]

WORKER = "scan-worker-1@pi"
CONTAINER = "busybox-1"

type SetupEntry = Callable[..., Awaitable[MockConfigEntry]]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""


@pytest.fixture(autouse=True)
async def utc_time_zone(hass: HomeAssistant) -> None:
    """Run Home Assistant in UTC, like the Celery workers of the harness."""
    await hass.config.async_set_time_zone("UTC")


@pytest.fixture
def snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """Return syrupy's assertion with Home Assistant's serializer (tests/snapshots/)."""
    return snapshot.use_extension(HomeAssistantSnapshotExtension)


@pytest.fixture
def entity_registry_enabled_by_default() -> Iterator[None]:
    """Enable the entities that are disabled by default (chrony's noisy ones)."""
    with patch(
        "homeassistant.helpers.entity.Entity.entity_registry_enabled_default",
        return_value=True,
        new_callable=PropertyMock,
    ):
        yield


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


@dataclass(slots=True)
class Site:
    """A site with every kind of clock, on real servers, set up in Home Assistant."""

    entry: MockConfigEntry
    ntp: NtpServer
    redis: RedisServer
    broker: RedisServer
    chrony: ChronyCommandServer
    container: str
    worker: CeleryWorker


async def refresh(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Run one coordinator cycle now and let the entities update."""
    await entry.runtime_data.coordinator.async_refresh()
    await hass.async_block_till_done()


async def wait_for_workers(
    hass: HomeAssistant, entry: MockConfigEntry, *hostnames: str, timeout: float = 30
) -> None:
    """Refresh until the listener has heard every worker named (heartbeats: 2 s)."""
    listener = entry.runtime_data.listener
    assert listener is not None
    async with asyncio.timeout(timeout):
        while not set(hostnames) <= listener.workers().keys():
            await asyncio.sleep(0.1)
    await refresh(hass, entry)


@pytest.fixture
async def full_site(  # noqa: PLR0917
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    start_redis: StartRedis,
    ntp_server: NtpServer,
    chrony_command_server: ChronyCommandServer,
    docker: Containers,
    start_celery_worker: StartCeleryWorker,
) -> Site:
    """Return a site whose Redis runs 42 s ahead; every other clock is true."""
    redis = start_redis(skew=42, password="redis-secret-pw")
    broker = start_redis(password="broker-secret-pw")
    container = docker.run_container(BUSYBOX_IMAGE, name=CONTAINER)
    worker = start_celery_worker(broker.url, hostname=WORKER)
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: ntp_server.address,
            CONF_REDIS_URL: redis.url,
            CONF_CELERY_BROKER_URL: broker.url,
            CONF_DOCKER_URL: docker.url,
            CONF_CONTAINERS: container,
            CONF_CHRONY_SOCKET: chrony_command_server.socket_path,
        }
    )
    await wait_for_workers(hass, entry, WORKER)
    return Site(
        entry=entry,
        ntp=ntp_server,
        redis=redis,
        broker=broker,
        chrony=chrony_command_server,
        container=container,
        worker=worker,
    )


def mask(value: Any) -> Any:
    """Return a value with the servers' random ports and directories masked."""
    if isinstance(value, str):
        return re.sub(r"/tmp/\S+", "<tmp>", re.sub(r":\d{4,5}\b", ":<port>", value))
    if isinstance(value, list):
        return [mask(item) for item in value]
    return value


def stable(state: State) -> dict[str, Any]:
    """Return a state with what real clocks make vary replaced by its kind."""
    try:
        float(state.state)
    except ValueError:
        value = state.state
    else:
        value = "<number>"
    if state.attributes.get("device_class") == "timestamp":
        value = "<timestamp>"
    attributes = {key: mask(value) for key, value in state.attributes.items()}
    if "uncertainty" in attributes:
        attributes["uncertainty"] = "<seconds>"
    return {"entity_id": state.entity_id, "state": value, "attributes": attributes}


@pytest.fixture
def chronyc_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the integration at a chronyc whose makestep succeeds.

    chronyd must run with -x here (it would step this machine's clock), and then
    makestep always fails. This wrapper answers makestep with chronyc's success
    line and passes every other command to the real chronyc, so tracking still
    comes from the real chronyd.
    """
    chronyc = shutil.which("chronyc") or "/usr/bin/chronyc"
    wrapper = tmp_path / "chronyc"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do\n'
        '  [ "$arg" = makestep ] && { echo "200 OK"; exit 0; }\n'
        "done\n"
        f'exec {chronyc} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(coordinator_module, "CHRONYC", str(wrapper))
    return wrapper

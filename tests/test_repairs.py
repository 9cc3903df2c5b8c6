"""Tests for the repair issues (out of sync, UTC offset) and the makestep fix flow."""

from __future__ import annotations

import asyncio
import re

from homeassistant.components.repairs import ConfirmRepairFlow, repairs_flow_manager
from homeassistant.const import STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import issue_registry as ir
from homeassistant.setup import async_setup_component
import pytest

from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_CHRONY_SOCKET,
    CONF_REDIS_URL,
    DOMAIN,
    OUT_OF_SYNC_CYCLES,
)
from custom_components.clock_drift.repairs import (
    MakestepRepairFlow,
    async_create_fix_flow,
)
from tests.conftest import SetupEntry, refresh, wait_for_workers
from tests.harness import ChronyCommandServer, StartCeleryWorker, StartRedis

WORKER = "paris-worker@pi"


@pytest.fixture(autouse=True)
async def repairs(hass: HomeAssistant) -> None:
    """Load the repairs integration (its flow manager)."""
    assert await async_setup_component(hass, "repairs", {})


async def _cycles(hass: HomeAssistant, entry_id: str, count: int) -> None:
    """Run ``count`` more coordinator cycles."""
    entry = hass.config_entries.async_get_entry(entry_id)
    assert entry is not None
    for _ in range(count):
        await refresh(hass, entry)  # type: ignore[arg-type]


async def test_out_of_sync_fix_flow_surfaces_failure(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    start_redis: StartRedis,
    chrony_command_server: ChronyCommandServer,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test the issue after a few cycles, a failing fix, and the issue clearing."""
    redis = start_redis(skew=42)
    entry = await setup_entry(
        {
            CONF_REDIS_URL: redis.url,
            CONF_CHRONY_SOCKET: chrony_command_server.socket_path,
        }
    )
    issue_id = f"out_of_sync_{entry.entry_id}"
    await _cycles(hass, entry.entry_id, OUT_OF_SYNC_CYCLES - 2)
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is None
    await _cycles(hass, entry.entry_id, 1)
    issue = issue_registry.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.is_fixable
    assert issue.translation_key == "out_of_sync"
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["tolerance"] == "30"
    clock, offset = re.fullmatch(
        r"(\S+) \(\+([\d.]+) s\)", issue.translation_placeholders["clocks"]
    ).groups()  # type: ignore[union-attr]
    assert clock == f"127.0.0.1:{redis.port}/0"
    assert abs(float(offset) - 42) < 0.05

    manager = repairs_flow_manager(hass)
    assert manager is not None
    result = await manager.async_init(DOMAIN, data={"issue_id": issue_id})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "confirm"
    result = await manager.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "makestep_failed"}
    assert "500 Failure" in result["description_placeholders"]["error"]

    # The cause goes away (the skewed Redis stops): the issue clears itself.
    redis.stop()
    await _cycles(hass, entry.entry_id, 1)
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is None


@pytest.mark.usefixtures("chronyc_stand_in")
async def test_out_of_sync_fix_flow_steps_the_clock(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    start_redis: StartRedis,
    chrony_command_server: ChronyCommandServer,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a fix flow whose makestep succeeds (chronyc stand-in: see its fixture)."""
    redis = start_redis(skew=42)
    entry = await setup_entry(
        {
            CONF_REDIS_URL: redis.url,
            CONF_CHRONY_SOCKET: chrony_command_server.socket_path,
        }
    )
    await _cycles(hass, entry.entry_id, OUT_OF_SYNC_CYCLES - 1)
    issue_id = f"out_of_sync_{entry.entry_id}"
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is not None

    manager = repairs_flow_manager(hass)
    assert manager is not None
    result = await manager.async_init(DOMAIN, data={"issue_id": issue_id})
    result = await manager.async_configure(result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert issue_registry.async_get_issue(DOMAIN, issue_id) is None


async def test_out_of_sync_without_chrony(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    start_redis: StartRedis,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test that without chrony the issue explains and is not fixable."""
    redis = start_redis(skew=42)
    entry = await setup_entry({CONF_REDIS_URL: redis.url})
    await _cycles(hass, entry.entry_id, OUT_OF_SYNC_CYCLES - 1)
    issue = issue_registry.async_get_issue(DOMAIN, f"out_of_sync_{entry.entry_id}")
    assert issue is not None
    assert not issue.is_fixable
    assert issue.translation_key == "out_of_sync_no_chrony"

    # Unloading the site takes its issues with it.
    assert await hass.config_entries.async_unload(entry.entry_id)
    assert issue_registry.async_get_issue(DOMAIN, issue.issue_id) is None


async def test_utcoffset_mismatch_issue(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    start_redis: StartRedis,
    start_celery_worker: StartCeleryWorker,
    issue_registry: ir.IssueRegistry,
) -> None:
    """Test a real worker in Europe/Paris while Home Assistant is in UTC, then fixed."""
    broker = start_redis()
    entry = await setup_entry({CONF_CELERY_BROKER_URL: broker.url})
    start_celery_worker(broker.url, tz="Europe/Paris", hostname=WORKER)
    await wait_for_workers(hass, entry, WORKER)
    issue_id = f"utcoffset_mismatch_{entry.entry_id}_{WORKER}"
    issue = issue_registry.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert not issue.is_fixable
    assert issue.translation_placeholders == {
        "worker": WORKER,
        "worker_utcoffset": str(
            entry.runtime_data.coordinator.data.workers[WORKER].utcoffset
        ),
        "local_utcoffset": "0",
    }
    mismatch = "binary_sensor.paris_worker_pi_utc_offset_mismatch"
    assert hass.states.get(mismatch).state == STATE_ON  # type: ignore[union-attr]

    # Home Assistant moves to the worker's time zone: the cause is gone.
    await hass.config.async_set_time_zone("Europe/Paris")
    async with asyncio.timeout(15):
        while issue_registry.async_get_issue(DOMAIN, issue_id) is not None:
            await asyncio.sleep(0.5)
            await refresh(hass, entry)
    assert hass.states.get(mismatch).state == STATE_OFF  # type: ignore[union-attr]


async def test_fix_flow_for_an_unloaded_site(hass: HomeAssistant) -> None:
    """Test that the fix flow aborts when its site is not loaded any more."""
    flow = MakestepRepairFlow("no-such-entry")
    flow.hass = hass
    result = await flow.async_step_init()
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"
    other = await async_create_fix_flow(hass, "something_else", None)
    assert isinstance(other, ConfirmRepairFlow)

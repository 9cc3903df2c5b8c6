"""The drift alert blueprint, run by a real Home Assistant automation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
import shutil

from freezegun.api import FrozenDateTimeFactory
from homeassistant.core import HomeAssistant, ServiceCall
from homeassistant.setup import async_setup_component
from homeassistant.util.yaml import load_yaml_dict
import pytest
from pytest_homeassistant_custom_component.common import (
    async_fire_time_changed,
    async_mock_service,
)

from custom_components.clock_drift.const import DOMAIN

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT = ROOT / "blueprints" / "automation" / DOMAIN / "drift_alert.yaml"
WORKER = "sensor.scan_worker_1_pi_offset"
REDIS = "sensor.redis_server_offset"


@pytest.fixture(name="calls")
async def calls_fixture(
    hass: HomeAssistant,
) -> tuple[list[ServiceCall], list[ServiceCall]]:
    """Install the blueprint in an automation whose actions call test services."""
    folder = Path(hass.config.path("blueprints", "automation", DOMAIN))
    await hass.async_add_executor_job(lambda: folder.mkdir(parents=True, exist_ok=True))
    await hass.async_add_executor_job(shutil.copy, BLUEPRINT, folder)
    alerts = async_mock_service(hass, "test", "alert")
    recoveries = async_mock_service(hass, "test", "recovered")
    hass.states.async_set(WORKER, "0.4")
    hass.states.async_set(REDIS, "-0.002")
    config = {
        "automation": {
            "use_blueprint": {
                "path": f"{DOMAIN}/drift_alert.yaml",
                "input": {
                    "drift_sensors": [WORKER, REDIS],
                    "alert_action": [
                        {
                            "action": "test.alert",
                            "data": {
                                "worst": "{{ worst }}",
                                "offset": "{{ offset }}",
                                "drifting": "{{ drifting }}",
                            },
                        }
                    ],
                    "recovery_action": [{"action": "test.recovered"}],
                },
            }
        }
    }
    assert await async_setup_component(hass, "automation", config)
    await hass.async_block_till_done()
    return alerts, recoveries


class Clock:
    """Home Assistant's clock and timers, moved forward by hand."""

    def __init__(self, hass: HomeAssistant, freezer: FrozenDateTimeFactory) -> None:
        """Drive the test's frozen time."""
        self.hass = hass
        self.freezer = freezer

    async def advance(self, seconds: float) -> None:
        """Move time on, fire the timers now due, then let the jobs they start run."""
        self.freezer.tick(timedelta(seconds=seconds))
        async_fire_time_changed(self.hass)
        # Not hass.async_block_till_done(): it would wait for the automation run, which
        # stays in its wait_for_trigger until the clocks recover.
        for _ in range(50):
            await asyncio.sleep(0)


@pytest.fixture(name="clock")
def clock_fixture(hass: HomeAssistant, freezer: FrozenDateTimeFactory) -> Clock:
    """Return a clock for the test's Home Assistant."""
    return Clock(hass, freezer)


def test_blueprint_declares_its_inputs() -> None:
    """The blueprint file names its inputs, defaults and selectors as documented."""
    data = load_yaml_dict(BLUEPRINT)
    inputs = data["blueprint"]["input"]
    assert inputs["threshold"]["default"] == 30
    assert inputs["duration"]["default"] == {"minutes": 1}
    selector = inputs["drift_sensors"]["selector"]["entity"]
    assert selector["multiple"] is True
    assert selector["filter"] == [{"integration": DOMAIN, "domain": "sensor"}]


async def test_alert_then_recovery(
    hass: HomeAssistant,
    clock: Clock,
    calls: tuple[list[ServiceCall], list[ServiceCall]],
) -> None:
    """A clock 42 s behind for a minute alerts; back for a minute, it recovers."""
    alerts, recoveries = calls
    hass.states.async_set(WORKER, "-42.0")
    await clock.advance(59)
    assert alerts == []
    await clock.advance(2)
    assert len(alerts) == 1
    assert alerts[0].data == {
        "worst": WORKER,
        "offset": -42.0,
        "drifting": [WORKER],
    }
    assert recoveries == []

    hass.states.async_set(WORKER, "0.3")
    await clock.advance(30)
    assert recoveries == []
    await clock.advance(31)
    assert len(recoveries) == 1
    assert len(alerts) == 1


async def test_no_alert_below_threshold_or_short(
    hass: HomeAssistant,
    clock: Clock,
    calls: tuple[list[ServiceCall], list[ServiceCall]],
) -> None:
    """29.9 s for long, or 45 s for 30 s, alerts nobody."""
    alerts, recoveries = calls
    hass.states.async_set(WORKER, "29.9")
    hass.states.async_set(REDIS, "unavailable")
    await clock.advance(300)
    hass.states.async_set(WORKER, "45")
    await clock.advance(30)
    hass.states.async_set(WORKER, "1")
    await clock.advance(300)
    assert alerts == []
    assert recoveries == []


async def test_any_sensor_counts(
    hass: HomeAssistant,
    clock: Clock,
    calls: tuple[list[ServiceCall], list[ServiceCall]],
) -> None:
    """A second sensor ahead alerts too, and names the worst of the two."""
    alerts, _ = calls
    hass.states.async_set(REDIS, "31")
    hass.states.async_set(WORKER, "-30.5")
    await clock.advance(61)
    assert len(alerts) == 1
    assert alerts[0].data["worst"] == REDIS
    assert alerts[0].data["offset"] == 31.0
    assert sorted(alerts[0].data["drifting"]) == [REDIS, WORKER]

"""Tests for the config entry diagnostics: the report, and no secret in them."""

from __future__ import annotations

import json

from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.components.diagnostics import (
    get_diagnostics_for_config_entry,
)
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator
from syrupy.assertion import SnapshotAssertion

from custom_components.clock_drift.diagnostics import _strip_credentials
from tests.conftest import WORKER, Site, mask


async def test_diagnostics(
    hass: HomeAssistant,
    hass_client: ClientSessionGenerator,
    full_site: Site,
    snapshot: SnapshotAssertion,
) -> None:
    """Test the diagnostics of a full site: redacted settings, report, workers.

    The settings are snapshot (ports and temporary paths masked); readings vary
    with real clocks, so the report is checked by shape and value.
    """
    diagnostics = await get_diagnostics_for_config_entry(
        hass, hass_client, full_site.entry
    )
    dump = json.dumps(diagnostics)
    for secret in ("redis-secret-pw", "broker-secret-pw"):
        assert secret not in dump

    entry = diagnostics["entry"]
    assert isinstance(entry, dict)
    assert {
        "data": {key: mask(value) for key, value in entry["data"].items()},
        "options": entry["options"],
    } == snapshot
    report = diagnostics["report"]
    assert isinstance(report, dict)
    assert report["in_sync"] is False
    assert len(report["readings"]) == 6
    workers = diagnostics["workers"]
    assert isinstance(workers, dict)
    assert list(workers) == [WORKER]
    assert diagnostics["errors"] == {}
    listener = diagnostics["listener"]
    assert isinstance(listener, dict)
    assert listener["connected"] is True
    assert listener["last_error"] is None


def test_strip_credentials() -> None:
    """Test that a URL's user and password are taken out, the rest kept."""
    assert (
        _strip_credentials("tcp://admin:hunter2@127.0.0.1:2376/")
        == "tcp://**REDACTED**@127.0.0.1:2376/"
    )
    assert _strip_credentials("unix:///run/docker.sock") == "unix:///run/docker.sock"

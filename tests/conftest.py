"""Shared fixtures: Home Assistant set-up and the real servers of the test harness."""

from __future__ import annotations

import pytest

# Import the integration at collection time: otherwise `custom_components` resolves to
# the plugin's own testing config and Home Assistant reports "Integration not found".
import custom_components.clock_drift  # noqa: F401

pytest_plugins = ["tests.harness"]


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""

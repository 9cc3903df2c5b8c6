"""Least privilege and secrets: makestep's fixed argv, no credential anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path
import shutil
from typing import Any
from urllib.parse import quote

from homeassistant.config_entries import SOURCE_USER
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import issue_registry as ir
import probatio
import pytest

from custom_components.clock_drift import coordinator as coordinator_module
from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_CHRONY_SOCKET,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    CONNECTION_FIELDS,
    DOMAIN,
)
from custom_components.clock_drift.diagnostics import (
    async_get_config_entry_diagnostics,
)
from tests.conftest import SetupEntry, refresh, wait_for_workers
from tests.harness import (
    ChronyCommandServer,
    NtpServer,
    StartCeleryWorker,
    StartRedis,
)

# Characters that URL quoting changes, so both spellings are searched for.
REDIS_SECRET = "redis#S3cret/pw"
BROKER_SECRET = "broker@S3cret:pw"
WORKER = "secret-test@pi"


@pytest.fixture
def recording_chronyc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the integration at a chronyc that logs its argv, then runs the real one."""
    chronyc = shutil.which("chronyc") or "/usr/bin/chronyc"
    calls = tmp_path / "argv.log"
    wrapper = tmp_path / "chronyc"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\nexec {chronyc} "$@"\n'
    )
    wrapper.chmod(0o755)
    monkeypatch.setattr(coordinator_module, "CHRONYC", str(wrapper))
    return calls


@pytest.mark.parametrize(
    "extra",
    [
        {"command": "settime 2000-01-01"},
        {"container": "timesync"},
        {"socket": "/tmp/other.sock"},
        {"path": "/bin/sh"},
        {"argv": ["-h", "127.0.0.1", "makestep"]},
    ],
)
async def test_makestep_takes_nothing_but_the_entry(  # noqa: PLR0917
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    chrony_command_server: ChronyCommandServer,
    recording_chronyc: Path,
    extra: dict[str, Any],
) -> None:
    """Test makestep refusing any other key, and running only the fixed argv."""
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: ntp_server.address,
            CONF_CHRONY_SOCKET: chrony_command_server.socket_path,
        }
    )
    (key,) = extra
    with pytest.raises(
        probatio.MultipleInvalid, match=f"not a valid option at '{key}'"
    ):
        await hass.services.async_call(
            DOMAIN,
            "makestep",
            {"config_entry_id": entry.entry_id, **extra},
            blocking=True,
            return_response=True,
        )
    before = recording_chronyc.read_text().splitlines()
    assert "makestep" not in " ".join(before)

    # The admin's call runs chronyc with the configured socket and fixed argv only.
    with pytest.raises(HomeAssistantError, match="500 Failure"):
        await hass.services.async_call(
            DOMAIN,
            "makestep",
            {"config_entry_id": entry.entry_id},
            blocking=True,
            return_response=True,
        )
    socket = chrony_command_server.socket_path
    after = recording_chronyc.read_text().splitlines()[len(before) :]
    assert set(after) <= {f"-h {socket} -c tracking", f"-h {socket} makestep"}
    assert f"-h {socket} makestep" in after


def _spellings(*secrets: str) -> list[str]:
    """Return each secret raw and URL-quoted."""
    return [form for secret in secrets for form in (secret, quote(secret, safe=""))]


async def test_no_secret_in_logs_diagnostics_repairs_or_errors(  # noqa: PLR0917
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    start_redis: StartRedis,
    start_celery_worker: StartCeleryWorker,
    issue_registry: ir.IssueRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test a whole run with passwords, failures included: no secret shows anywhere."""
    caplog.set_level(logging.DEBUG)
    redis = start_redis(skew=42, password=REDIS_SECRET)
    broker = start_redis(password=BROKER_SECRET)
    start_celery_worker(broker.url, hostname=WORKER)
    wrong_broker = broker.url.replace(quote(BROKER_SECRET, safe=""), "wrong%23pw")
    shown: list[Any] = []

    # The config flow with wrong passwords, then the right ones.
    flow = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    fields = dict.fromkeys(CONNECTION_FIELDS, "")
    fields[CONF_REDIS_URL] = redis.url.replace(quote(REDIS_SECRET, safe=""), "no")
    fields[CONF_CELERY_BROKER_URL] = wrong_broker
    result = await hass.config_entries.flow.async_configure(flow["flow_id"], fields)
    assert result["errors"] == {
        CONF_REDIS_URL: "invalid_auth",
        CONF_CELERY_BROKER_URL: "invalid_auth",
    }
    shown.append(result)
    fields.update({CONF_REDIS_URL: redis.url, CONF_CELERY_BROKER_URL: broker.url})
    result = await hass.config_entries.flow.async_configure(flow["flow_id"], fields)
    shown.append({"title": result["title"], "options": result.get("options")})
    entry = result["result"]
    await hass.async_block_till_done()
    await wait_for_workers(hass, entry, WORKER)

    # Three cycles out of sync (Redis at +42 s) raise the repair issue.
    for _ in range(3):
        await refresh(hass, entry)
    issues = [i for i in issue_registry.issues.values() if i.domain == DOMAIN]
    assert issues
    shown.append([issue.to_json() for issue in issues])
    shown.append(await async_get_config_entry_diagnostics(hass, entry))

    # Failures: Redis and the broker killed; the errors they give.
    redis.kill()
    broker.kill()
    await refresh(hass, entry)
    await refresh(hass, entry)
    shown.append(await async_get_config_entry_diagnostics(hass, entry))
    shown.append(str(entry.runtime_data.coordinator.last_exception))
    with pytest.raises(HomeAssistantError) as failed:
        await hass.services.async_call(
            DOMAIN,
            "check",
            {"config_entry_id": entry.entry_id},
            blocking=True,
            return_response=True,
        )
    shown.append([str(failed.value), failed.value.translation_placeholders])
    broker.start()
    redis.start()
    await refresh(hass, entry)

    # A second site whose broker password is wrong, at runtime.
    other = await setup_entry(
        {CONF_NTP_SERVERS: ntp_server.address, CONF_CELERY_BROKER_URL: wrong_broker},
        unique_id="other",
    )
    await refresh(hass, other)
    listener = other.runtime_data.listener
    assert listener is not None
    assert listener.last_error is not None
    shown.append(await async_get_config_entry_diagnostics(hass, other))
    states = [state.as_dict() for state in hass.states.async_all()]

    dump = json.dumps(shown, default=str) + json.dumps(states, default=str)
    # The dump does name the servers (and the search would see a password there).
    assert "invalid_auth" in dump
    assert f"127.0.0.1:{redis.port}/0" in dump
    assert f"127.0.0.1:{broker.port}/0" in dump
    for secret in _spellings(REDIS_SECRET, BROKER_SECRET, "wrong#pw"):
        assert secret not in dump, secret
        assert secret not in caplog.text, secret
    assert "Lost Celery heartbeats" in caplog.text

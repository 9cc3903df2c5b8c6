"""The demo behind scripts/develop: the reported incident, live, in Home Assistant.

It starts a local stack on loopback (Redis, a chronyd NTP server, chronyd with a command
socket, a healthy Celery worker and one whose clock runs 42 s ahead under libfaketime,
and Docker containers where a private dockerd can run), then a real Home Assistant with
Clock Drift Monitor already configured against that stack. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from pathlib import Path
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any
import urllib.error
import urllib.parse
import urllib.request

from homeassistant.components.http.config import (
    HTTP_STORAGE_SCHEMA,
    STORAGE_MINOR_VERSION,
    STORAGE_VERSION,
)
from homeassistant.util import dt as dt_util

from tests.harness.servers import (
    BUSYBOX_IMAGE,
    GNUDATE_IMAGE,
    TIMESYNC_IMAGE,
    CeleryWorker,
    ChronyCommandServer,
    DockerDaemon,
    HarnessError,
    NtpServer,
    RedisServer,
)

REPO = Path(__file__).resolve().parents[1]
DEMO_DIR = REPO / ".demo"
CONFIG_DIR = DEMO_DIR / "config"
CLIENT_ID = "http://127.0.0.1:8123/"
USERNAME = "demo"
PASSWORD = "clock-drift-demo"  # noqa: S105 - a local demo's documented login
INCIDENT_SKEW = 42.0
# The names the documentation's examples and docs/dashboard.yaml use.
WORKER = "scan-worker-1@pi"
DASHBOARD = "clock_drift_dashboard.yaml"


def log(message: str) -> None:
    """Print a progress line of the demo."""
    print(f"[demo] {message}", flush=True)


def start_stack(stack: contextlib.ExitStack) -> dict[str, str]:
    """Start the demo's servers on ``stack`` and return the integration's fields."""
    redis = stack.enter_context(RedisServer())
    log(f"Redis on {redis.host}:{redis.port}")
    ntp = stack.enter_context(NtpServer())
    log(f"NTP server (chronyd -x) on {ntp.address}")
    chrony = stack.enter_context(ChronyCommandServer(ntp))
    log(f"chronyd command socket at {chrony.socket_path}")
    stack.enter_context(CeleryWorker(redis.url, hostname="worker-ok@demo"))
    stack.enter_context(CeleryWorker(redis.url, skew=INCIDENT_SKEW, hostname=WORKER))
    log(f"Celery workers: worker-ok@demo, {WORKER} (+{INCIDENT_SKEW:g} s)")
    fields = {
        "ntp_servers": ntp.address,
        "redis_url": redis.url,
        "celery_broker_url": redis.url,
        "chrony_socket": chrony.socket_path,
    }
    try:
        docker = stack.enter_context(DockerDaemon())
    except HarnessError as err:
        log(f"no Docker containers in this demo: {err}")
        return fields
    names = [
        docker.run_container(image, name=name)
        for image, name in (
            (GNUDATE_IMAGE, "app-web"),
            (BUSYBOX_IMAGE, "app-cron"),
            (TIMESYNC_IMAGE, "timesync"),  # chronyd -x; no shell: the daemon's clock
        )
    ]
    log(f"dockerd at {docker.url} with containers {', '.join(names)}")
    fields["docker_url"] = docker.url
    return fields


def write_config() -> None:
    """Write a fresh Home Assistant configuration that listens on loopback only."""
    shutil.rmtree(CONFIG_DIR, ignore_errors=True)
    (CONFIG_DIR / ".storage").mkdir(parents=True)
    (CONFIG_DIR / "configuration.yaml").write_text(
        (REPO / "config/configuration.yaml").read_text()
        + "\nlovelace:\n  dashboards:\n    clock-drift:\n      mode: yaml\n"
        + "      title: Clock drift\n      icon: mdi:clock-alert-outline\n"
        + "      show_in_sidebar: true\n"
        + f"      filename: {DASHBOARD}\n"
    )
    # The HTTP settings live in Home Assistant's store (YAML `http:` is deprecated).
    stable = HTTP_STORAGE_SCHEMA({"server_host": ["127.0.0.1"]})
    stable |= {"created_at": dt_util.utcnow().isoformat(), "error": None}
    stable["error_message"] = None
    (CONFIG_DIR / ".storage/http").write_text(
        json.dumps(
            {
                "version": STORAGE_VERSION,
                "minor_version": STORAGE_MINOR_VERSION,
                "key": "http",
                "data": {
                    "stable": stable,
                    "pending": None,
                    "yaml_migration_done": True,
                },
            }
        )
    )


def write_dashboard(entry_id: str) -> None:
    """Install docs/dashboard.yaml with the demo's entry in its makestep button."""
    text = (REPO / "docs/dashboard.yaml").read_text()
    (CONFIG_DIR / DASHBOARD).write_text(text.replace("YOUR_CONFIG_ENTRY_ID", entry_id))


def request(
    path: str, data: dict[str, Any] | None = None, token: str | None = None
) -> Any:
    """Call Home Assistant's HTTP API on loopback and return the decoded answer."""
    body = json.dumps(data).encode() if data is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:8123{path}", data=body, headers=headers
    )
    with urllib.request.urlopen(req, timeout=30) as answer:  # noqa: S310
        return json.loads(answer.read() or b"null")


def form_request(path: str, data: dict[str, str]) -> Any:
    """POST a form to Home Assistant (the auth endpoints take forms)."""
    body = urllib.parse.urlencode(data).encode()
    req = urllib.request.Request(f"http://127.0.0.1:8123{path}", data=body)
    with urllib.request.urlopen(req, timeout=30) as answer:  # noqa: S310
        return json.loads(answer.read())


def wait_for_home_assistant(hass: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until Home Assistant's onboarding API answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if hass.poll() is not None:
            raise SystemExit(f"Home Assistant exited with status {hass.returncode}")
        with contextlib.suppress(OSError, urllib.error.URLError):
            request("/api/onboarding")
            return
        time.sleep(0.5)
    raise SystemExit("Home Assistant did not answer on http://127.0.0.1:8123")


def onboard() -> str:
    """Create the demo user through the onboarding API and return an access token."""
    created = request(
        "/api/onboarding/users",
        {
            "client_id": CLIENT_ID,
            "name": "Demo",
            "username": USERNAME,
            "password": PASSWORD,
            "language": "en",
        },
    )
    tokens = form_request(
        "/auth/token",
        {
            "grant_type": "authorization_code",
            "code": created["auth_code"],
            "client_id": CLIENT_ID,
        },
    )
    token: str = tokens["access_token"]
    request("/api/onboarding/core_config", {}, token)
    request("/api/onboarding/analytics", {}, token)
    request(
        "/api/onboarding/integration",
        {"client_id": CLIENT_ID, "redirect_uri": CLIENT_ID},
        token,
    )
    (DEMO_DIR / "tokens.json").write_text(json.dumps(tokens))
    return token


def add_integration(token: str, fields: dict[str, str]) -> str:
    """Add Clock Drift Monitor through its config flow, as a user would."""
    flow = request("/api/config/config_entries/flow", {"handler": "clock_drift"}, token)
    result = request(
        f"/api/config/config_entries/flow/{flow['flow_id']}", fields, token
    )
    if result.get("type") != "create_entry":
        raise SystemExit(f"the config flow did not create the entry: {result}")
    log(f"Clock Drift Monitor configured: {result['title']}")
    entry_id: str = result["result"]["entry_id"]
    return entry_id


def main() -> int:
    """Run the demo until Home Assistant stops or Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--exit-after",
        type=float,
        default=None,
        help="stop after this many seconds once configured (for checks)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8123)) == 0:
            log("port 8123 is taken: stop the Home Assistant that runs there first")
            return 1
    with contextlib.ExitStack() as stack:
        stack.callback(log, "stopped the stack")
        fields = start_stack(stack)
        write_config()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        hass = subprocess.Popen(
            [str(REPO / ".venv/bin/hass"), "--config", str(CONFIG_DIR)],
            env=env,
            cwd=REPO,
        )
        try:
            wait_for_home_assistant(hass, timeout=180)
            write_dashboard(add_integration(onboard(), fields))
            log("open http://127.0.0.1:8123/clock-drift")
            log(f"log in as {USERNAME} / {PASSWORD}; Ctrl-C stops everything")
            hass.wait(timeout=args.exit_after)
        except subprocess.TimeoutExpired:
            pass
        except KeyboardInterrupt:
            pass
        finally:
            hass.send_signal(signal.SIGTERM)
            try:
                hass.wait(timeout=60)
            except subprocess.TimeoutExpired:
                hass.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())

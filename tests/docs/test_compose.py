"""The recommended docker-compose.yml: valid Compose, and the properties it promises."""

from __future__ import annotations

import json
from pathlib import Path
import re
from typing import Any

import jsonschema
import pytest
import yaml

# Imported first so `custom_components` resolves to this repository's.
import custom_components.clock_drift  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
# Vendored from the Compose Specification (see compose-spec.NOTICE): the schema Docker
# Compose validates with. The Docker client here has no compose plugin.
SCHEMA = Path(__file__).with_name("compose-spec.json")

# Every request Clock Drift Monitor makes to Docker (aiodocker): API version discovery,
# the daemon's clock, container listing and inspection, exec create/start/inspect.
NEEDED = [
    ("HEAD", "/_ping"),
    ("GET", "/_ping"),
    ("GET", "/version"),
    ("GET", "/v1.47/info"),
    ("GET", "/v1.47/containers/json"),
    ("GET", "/v1.47/containers/timesync/json"),
    ("GET", "/v1.47/containers/0123abcdef/json"),
    ("POST", "/v1.47/containers/scan-worker-1/exec"),
    ("POST", "/v1.47/exec/9f86d081884c7d659a2feaa0c55ad015/start"),
    ("GET", "/v1.47/exec/9f86d081884c7d659a2feaa0c55ad015/json"),
]
# What would give Home Assistant more than reading clocks.
REFUSED = [
    ("POST", "/v1.47/containers/create"),
    ("POST", "/containers/create"),
    ("POST", "/v1.47/containers/timesync/start"),
    ("POST", "/v1.47/containers/timesync/stop"),
    ("POST", "/v1.47/containers/timesync/kill"),
    ("POST", "/v1.47/containers/timesync/restart"),
    ("POST", "/v1.47/containers/timesync/update"),
    ("POST", "/v1.47/containers/timesync/archive"),
    ("PUT", "/v1.47/containers/timesync/archive"),
    ("DELETE", "/v1.47/containers/timesync"),
    ("POST", "/v1.47/images/create"),
    ("POST", "/v1.47/build"),
    ("POST", "/v1.47/exec/9f86d081/resize"),
    ("GET", "/v1.47/containers/timesync/archive"),
    ("GET", "/v1.47/containers/timesync/export"),
    ("GET", "/v1.47/containers/timesync/logs"),
    ("GET", "/v1.47/secrets"),
    ("GET", "/v1.47/containers/json/../../secrets"),
    ("POST", "/v1.47/volumes/create"),
    ("POST", "/v1.47/swarm/init"),
]
INSTALL = re.compile(r"\b(apk\s+add|apt(-get)?\s+install|pip\s+install|yum|dnf)\b")


@pytest.fixture(name="compose", scope="module")
def compose_fixture() -> dict[str, Any]:
    """Return the parsed compose file."""
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def validate(document: dict[str, Any]) -> None:
    """Validate a compose document against the Compose Specification's schema."""
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    # The schema names draft-07 by a URL jsonschema does not map; it is draft-07.
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(document)


def proxy_rules(compose: dict[str, Any]) -> dict[str, re.Pattern[str]]:
    """Return the proxy's allow rules by method, anchored as the proxy anchors them."""
    rules: dict[str, re.Pattern[str]] = {}
    for argument in compose["services"]["docker-proxy"]["command"]:
        if match := re.fullmatch(r"-allow([A-Z]+)=(.*)", argument):
            rules[match[1]] = re.compile(f"^{match[2]}$")
    return rules


def allowed(rules: dict[str, re.Pattern[str]], method: str, path: str) -> bool:
    """Return whether the proxy would pass a request (its check: method, then path)."""
    return method in rules and rules[method].match(path) is not None


def test_schema_valid(compose: dict[str, Any]) -> None:
    """The file is valid Compose: the spec's own JSON schema accepts it."""
    validate(compose)


def test_schema_rejects_mistakes(compose: dict[str, Any]) -> None:
    """The schema check fails on a misspelt key and on a wrong type."""
    misspelt = json.loads(json.dumps(compose))
    misspelt["services"]["timesync"]["cap-add"] = ["SYS_TIME"]
    with pytest.raises(jsonschema.ValidationError):
        validate(misspelt)
    wrong_type = json.loads(json.dumps(compose))
    wrong_type["services"]["timesync"]["cap_add"] = "SYS_TIME"
    with pytest.raises(jsonschema.ValidationError):
        validate(wrong_type)


def test_timesync_least_privilege(compose: dict[str, Any]) -> None:
    """Chrony gets SYS_TIME and nothing more; its config is mounted read-only."""
    timesync = compose["services"]["timesync"]
    assert timesync["cap_add"] == ["SYS_TIME"]
    assert "privileged" not in timesync
    assert "./docs/chrony.conf:/etc/chrony/chrony.conf:ro" in timesync["volumes"]
    assert timesync["healthcheck"]["test"] == ["CMD", "chronyc", "tracking"]
    assert "command" not in timesync
    dockerfile = (ROOT / timesync["build"] / "Dockerfile").read_text(encoding="utf-8")
    assert "/etc/chrony/chrony.conf" in dockerfile
    assert "apk add --no-cache chrony" in dockerfile


def test_no_install_at_start(compose: dict[str, Any]) -> None:
    """No service installs packages or writes its config when it starts."""
    for name, service in compose["services"].items():
        for key in ("command", "entrypoint"):
            text = json.dumps(service.get(key, ""))
            assert not INSTALL.search(text), (name, key)
            assert ">>" not in text, (name, key)


def test_celery_time_zone(compose: dict[str, Any]) -> None:
    """Worker and beat get TZ, the host's zone file read-only, and the Celery config."""
    zones = set()
    for name in ("worker", "beat"):
        service = compose["services"][name]
        assert service["environment"]["TZ"], name
        zones.add(service["environment"]["TZ"])
        assert "/etc/localtime:/etc/localtime:ro" in service["volumes"]
        assert "./docs/celeryconfig.py:/app/celeryconfig.py:ro" in service["volumes"]
        assert "--config celeryconfig" in service["command"]
    zones.add(compose["services"]["homeassistant"]["environment"]["TZ"])
    assert len(zones) == 1


def test_home_assistant_uses_the_proxy(compose: dict[str, Any]) -> None:
    """HA reaches Docker through the proxy on loopback, never through the raw socket."""
    ha = compose["services"]["homeassistant"]
    assert ha["network_mode"] == "host"
    assert ha["environment"]["DOCKER_HOST"] == "tcp://127.0.0.1:2375"
    assert not any("docker.sock" in volume for volume in ha["volumes"])
    proxy = compose["services"]["docker-proxy"]
    assert proxy["ports"] == ["127.0.0.1:2375:2375"]
    assert proxy["volumes"] == ["/var/run/docker.sock:/var/run/docker.sock:ro"]
    assert proxy["cap_drop"] == ["ALL"]
    sockets = [
        name
        for name, service in compose["services"].items()
        if any("docker.sock" in volume for volume in service.get("volumes", []))
    ]
    assert sockets == ["docker-proxy"]
    subnet = compose["networks"]["docker-proxy"]["ipam"]["config"][0]["subnet"]
    assert f"-allowfrom={subnet}" in proxy["command"]


@pytest.mark.parametrize(("method", "path"), NEEDED)
def test_proxy_allows_what_the_integration_uses(
    compose: dict[str, Any], method: str, path: str
) -> None:
    """Every request of the Docker and chrony probes passes the proxy."""
    assert allowed(proxy_rules(compose), method, path)


@pytest.mark.parametrize(("method", "path"), REFUSED)
def test_proxy_refuses_the_rest(
    compose: dict[str, Any], method: str, path: str
) -> None:
    """Requests that could change the host are refused."""
    assert not allowed(proxy_rules(compose), method, path)


def test_only_exec_may_post(compose: dict[str, Any]) -> None:
    """POST is allowed for exec create and start only."""
    rules = proxy_rules(compose)
    assert set(rules) == {"GET", "HEAD", "POST"}
    assert "exec" in rules["POST"].pattern
    assert "create" not in rules["POST"].pattern

"""Every snippet of docs/*.md parses or runs, and names what the integration has."""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path
import re
import shlex
import subprocess
import sys
from typing import Any

from homeassistant.components.automation.config import async_validate_config_item
from homeassistant.core import HomeAssistant
import homeassistant.helpers.config_validation as cv
from homeassistant.util import slugify
from homeassistant.util.yaml import parse_yaml
import pytest
import yaml

from custom_components.clock_drift.const import CONNECTION_FIELDS, DOMAIN
from tests.harness import StartRedis

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
INTEGRATION = ROOT / "custom_components" / DOMAIN
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(
    r"(?:<!-- test: (?P<marker>[^>]*) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```",
    re.DOTALL,
)
ENTITY_ID = re.compile(r"\b(?:binary_sensor|sensor)\.[a-z0-9_]+\b")
LINK = re.compile(r"\]\(([^)#:]+)(?:#[^)]*)?\)")
# Devices named after the stack's things in the docs' examples (a container, a worker).
EXAMPLE_DEVICES = frozenset({"timesync", "scan_worker_1_pi"})
DOCUMENTED_REDIS = "redis://127.0.0.1:6379/0"
SKEW = 42.0


@dataclass(frozen=True, slots=True)
class Snippet:
    """A fenced block of a page, with the test marker written above it."""

    page: str
    lang: str
    body: str
    marker: str | None

    def __str__(self) -> str:
        """Name the snippet in test ids."""
        return f"{self.page}:{self.lang}:{self.body[:40]!r}"


def snippets(lang: str) -> list[Snippet]:
    """Return every fenced block of the given language in docs/*.md."""
    return [
        Snippet(page.name, match["lang"], match["body"], match["marker"])
        for page in PAGES
        for match in FENCE.finditer(page.read_text(encoding="utf-8"))
        if match["lang"] == lang
    ]


def entity_names() -> tuple[set[str], set[str]]:
    """Return the slugs of the integration's device names and entity names."""
    strings = json.loads((INTEGRATION / "strings.json").read_text(encoding="utf-8"))
    devices = {slugify(device["name"]) for device in strings["device"].values()}
    entities = {
        slugify(entity["name"])
        for platform in strings["entity"].values()
        for entity in platform.values()
    }
    return devices | EXAMPLE_DEVICES, entities


def services() -> set[str]:
    """Return the integration's actions as ``clock_drift.NAME``."""
    data = yaml.safe_load((INTEGRATION / "services.yaml").read_text(encoding="utf-8"))
    return {f"{DOMAIN}.{name}" for name in data}


def actions_in(node: Any) -> list[str]:
    """Return every ``clock_drift.*`` action a parsed YAML document calls."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"action", "perform_action"} and isinstance(value, str):
                found.extend([value] if value.startswith(f"{DOMAIN}.") else [])
            found.extend(actions_in(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(actions_in(item))
    return found


def test_pages_exist() -> None:
    """The documentation has every page the README and the index promise."""
    names = {page.name for page in PAGES}
    assert names >= {
        "index.md",
        "installation.md",
        "configuration.md",
        "entities.md",
        "services.md",
        "repairs.md",
        "troubleshooting.md",
        "limitations.md",
        "removal.md",
        "cli.md",
    }


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_links_resolve(page: Path) -> None:
    """Every relative link of a page points at a file of the repository."""
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        assert (page.parent / target).exists(), target


@pytest.mark.parametrize("snippet", snippets("yaml"), ids=str)
def test_yaml_snippet_parses(snippet: Snippet) -> None:
    """A YAML snippet parses with PyYAML and with Home Assistant's loader."""
    plain = yaml.safe_load(snippet.body)
    assert parse_yaml(snippet.body) == plain
    for action in actions_in(plain):
        assert action in services(), action
    if isinstance(plain, dict) and "action" in plain:
        cv.script_action(plain)
    if snippet.page == "configuration.md":
        assert set(plain) <= set(CONNECTION_FIELDS), set(plain) - set(CONNECTION_FIELDS)


async def test_automation_snippets_validate(hass: HomeAssistant) -> None:
    """An automation in the docs passes Home Assistant's own automation validation."""
    automations = [
        yaml.safe_load(snippet.body)
        for snippet in snippets("yaml")
        if "triggers:" in snippet.body
    ]
    assert automations
    for automation in automations:
        assert await async_validate_config_item(hass, "docs", automation) is not None


def test_entity_ids_match_the_integration() -> None:
    """Every entity id the docs and the dashboard name is one the integration makes."""
    devices, entities = entity_names()
    texts = [page.read_text(encoding="utf-8") for page in PAGES]
    texts.append((DOCS / "dashboard.yaml").read_text(encoding="utf-8"))
    seen = {entity_id for text in texts for entity_id in ENTITY_ID.findall(text)}
    assert len(seen) > 10
    for entity_id in seen:
        object_id = entity_id.split(".", 1)[1]
        assert any(
            object_id == f"{device}_{entity}"
            for device in devices
            for entity in entities
        ), entity_id


def test_dashboard() -> None:
    """The dashboard parses and has the promised cards, wired to real names."""
    text = (DOCS / "dashboard.yaml").read_text(encoding="utf-8")
    dashboard: dict[str, Any] = yaml.safe_load(text)
    assert parse_yaml(text) == dashboard
    cards = {card["type"]: card for card in dashboard["views"][0]["cards"]}
    assert cards["tile"]["entity"] == "binary_sensor.clock_drift_summary_in_sync"
    history = [entry["entity"] for entry in cards["history-graph"]["entities"]]
    assert all(entity_id.endswith("_offset") for entity_id in history)
    assert len(history) >= 5
    worst = cards["entities"]["entities"][0]["entity"]
    assert worst == "sensor.clock_drift_summary_largest_drift"
    tap = cards["button"]["tap_action"]
    assert tap["action"] == "perform-action"
    assert tap["perform_action"] == f"{DOMAIN}.makestep"
    assert actions_in(dashboard) == [f"{DOMAIN}.makestep"]
    assert f"{DOMAIN}.makestep" in services()


@pytest.mark.parametrize("snippet", snippets("json"), ids=str)
def test_json_snippet_parses(snippet: Snippet) -> None:
    """A JSON snippet is valid JSON."""
    json.loads(snippet.body)


def test_every_shell_snippet_is_run_or_says_why_not() -> None:
    """Each shell block is marked: run by the next test, or why it cannot run here."""
    blocks = snippets("bash")
    assert blocks
    for snippet in blocks:
        assert snippet.marker is not None, snippet
        assert re.fullmatch(r"run exit=\d|not run \(.+\)", snippet.marker), snippet


@pytest.mark.usefixtures("real_sockets")
@pytest.mark.parametrize(
    "snippet",
    [s for s in snippets("bash") if (s.marker or "").startswith("run")],
    ids=str,
)
def test_shell_snippet_runs(snippet: Snippet, start_redis: StartRedis) -> None:
    """Run a marked command; the documented Redis is a real one 42 s ahead."""
    body = snippet.body
    if DOCUMENTED_REDIS in body:
        body = body.replace(DOCUMENTED_REDIS, start_redis(skew=SKEW).url)
    argv = shlex.split(body)
    assert argv[0] == "python"
    result = subprocess.run(
        [sys.executable, *argv[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert snippet.marker is not None
    assert result.returncode == int(snippet.marker.removeprefix("run exit=")), (
        result.stderr
    )
    if "--json" in argv:
        report = json.loads(result.stdout)
        documented = json.loads(snippets("json")[0].body)
        assert report.keys() == documented.keys()
        assert report["readings"][0].keys() == documented["readings"][0].keys()
        assert abs(report["readings"][0]["offset"] - SKEW) < 0.5

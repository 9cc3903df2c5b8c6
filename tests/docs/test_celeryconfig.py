"""docs/celeryconfig.py: only real Celery settings, and a real worker runs with it."""

from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path
import time
from types import ModuleType
from typing import Any, override

from celery import Celery
from celery.app.defaults import SETTING_KEYS
import pytest

from custom_components.clock_drift.probes.celery import HeartbeatListener
from tests.harness import StartRedis
from tests.harness.servers import CeleryWorker

CONFIG = "docs.celeryconfig"
DOCS = Path(__file__).resolve().parents[2] / "docs"
# Bookkeeping Celery's Settings object stores among the keys (celery/app/utils.py).
CELERY_INTERNAL = frozenset({"deprecated_settings"})
SKEW = 42.0


def unknown_settings(app: Celery) -> set[str]:
    """Return the names an app's configuration holds that Celery does not know."""
    return {
        key
        for key in app.conf
        if not key.startswith("_")
        and key not in SETTING_KEYS
        and key not in CELERY_INTERNAL
        and not isinstance(app.conf[key], ModuleType)
    }


def load(source: str | ModuleType) -> Celery:
    """Return a real Celery app configured from a module, as an application does."""
    app = Celery("docs_check", set_as_current=False)
    app.config_from_object(source)
    return app


def test_every_key_is_a_celery_setting() -> None:
    """Every name in the shipped config is a Celery setting, and the app takes it."""
    app = load(CONFIG)
    assert unknown_settings(app) == set()
    module = importlib.import_module(CONFIG)
    names = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert len(names) >= 15
    for name in names:
        assert app.conf[name] == getattr(module, name), name
    assert app.conf.enable_utc is True
    assert app.conf.task_acks_late is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_soft_time_limit < app.conf.task_time_limit
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility > app.conf.task_time_limit


def test_check_catches_the_users_settings() -> None:
    """The check names the settings the users were given, which Celery ignores."""
    wrong = ModuleType("users_fix")
    wrong.worker_clock_sync_interval = 60  # type: ignore[attr-defined]
    wrong.task_time_limit = 7200  # type: ignore[attr-defined]
    wrong.task_soft_time_limit = 6900  # type: ignore[attr-defined]
    wrong.task_default_retry_delay = 10  # type: ignore[attr-defined]
    wrong.task_max_retries = 3  # type: ignore[attr-defined]
    app = load(wrong)
    assert unknown_settings(app) == {
        "worker_clock_sync_interval",
        "task_default_retry_delay",
        "task_max_retries",
    }
    # Celery takes them without a word: that is why the fix looked applied.
    assert app.conf["worker_clock_sync_interval"] == 60


def test_retries_are_task_attributes() -> None:
    """What the config's comment recommends for retries is accepted by @app.task."""
    app = load(CONFIG)

    @app.task(  # type: ignore[untyped-decorator]
        autoretry_for=(ConnectionError,),
        retry_backoff=True,
        retry_backoff_max=600,
        retry_jitter=True,
        max_retries=5,
    )
    def fetch() -> None:
        """Stand for a task that talks to a flaky service."""

    assert fetch.max_retries == 5
    assert fetch.autoretry_for == (ConnectionError,)
    assert fetch.retry_backoff is True


class ConfiguredWorker(CeleryWorker):
    """The harness's real worker, given the config as compose does: ``--config``."""

    @override
    def command(self) -> list[str]:
        """Return the harness argv plus ``--config celeryconfig``."""
        argv = super().command()
        at = argv.index("celery") + 1
        return [*argv[:at], "--config", "celeryconfig", *argv[at:]]

    @override
    def environment(self) -> dict[str, str]:
        """Return the harness environment, docs/ on the path, the broker to read."""
        env = super().environment()
        # Compose mounts docs/celeryconfig.py into the worker's directory instead.
        env["PYTHONPATH"] = os.pathsep.join([str(DOCS), env["PYTHONPATH"]])
        env["CELERY_BROKER_URL"] = self.broker_url
        return env


@pytest.mark.usefixtures("real_sockets")
async def test_worker_heartbeats_reach_the_listener(start_redis: StartRedis) -> None:
    """A worker on the shipped config, 42 s ahead, is read by the integration."""
    redis = start_redis()
    worker = ConfiguredWorker(redis.url, skew=SKEW, hostname="docs-worker@harness")
    listener = HeartbeatListener(redis.url)
    await listener.start()
    try:
        await asyncio.to_thread(worker.start)
        state = None
        deadline = time.monotonic() + 30
        while state is None:
            assert time.monotonic() < deadline, listener.last_error
            await asyncio.sleep(0.2)
            state = listener.workers().get("docs-worker@harness")
        assert abs(state.offset - SKEW) < 0.5
        assert state.freq == 2.0
        conf = await asyncio.to_thread(worker_conf, redis.url, worker.hostname)
        assert conf["task_acks_late"] is True
        assert conf["worker_prefetch_multiplier"] == 1
        assert conf["worker_send_task_events"] is True
    finally:
        await listener.stop()
        await asyncio.to_thread(worker.stop)


def worker_conf(broker_url: str, hostname: str) -> dict[str, Any]:
    """Ask a running worker which settings it runs with (remote control)."""
    app = Celery("docs_inspect", broker=broker_url, set_as_current=False)
    try:
        replies = app.control.inspect(destination=[hostname], timeout=5).conf()
    finally:
        app.close()
    if not replies:
        pytest.fail(f"{hostname} did not answer `inspect conf`")
    conf: dict[str, Any] = replies[hostname]
    return conf

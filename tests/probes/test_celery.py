"""Tests of the Celery heartbeat listener against a real Redis and real workers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
import json
import logging
import math
import os
from pathlib import Path
import signal
import subprocess
import sys
import time
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest
import redis.asyncio as aioredis

from custom_components.clock_drift.probes import celery as celery_probe
from custom_components.clock_drift.probes.celery import (
    HeartbeatListener,
    WorkerState,
    broker_db,
    broker_name,
    celery_utcoffset,
    decode_event,
    sanitize_hostname,
)
from custom_components.clock_drift.probes.model import ClockKind
from tests.harness import RedisServer, StartCeleryWorker, StartRedis
from tests.harness.servers import free_port

CHANNEL = "/0.celeryev/worker.heartbeat"


def envelope(body: Any, *, encode: bool = True, **extra: Any) -> bytes:
    """Return a kombu JSON envelope around an event body, as Celery publishes it."""
    raw = json.dumps(body).encode()
    message = {
        "body": base64.b64encode(raw).decode() if encode else body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"hostname": body.get("hostname") if isinstance(body, dict) else 0},
        "properties": {
            "delivery_info": {
                "exchange": "celeryev",
                "routing_key": "worker.heartbeat",
            },
            "body_encoding": "base64" if encode else None,
            "delivery_tag": "x",
        },
    }
    message.update(extra)
    return json.dumps(message).encode()


def heartbeat(hostname: str, timestamp: float, **fields: Any) -> dict[str, Any]:
    """Return a worker-heartbeat body like Celery 5.7 sends."""
    body = {
        "type": "worker-heartbeat",
        "hostname": hostname,
        "timestamp": timestamp,
        "utcoffset": 0.0,
        "freq": 2.0,
        "active": 0,
        "processed": 3,
        "loadavg": [0.1, 0.2, 0.3],
        "sw_ver": "5.7.0",
        "sw_ident": "py-celery",
        "sw_sys": "Linux",
        "pid": 1,
        "clock": 1,
    }
    body.update(fields)
    return body


async def wait_for[T](
    check: Callable[[], T | None], timeout: float = 20.0, step: float = 0.05
) -> T:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


@pytest.fixture
async def listen() -> AsyncIterator[Callable[..., Awaitable[HeartbeatListener]]]:
    """Return a factory of started listeners, stopped at teardown."""
    started: list[HeartbeatListener] = []

    async def make(url: str, **kwargs: Any) -> HeartbeatListener:
        """Start a listener and wait until it is subscribed."""
        listener = HeartbeatListener(url, **kwargs)
        started.append(listener)
        await listener.start()
        await wait_for(lambda: listener.connected)
        return listener

    yield make
    for listener in started:
        await listener.stop()


@pytest.fixture
async def publisher(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    """Return a real Redis client on the test broker."""
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_worker_at_plus_42_and_worker_in_tokyo(
    redis_server: RedisServer,
    start_celery_worker: StartCeleryWorker,
    listen: Callable[..., Awaitable[HeartbeatListener]],
) -> None:
    """A worker 42 s ahead reads 42 s at once; a Tokyo worker's offset is flagged."""
    listener = await listen(redis_server.url, local_utcoffset=lambda: 0.0)
    # Start the workers in threads: the loop must stay free to timestamp arrivals.
    skewed, tokyo = await asyncio.gather(
        asyncio.to_thread(
            start_celery_worker, redis_server.url, skew=42, hostname="scan-1@pi"
        ),
        asyncio.to_thread(
            start_celery_worker, redis_server.url, tz="Asia/Tokyo", hostname="jp@pi"
        ),
    )

    state = await wait_for(lambda: listener.workers().get(skewed.hostname))
    assert state.heartbeats <= 2
    assert abs(state.offset - 42) <= 0.05
    assert state.offset <= 42 + 1e-3  # transport delay only ever makes it smaller
    assert abs(state.offset - 42) <= state.uncertainty
    assert not state.utcoffset_mismatch
    assert state.utcoffset == 0
    assert state.sw_ver is not None
    assert state.sw_ver.startswith("5.")
    assert state.freq == 2.0
    assert state.online(time.time())

    tokyo_state = await wait_for(lambda: listener.workers().get(tokyo.hostname))
    assert tokyo_state.utcoffset == -9  # Celery counts hours west of UTC
    assert tokyo_state.utcoffset_hours == -9.0
    assert tokyo_state.utcoffset_mismatch
    assert abs(tokyo_state.offset) <= tokyo_state.uncertainty

    readings = {reading.name: reading for reading in listener.readings()}
    assert readings[skewed.hostname].kind is ClockKind.CELERY
    assert readings[skewed.hostname].ok
    assert readings[skewed.hostname].offset == pytest.approx(42, abs=0.05)

    # A warm shutdown sends worker-offline: the worker is marked gone.
    await asyncio.to_thread(skewed.stop)
    gone = await wait_for(
        lambda: (s := listener.workers()[skewed.hostname]).offline and s
    )
    assert not gone.online(time.time())
    offline = {reading.name: reading for reading in listener.readings()}
    assert offline[skewed.hostname].error == "the worker went offline"
    assert offline[tokyo.hostname].ok


async def test_malformed_messages_are_ignored(
    redis_server: RedisServer,
    publisher: aioredis.Redis,
    listen: Callable[..., Awaitable[HeartbeatListener]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Garbage published on the real broker is dropped; the listener keeps working."""
    listener = await listen(redis_server.url)
    now = time.time()
    bad = [
        b"\x00\xff\xfe random bytes",
        b"{not json",
        b"[1, 2, 3]",
        json.dumps(
            {"body": "!!!not base64!!!", "properties": {"body_encoding": "base64"}}
        ).encode(),
        json.dumps({"body": 12, "properties": {"body_encoding": "base64"}}).encode(),
        envelope(
            heartbeat("x@y", now), **{"content-type": "application/x-python-serialize"}
        ),
        envelope({"type": "worker-heartbeat"}),
        envelope(heartbeat("x@y", "yesterday")),
        envelope(heartbeat(["x"], now)),
        envelope(heartbeat("", now)),
        envelope(heartbeat("x@y", now, type=["worker-heartbeat"])),
        envelope(heartbeat("x@y", now, type="task-succeeded")),
        envelope(heartbeat("x@y", 1e300)),
        envelope(heartbeat("x@y", -5.0)),
        envelope(heartbeat("x@y", True)),
        envelope(["not", "a", "dict"]),
        b'{"body": "' + b"A" * (1 << 20) + b'"}',
        b"[" * 60000,
    ]
    bad.append(
        json.dumps(
            {
                "body": base64.b64encode(b'{"timestamp": NaN}').decode(),
                "properties": {"body_encoding": "base64"},
            }
        ).encode()
    )
    plain = envelope(heartbeat("x@y", now), encode=False)
    bad.append(plain.replace(json.dumps(now).encode(), b"Infinity"))
    with caplog.at_level(logging.DEBUG, logger=celery_probe.__name__):
        for message in bad:
            await publisher.publish(CHANNEL, message)
        await publisher.publish(
            CHANNEL,
            envelope(
                heartbeat(
                    "<script>evil\x1b[31m\n@host",
                    time.time() + 5,
                    freq="fast",
                    utcoffset=math.inf,
                    active=-1,
                    processed=True,
                    loadavg=[1, "x"],
                    sw_ver=None,
                )
            ),
        )
        state = await wait_for(lambda: next(iter(listener.workers().values()), None))
    assert list(listener.workers()) == ["_script_evil_[31m_@host"]
    assert state.offset == pytest.approx(5, abs=0.05)
    assert state.freq == 2.0
    assert state.utcoffset is None
    assert not state.utcoffset_mismatch
    assert (state.active, state.processed, state.loadavg, state.sw_ver) == (
        None,
        None,
        None,
        None,
    )
    assert listener.connected
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "malformed" in warnings[0].getMessage()
    debug = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(debug) == len(bad)


async def test_listener_reconnects_after_redis_restart(
    redis_server: RedisServer,
    listen: Callable[..., Awaitable[HeartbeatListener]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker outage is logged once; the listener resubscribes when it is back."""
    listener = await listen(redis_server.url)
    with caplog.at_level(logging.INFO, logger=celery_probe.__name__):
        await asyncio.to_thread(redis_server.stop)
        await wait_for(lambda: not listener.connected)
        await asyncio.sleep(3.5)  # several retries fail meanwhile
        assert listener.last_error is not None
        await asyncio.to_thread(redis_server.start)
        await wait_for(lambda: listener.connected, timeout=15)
    assert listener.last_error is None
    lost = [r for r in caplog.records if "Lost Celery heartbeats" in r.getMessage()]
    assert len(lost) == 1
    assert any("again" in r.getMessage() for r in caplog.records)

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.publish(CHANNEL, envelope(heartbeat("back@host", time.time())))
    finally:
        await client.aclose()
    await wait_for(lambda: listener.workers().get("back@host"))


async def test_wrong_password_is_reported_without_it(
    start_redis: StartRedis,
    listen: Callable[..., Awaitable[HeartbeatListener]],
) -> None:
    """A refused password shows in last_error, the password itself never."""
    server = start_redis(password="right-horse")
    url = server.url.replace("right-horse", "wrong-battery")
    listener = HeartbeatListener(url)
    assert "wrong-battery" not in listener.name
    await listener.start()
    try:
        error = await wait_for(lambda: listener.last_error)
        assert "wrong-battery" not in error
        assert not listener.connected
    finally:
        await listener.stop()
    good = await listen(server.url)
    assert good.connected


async def test_auth_failed_only_when_credentials_are_refused(
    start_redis: StartRedis,
) -> None:
    """auth_failed: set by a refused password or channel, not by an outage; cleared."""
    server = start_redis(password="right-horse")
    admin = aioredis.Redis.from_url(server.url)
    await admin.execute_command(
        "ACL", "SETUSER", "no-events", "on", ">no-events-pw", "resetchannels", "+@all"
    )
    base = f"127.0.0.1:{server.port}/0"
    listeners = {
        "wrong": HeartbeatListener(f"redis://:wrong-battery@{base}"),
        "none": HeartbeatListener(f"redis://{base}"),
        "no_channels": HeartbeatListener(f"redis://no-events:no-events-pw@{base}"),
        "closed": HeartbeatListener(f"redis://127.0.0.1:{free_port()}/0"),
        "next": HeartbeatListener(f"redis://:next-horse@{base}"),
    }
    try:
        for listener in listeners.values():
            assert not listener.auth_failed
            await listener.start()
        for listener in listeners.values():
            await wait_for(lambda listener=listener: listener.last_error)
        assert {key for key, item in listeners.items() if item.auth_failed} == {
            "wrong",
            "none",
            "no_channels",
            "next",
        }
        # The server takes the listener's password: it subscribes and clears the flag.
        await admin.config_set("requirepass", "next-horse")
        server.password = "next-horse"
        await wait_for(lambda: listeners["next"].connected, timeout=15)
        assert not listeners["next"].auth_failed
    finally:
        await admin.aclose()
        for listener in listeners.values():
            await listener.stop()


async def test_other_database_and_worker_limit(
    start_redis: StartRedis,
    listen: Callable[..., Awaitable[HeartbeatListener]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The db comes from the URL path; workers beyond max_workers are dropped."""
    server = start_redis()
    url = server.url.removesuffix("/0") + "/3"
    listener = await listen(url, max_workers=2)
    client = aioredis.Redis.from_url(url)
    try:
        await client.publish(CHANNEL, envelope(heartbeat("db0@host", time.time())))
        with caplog.at_level(logging.WARNING, logger=celery_probe.__name__):
            for name in ("a@h", "b@h", "c@h", "d@h"):
                await client.publish(
                    "/3.celeryev/worker.heartbeat",
                    envelope(heartbeat(name, time.time())),
                )
            await client.publish(
                "/3.celeryev/worker.heartbeat", envelope(heartbeat("a@h", time.time()))
            )
            await wait_for(lambda: len(listener.workers()) == 2)
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()
    assert set(listener.workers()) == {"a@h", "b@h"}
    full = [r for r in caplog.records if "ignoring new ones" in r.getMessage()]
    assert len(full) == 1


def test_offset_is_the_largest_over_the_window() -> None:
    """The offset is the max of timestamp - received over the last heartbeats."""
    listener = HeartbeatListener("redis://localhost/0", window=3)
    base = 1_800_000_000.0
    events = [(10.0, 10.3), (12.0, 12.1), (14.0, 14.9), (16.0, 16.2), (18.0, 18.5)]
    for sent, received in events:
        event = decode_event(envelope(heartbeat("w@h", base + sent + 7)))
        assert event is not None
        listener.handle_event(event, base + received)
    state = listener.workers()["w@h"]
    # Last three diffs: 6.1, 6.8, 6.5 -> 6.8; 14.9 -> 6.1 is the slowest.
    assert state.offset == pytest.approx(6.8)
    assert state.uncertainty == pytest.approx(0.35)
    assert state.heartbeats == 3
    assert state.last_heartbeat == base + 18.5
    assert state.online(base + 22.5)
    assert not state.online(base + 22.6)
    (reading,) = listener.readings(base + 30)
    assert reading.error == "no heartbeat for 12 s"
    (reading,) = listener.readings(base + 19)
    assert reading.offset == pytest.approx(6.8)
    assert reading.taken_at == base + 18.5

    online = decode_event(envelope(heartbeat("w@h", base + 20, type="worker-online")))
    assert online is not None
    listener.handle_event(online, base + 20.001)
    state = listener.workers()["w@h"]
    assert state.heartbeats == 1
    assert state.offset == pytest.approx(-0.001, abs=1e-6)
    assert state.uncertainty == celery_probe.DELAY_BOUND

    listener.forget("w@h")
    listener.forget("never@seen")
    assert listener.workers() == {}
    assert listener.readings() == []


@pytest.mark.parametrize(
    ("sent", "local", "mismatch"),
    [
        (0.0, 0.0, False),
        (-9.0, 0.0, True),
        (-5.5, -5.5, False),  # Celery 5.7, India
        (-6, -5.5, False),  # Celery < 5.7 floor-divided
        (-5, -5.5, True),
        (1.0, 0.0, True),
    ],
)
def test_utcoffset_mismatch(sent: float, local: float, mismatch: bool) -> None:
    """UTC offsets compare in Celery's convention, tolerating old floor division."""
    listener = HeartbeatListener("redis://localhost", local_utcoffset=lambda: local)
    event = decode_event(envelope(heartbeat("w@h", time.time(), utcoffset=sent)))
    assert event is not None
    listener.handle_event(event, time.time())
    state: WorkerState = listener.workers()["w@h"]
    assert state.utcoffset_mismatch is mismatch
    assert state.utcoffset_hours == sent


@pytest.mark.parametrize(
    ("zone", "expected"),
    [("UTC", 0.0), ("Asia/Tokyo", -9.0), ("Asia/Kolkata", -5.5), (None, None)],
)
def test_local_utcoffset_matches_celery(
    monkeypatch: pytest.MonkeyPatch, zone: str | None, expected: float | None
) -> None:
    """The default local offset is what Celery would send from this process."""
    from celery.utils.time import utcoffset  # noqa: PLC0415

    if zone is None:
        # Sydney is on daylight time in December, New York in July: one of them
        # takes Celery's altzone branch whatever today's date is.
        zone = (
            "Australia/Sydney"
            if time.gmtime().tm_mon in (12, 1, 2)
            else "America/New_York"
        )
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    try:
        assert celery_utcoffset() == utcoffset()
        if expected is not None:
            assert celery_utcoffset() == expected
        else:
            assert time.localtime().tm_isdst
    finally:
        monkeypatch.undo()
        time.tzset()


def test_broker_urls() -> None:
    """Names carry no credentials; the db comes from the path, then ?db=."""
    assert broker_name("redis://:pw@broker:6380/2") == "broker:6380/2"
    assert broker_name("rediss://[::1]") == "[::1]:6379/0"
    assert broker_db("redis://h?db=4") == 4
    with pytest.raises(ValueError, match="redis:// or rediss://"):
        broker_name("amqp://guest@rabbit//")
    with pytest.raises(ValueError, match="not a number"):
        broker_db("redis://h/abc")


def test_sanitize_hostname() -> None:
    """Control and markup characters become underscores; length is bounded."""
    assert sanitize_hostname("celery@pi") == "celery@pi"
    assert sanitize_hostname("a<b>&\"'`\x00\x7f\u202e") == "a_b" + "_" * 8
    assert len(sanitize_hostname("x" * 1000)) == 255


async def test_start_twice_and_stop_twice(real_sockets: None) -> None:
    """start() while running keeps one task; stop() is idempotent."""
    listener = HeartbeatListener("redis://127.0.0.1:1/0")
    await listener.start()
    task = listener._task
    await listener.start()
    assert listener._task is task
    await listener.stop()
    await listener.stop()
    assert not listener.connected


JSONISH = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_decode_event_never_raises_on_bytes(data: bytes) -> None:
    """Random bytes decode to None or to a checked event, never an exception."""
    event = decode_event(data)
    assert event is None or event["type"] in celery_probe.WORKER_EVENTS


@settings(max_examples=300, deadline=None)
@given(
    fields=st.dictionaries(
        st.sampled_from(
            [
                "type",
                "hostname",
                "timestamp",
                "freq",
                "utcoffset",
                "active",
                "processed",
                "loadavg",
                "sw_ver",
            ]
        ),
        JSONISH,
    ),
    encode=st.booleans(),
)
def test_decode_event_checks_every_field(fields: dict[str, Any], encode: bool) -> None:
    """Arbitrary field values either decode to well-typed values or are rejected."""
    body = heartbeat("w@h", 1_800_000_000.5)
    body.update(fields)
    event = decode_event(envelope(body, encode=encode))
    if event is None:
        return
    assert isinstance(event["hostname"], str)
    assert event["hostname"]
    assert math.isfinite(event["timestamp"])
    assert 0 <= event["timestamp"] <= celery_probe.MAX_TIMESTAMP
    assert 0 < event["freq"] <= celery_probe.MAX_FREQ
    assert event["utcoffset"] is None or -24 <= event["utcoffset"] <= 24
    for key in ("active", "processed"):
        assert event[key] is None or (type(event[key]) is int and event[key] >= 0)
    assert event["loadavg"] is None or all(
        math.isfinite(value) for value in event["loadavg"]
    )
    assert event["sw_ver"] is None or isinstance(event["sw_ver"], str)


@settings(max_examples=200, deadline=None)
@given(
    hostname=st.text(min_size=1, max_size=50),
    timestamp=st.floats(min_value=0, max_value=1e11),
    freq=st.floats(min_value=0.5, max_value=60),
    utcoffset=st.sampled_from([-9.0, -5.5, 0.0, 1.0, 12.0]),
    processed=st.integers(min_value=0, max_value=2**40),
)
def test_decode_event_round_trip(
    hostname: str, timestamp: float, freq: float, utcoffset: float, processed: int
) -> None:
    """A valid heartbeat decodes to the values it carried."""
    body = heartbeat(
        hostname, timestamp, freq=freq, utcoffset=utcoffset, processed=processed
    )
    event = decode_event(envelope(body))
    assert event is not None
    assert event["hostname"] == sanitize_hostname(hostname)
    assert event["timestamp"] == timestamp
    assert event["freq"] == freq
    assert event["utcoffset"] == utcoffset
    assert event["processed"] == processed
    assert event["loadavg"] == (0.1, 0.2, 0.3)


async def test_idle_connection_is_pinged_then_given_up(
    start_redis: StartRedis,
    listen: Callable[..., Awaitable[HeartbeatListener]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle broker is pinged; one that stops answering (SIGSTOP) is given up."""
    monkeypatch.setattr(celery_probe, "IDLE_POLL", 0.2)
    server = start_redis()
    listener = await listen(server.url)
    await asyncio.sleep(1.0)  # several idle polls, each PING answered
    assert listener.connected
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        error = await wait_for(lambda: listener.last_error, timeout=5)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert "no answer to PING" in error
    await wait_for(lambda: listener.connected, timeout=10)


def test_decoding_without_orjson() -> None:
    """Without orjson (outside Home Assistant) the listener decodes with json."""
    code = (
        "import sys, types; sys.modules['orjson'] = None\n"
        # The probes import no Home Assistant (which needs orjson): load them alone.
        "for name in ('custom_components', 'custom_components.clock_drift'):\n"
        "    sys.modules[name] = types.ModuleType(name)\n"
        "    sys.modules[name].__path__ = [name.replace('.', '/')]\n"
        "from custom_components.clock_drift.probes import celery\n"
        "assert celery._fast_loads is None\n"
        f"print(celery.decode_event({envelope(heartbeat('w@h', 5.0))!r})['hostname'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "w@h"

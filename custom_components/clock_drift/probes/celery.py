"""Celery probe: a long-lived listener for worker heartbeats on a Redis broker."""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import Callable
import contextlib
from dataclasses import dataclass
import json
import logging
import math
import re
import time
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
import redis.exceptions

from .model import ClockKind, Reading

_fast_loads: Callable[[bytes | str], Any] | None
try:
    # orjson (a Home Assistant dependency) decodes an envelope several times faster.
    import orjson
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    _fast_loads = None
else:
    _fast_loads = orjson.loads


def _loads(data: bytes | str) -> Any:
    """Decode JSON with orjson when present; Python's json for what it refuses.

    Python's json (what kombu encodes with) also reads NaN and Infinity.
    """
    if _fast_loads is not None:
        with contextlib.suppress(ValueError):
            return _fast_loads(data)
    return json.loads(data)


_LOGGER = logging.getLogger(__name__)

MAX_MESSAGE: Final = 64 * 1024
"""Largest envelope decoded; a heartbeat is well under 2 KiB."""
MAX_HOSTNAME: Final = 255
MAX_TIMESTAMP: Final = 1e11
"""Timestamps beyond year 5138 are garbage, not a clock."""
MAX_FREQ: Final = 3600.0
DEFAULT_FREQ: Final = 2.0
WORKER_EVENTS: Final = frozenset(
    {"worker-heartbeat", "worker-online", "worker-offline"}
)
DELAY_BOUND: Final = 0.02
"""Assumed bound on the fastest heartbeat's transport delay in a window, in seconds.

``timestamp - received`` equals the offset minus the delay from the worker's
``time.time()`` to our read on arrival (serialise, publish, broker, push). The largest
value over the window misses the offset by the smallest delay of the window, a few
milliseconds through a local broker; 20 ms also covers a loaded Raspberry Pi. The
timestamp itself is a float ``time.time()`` (microseconds), negligible here.
"""
IDLE_POLL: Final = 10.0
"""Longest wait for a message before the connection's health is checked."""
YIELD_EVERY: Final = 64
"""Messages handled in a row before the listener lets other tasks run."""
MISSED_PINGS: Final = 3
"""Idle polls in a row, each sending a PING, before the connection is given up."""
BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 30.0
LOG_INTERVAL: Final = 60.0
"""Least time between two warnings about malformed messages."""
_UNSAFE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f<>&\"'`\u200b-\u200f\u2028-\u202e]")


def sanitize_hostname(value: str) -> str:
    """Return a hostname without control or markup characters, bounded in length."""
    return _UNSAFE.sub("_", value)[:MAX_HOSTNAME]


def _finite(value: Any, low: float, high: float) -> float | None:
    """Return a finite number in ``[low, high]`` as a float, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        return None
    return number


def _count(value: Any) -> int | None:
    """Return a non-negative integer, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def decode_event(data: bytes) -> dict[str, Any] | None:
    """Return a worker event from a kombu envelope, or None when it is not one.

    The result holds ``type``, ``hostname`` (sanitised), ``timestamp``, ``freq``,
    ``utcoffset``, ``sw_ver``, ``active``, ``processed`` and ``loadavg``, each
    checked; optional fields that are missing or invalid are None.
    """
    try:
        body = _envelope_body(data)
    except ValueError, RecursionError:
        return None
    return _event_fields(body) if isinstance(body, dict) else None


def _envelope_body(data: bytes) -> Any:
    """Return the decoded body of a kombu JSON envelope; ValueError if it is not."""
    if len(data) > MAX_MESSAGE:
        raise ValueError("too large")
    envelope = _loads(data)
    if not isinstance(envelope, dict):
        raise ValueError("not an envelope")
    if envelope.get("content-type", "application/json") != "application/json":
        raise ValueError("not JSON")
    body = envelope.get("body")
    properties = envelope.get("properties")
    if isinstance(properties, dict) and properties.get("body_encoding") == "base64":
        if not isinstance(body, str):
            raise ValueError("base64 body is not a string")
        body = base64.b64decode(body, validate=True)
    if isinstance(body, bytes | str):
        body = _loads(body)
    return body


def _event_fields(body: dict[str, Any]) -> dict[str, Any] | None:
    """Return the checked fields of a worker event body, or None."""
    kind = body.get("type")
    hostname = body.get("hostname")
    timestamp = _finite(body.get("timestamp"), 0.0, MAX_TIMESTAMP)
    if not isinstance(kind, str) or kind not in WORKER_EVENTS:
        return None
    if not isinstance(hostname, str) or not hostname:
        return None
    if timestamp is None:
        return None
    sw_ver = body.get("sw_ver")
    loadavg = body.get("loadavg")
    loads: tuple[float, ...] | None = None
    if isinstance(loadavg, list) and len(loadavg) <= 3:
        values = [_finite(value, 0.0, 1e6) for value in loadavg]
        if all(value is not None for value in values):
            loads = tuple(value for value in values if value is not None)
    return {
        "type": kind,
        "hostname": sanitize_hostname(hostname),
        "timestamp": timestamp,
        "freq": _finite(body.get("freq"), 0.001, MAX_FREQ) or DEFAULT_FREQ,
        "utcoffset": _finite(body.get("utcoffset"), -24.0, 24.0),
        "sw_ver": sanitize_hostname(sw_ver)[:64] if isinstance(sw_ver, str) else None,
        "active": _count(body.get("active")),
        "processed": _count(body.get("processed")),
        "loadavg": loads,
    }


def celery_utcoffset() -> float:
    """Return this process's UTC offset the way Celery 5.7 sends it.

    ``celery.utils.time.utcoffset``: ``time.altzone / 3600`` under DST, else
    ``time.timezone / 3600``; hours WEST of UTC (Tokyo is -9). Celery before 5.7
    floor-divided (``// 3600``); ``utcoffset_mismatch`` accepts both.
    """
    if time.localtime().tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


def _offsets_disagree(worker: float, local: float) -> bool:
    """Return whether a worker's Celery UTC offset differs from the local one."""
    return not (math.isclose(worker, local, abs_tol=1e-6) or worker == local // 1)


def broker_name(url: str) -> str:
    """Return ``host:port/db`` for a broker URL, no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError("a Celery broker URL starts with redis:// or rediss://")
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or 6379}/{broker_db(url)}"


def broker_db(url: str) -> int:
    """Return the database number of a broker URL (path, else ``?db=``, else 0)."""
    parts = urlsplit(url)
    text = parts.path.strip("/") or parse_qs(parts.query).get("db", ["0"])[0]
    try:
        return int(text)
    except ValueError:
        raise ValueError(
            f"the broker URL's database {text[:20]!r} is not a number"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerState:
    """What the heartbeats of one worker say."""

    hostname: str
    offset: float
    """Largest ``timestamp - received`` over the recent heartbeats, in seconds."""
    uncertainty: float
    last_heartbeat: float
    """Local time the last heartbeat was received."""
    freq: float
    utcoffset: int | None
    """The worker's ``utcoffset`` field as sent (Celery's convention, whole hours)."""
    utcoffset_mismatch: bool
    """Whether the worker's UTC offset differs from the local one."""
    sw_ver: str | None
    active: int | None
    processed: int | None
    loadavg: tuple[float, ...] | None
    offline: bool = False
    """The worker said goodbye (``worker-offline``)."""
    utcoffset_hours: float | None = None
    """The ``utcoffset`` as sent, fractional hours kept (Celery 5.7 sends floats)."""
    heartbeats: int = 0
    """Heartbeats in the window the offset comes from."""

    def online(self, now: float) -> bool:
        """Return whether a heartbeat came within two heartbeat periods."""
        return not self.offline and now - self.last_heartbeat <= 2 * self.freq


class _Worker:
    """The mutable record of one worker, with a bounded window of offsets."""

    __slots__ = ("diffs", "fields", "last_heartbeat", "offline")

    def __init__(self, window: int) -> None:
        """Start an empty record."""
        self.diffs: deque[float] = deque(maxlen=window)
        self.fields: dict[str, Any] = {}
        self.last_heartbeat = 0.0
        self.offline = False


class HeartbeatListener:
    """PSUBSCRIBEs to ``/{db}.celeryev/worker.*`` and tracks every worker's clock."""

    name: str
    """The broker, never with credentials."""

    def __init__(
        self,
        broker_url: str,
        *,
        local_utcoffset: Callable[[], float] | None = None,
        window: int = 10,
        max_workers: int = 1000,
    ) -> None:
        """Prepare a listener for a ``redis://`` or ``rediss://`` broker URL."""
        self.name = broker_name(broker_url)
        self._url = broker_url
        self._pattern = f"/{broker_db(broker_url)}.celeryev/worker.*"
        self._local_utcoffset = local_utcoffset or celery_utcoffset
        self._window = max(1, window)
        self._max_workers = max_workers
        self._workers: dict[str, _Worker] = {}
        self._connected = False
        self._last_error: str | None = None
        self._auth_failed = False
        self._task: asyncio.Task[None] | None = None
        self._secrets = [
            secret
            for secret in {
                urlsplit(broker_url).password,
                unquote(urlsplit(broker_url).password or ""),
            }
            if secret
        ]
        self._full_logged = False
        self._dropped = 0
        self._last_drop_log = -math.inf

    def _scrub(self, text: str) -> str:
        """Return a message without the URL's password."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with backoff."""
        delay = BACKOFF_FIRST
        outage_logged = False
        while True:
            client = Redis.from_url(
                self._url,
                socket_connect_timeout=5.0,
                # The loop below backs off and _listen pings an idle connection; no
                # CLIENT SETINFO, whose version comes from a blocking read of the
                # package metadata on the event loop.
                retry=Retry(NoBackoff(), 0),
                driver_info=None,
            )
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(self._pattern)
                self._connected, self._last_error = True, None
                self._auth_failed = False
                delay = BACKOFF_FIRST
                if outage_logged:
                    _LOGGER.info(
                        "Listening to Celery heartbeats on %s again", self.name
                    )
                    outage_logged = False
                await self._listen(pubsub)
            except (redis.exceptions.RedisError, OSError) as err:
                self._connected = False
                # redis-py maps NOAUTH and WRONGPASS replies to AuthenticationError.
                self._auth_failed = isinstance(
                    err,
                    (
                        redis.exceptions.AuthenticationError,
                        redis.exceptions.NoPermissionError,
                    ),
                )
                self._last_error = self._scrub(
                    f"{type(err).__name__}: {err}"[:300]
                    if str(err)
                    else type(err).__name__
                )
                if not outage_logged:
                    # INFO: the owner (the coordinator, the command line) reports
                    # the outage to the user from ``last_error``.
                    _LOGGER.info(
                        "Lost Celery heartbeats on %s (%s); retrying with backoff",
                        self.name,
                        self._last_error,
                    )
                    outage_logged = True
            finally:
                self._connected = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _listen(self, pubsub: Any) -> None:
        """Handle messages until the connection fails or stops answering.

        An idle connection is pinged at every quiet poll; a broker that answers
        nothing, its PONGs included, for ``MISSED_PINGS`` polls in a row (a frozen
        Redis keeps the TCP connection open) is given up and reconnected.
        """
        idle = 0
        handled = 0
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=IDLE_POLL
            )
            received = time.time()
            handled += 1
            if handled % YIELD_EVERY == 0:
                # Messages already buffered by the parser come without a suspension:
                # give the event loop its turn during a burst.
                await asyncio.sleep(0)
            if message is None:
                idle += 1
                if idle >= MISSED_PINGS:
                    raise redis.exceptions.TimeoutError(
                        f"no answer to PING in {IDLE_POLL * (idle - 1):.0f} s"
                    )
                await pubsub.ping()
                continue
            idle = 0
            if message.get("type") == "pmessage":
                self._on_message(message.get("data"), received)

    def _on_message(self, data: Any, received: float) -> None:
        """Decode one published message and record it."""
        event = decode_event(data) if isinstance(data, bytes) else None
        if event is None:
            self._malformed()
        else:
            self.handle_event(event, received)

    def _malformed(self) -> None:
        """Count a malformed message; warn at most once a minute."""
        self._dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= LOG_INTERVAL:
            _LOGGER.warning(
                "Ignored %d malformed message(s) on %s", self._dropped, self.name
            )
            self._dropped = 0
            self._last_drop_log = now
        else:
            _LOGGER.debug("Ignored a malformed message on %s", self.name)

    def handle_event(self, event: dict[str, Any], received: float) -> None:
        """Record a decoded worker event received at local time ``received``."""
        hostname: str = event["hostname"]
        worker = self._workers.get(hostname)
        if worker is None:
            if len(self._workers) >= self._max_workers:
                if not self._full_logged:
                    _LOGGER.warning(
                        "Tracking %d Celery workers already; ignoring new ones",
                        self._max_workers,
                    )
                    self._full_logged = True
                return
            worker = self._workers[hostname] = _Worker(self._window)
        if event["type"] == "worker-online":
            # A (re)started worker may run on another clock: start a fresh window.
            worker.diffs.clear()
        worker.diffs.append(event["timestamp"] - received)
        worker.fields = event
        worker.last_heartbeat = received
        worker.offline = event["type"] == "worker-offline"

    async def start(self) -> None:
        """Start ``run`` in a task of its own (for callers without a task manager)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"celery {self.name}")

    async def stop(self) -> None:
        """Cancel the listening task and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected = False

    @property
    def connected(self) -> bool:
        """Return whether the listener is subscribed now."""
        return self._connected

    @property
    def last_error(self) -> str | None:
        """Return why the last connection attempt failed, None when connected."""
        return self._last_error

    @property
    def auth_failed(self) -> bool:
        """Return whether the broker refused our credentials at the last attempt."""
        return self._auth_failed

    def workers(self) -> dict[str, WorkerState]:
        """Return the state of every worker heard from, by hostname."""
        local = self._local_utcoffset()
        states = {}
        for hostname, worker in self._workers.items():
            fields = worker.fields
            offset = max(worker.diffs)
            spread = offset - min(worker.diffs)
            sent = fields["utcoffset"]
            states[hostname] = WorkerState(
                hostname=hostname,
                offset=offset,
                uncertainty=max(DELAY_BOUND, spread / 2),
                last_heartbeat=worker.last_heartbeat,
                freq=fields["freq"],
                utcoffset=round(sent) if sent is not None else None,
                utcoffset_mismatch=sent is not None and _offsets_disagree(sent, local),
                sw_ver=fields["sw_ver"],
                active=fields["active"],
                processed=fields["processed"],
                loadavg=fields["loadavg"],
                offline=worker.offline,
                utcoffset_hours=sent,
                heartbeats=len(worker.diffs),
            )
        return states

    def readings(self, now: float | None = None) -> list[Reading]:
        """Return a CELERY reading per worker heard from."""
        now = time.time() if now is None else now
        readings: list[Reading] = []
        for hostname, state in self.workers().items():
            if state.offline:
                error = "the worker went offline"
            elif not state.online(now):
                error = f"no heartbeat for {now - state.last_heartbeat:.0f} s"
            else:
                readings.append(
                    Reading(
                        kind=ClockKind.CELERY,
                        name=hostname,
                        offset=state.offset,
                        uncertainty=state.uncertainty,
                        taken_at=state.last_heartbeat,
                    )
                )
                continue
            readings.append(Reading.failed(ClockKind.CELERY, hostname, error))
        return readings

    def forget(self, hostname: str) -> None:
        """Drop a worker (gone longer than the caller's stale limit)."""
        self._workers.pop(hostname, None)

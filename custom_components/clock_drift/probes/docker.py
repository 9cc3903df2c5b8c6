"""Docker probe: container clocks through long-lived exec streams, and the daemon's."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
import errno
import json
import logging
import math
import re
import time
from typing import Any, Final
from urllib.parse import urlsplit

import aiodocker
from aiodocker.exceptions import DockerError
from aiodocker.execs import Exec
from aiodocker.stream import Stream
import aiohttp

from .model import (
    ClockKind,
    ProbeAuthError,
    ProbeConnectionError,
    ProbeError,
    ProbeResponseError,
    ProbeTimeoutError,
    Reading,
    Sample,
    best_sample,
)

_LOGGER = logging.getLogger(__name__)

CLOCK_COMMAND: Final = (
    "sh",
    "-c",
    "set -f; while read c; do case $c in t) echo $(adjtimex 2>&1) =;; "
    "*) date +%s.%N;; esac; done",
)
"""One clock read per line written: the exec stream every container reading uses.

An empty line runs ``date +%s.%N``; a ``t`` runs BusyBox's ``adjtimex`` applet
(the kernel's clock to the microsecond, no privileges needed), its output joined
into one line (unquoted, globbing off) ended by `` =``: one frame to read. The
probe sends ``t`` only where ``date`` prints a literal ``%N``: a GNU ``date`` may
be skewed by libfaketime, which ``adjtimex`` bypasses.
"""
STA_NANO: Final = 0x2000
"""``adjtimex`` status bit: ``time.tv_usec`` holds nanoseconds."""
EXCHANGES: Final = 3
"""Exchanges per cycle for a nanosecond ``date``; the shortest round trip wins."""
MAX_LINE: Final = 1024
"""Longest answer line accepted from a container, in bytes (adjtimex: ~350)."""
MAX_EXEC_OUTPUT: Final = 1 << 20
"""Output kept from ``exec``; the rest is dropped."""
HOST_SAMPLES: Final = 1
"""``/info`` requests per daemon clock reading (each costs dockerd ~10 ms of CPU)."""
EDGE_STEP: Final = 0.004
"""Pause between exchanges while looking for a second's edge, in seconds."""
EDGE_SEARCH_LIMIT: Final = 1.2
"""Longest full search for a second's edge, in seconds (a second plus margin)."""
EDGE_MARGIN: Final = 0.008
"""Extra time either side of a predicted edge, on top of its last uncertainty."""
MAX_EDGE_UNCERTAINTY: Final = 0.05
"""A whole-second clock read with a wider bracket than this is not reported."""
OPEN_CONCURRENCY: Final = 32
"""Containers read at once through streams already open (a round trip each)."""
CLOCK_REALTIME_COARSE: Final = 5
"""Linux's clock id for the coarse wall clock (``time.CLOCK_REALTIME_COARSE``)."""
REMOTE_TICK: Final = 0.01
NO_SHELL_MARKERS: Final = (
    "executable file not found",
    "no such file or directory",
)

STOPPED_MARKERS: Final = ("cannot exec in a", "is not running")

_ANSWER: Final = re.compile(rb"(\d{1,12})\.(\d{1,9}|%N)")
_ADJTIMEX_FIELD: Final = re.compile(
    rb"(?:^|\s)(status|time\.tv_sec|time\.tv_usec):\s+(\d{1,12})\b"
)
_SLOT: ContextVar[asyncio.Semaphore | None] = ContextVar("_SLOT", default=None)
"""The concurrency slot the current container reading holds, if any."""
_RFC3339: Final = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)"
)


class ContainerMethod(StrEnum):
    """How a container's clock was read."""

    NANOSECONDS = "nanoseconds"  # date +%s.%N through the exec stream
    ADJTIMEX = "adjtimex"  # BusyBox: its adjtimex applet prints the time in µs
    SECOND_EDGE = (
        "second_edge"  # whole-second date: the second's edge found by bracketing
    )
    DAEMON = "daemon"  # no shell in the container: it shares the daemon's clock


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerReading(Reading):
    """A container's clock (``kind`` CONTAINER, ``name`` the container's name)."""

    container_id: str
    image: str
    method: ContainerMethod
    note: str | None = None
    """Why the method was chosen, when it is not the plain exec stream."""


class _NoShellError(ProbeError):
    """The container has no ``sh``: its clock is the daemon's."""


class _NotRunningError(ProbeResponseError):
    """The container is not running (stopped, or stopping)."""


class _StreamBrokenError(ProbeError):
    """The exec stream ended or failed; the container may have stopped."""


@dataclass(frozen=True, slots=True)
class _Answer:
    """One line exchanged through an exec stream: sent at ``t0``, read at ``t1``."""

    t0: float
    t1: float
    seconds: int
    fraction: str | None
    """The digits after the point, or None when ``date`` printed a literal ``%N``."""


def parse_answer(line: bytes) -> tuple[int, str | None]:
    """Return the whole seconds and fraction digits of a ``date +%s.%N`` line."""
    match = _ANSWER.fullmatch(line.strip())
    if match is None:
        shown = line[:40].decode("ascii", "backslashreplace")
        if not line.strip():
            raise ProbeResponseError("the container's date printed an empty line")
        raise ProbeResponseError(f"the container's date printed {shown!r}")
    fraction = match.group(2).decode()
    return int(match.group(1)), None if fraction == "%N" else fraction


def parse_adjtimex(output: bytes) -> tuple[int, str] | None:
    """Return the seconds and fraction digits BusyBox ``adjtimex`` printed.

    None when the output holds no time (no such applet, or the system call was
    refused). The fraction has 6 digits, or 9 when the kernel's status says
    ``STA_NANO`` (then ``time.tv_usec`` holds nanoseconds).
    """
    fields = {
        key.decode(): int(value) for key, value in _ADJTIMEX_FIELD.findall(output)
    }
    seconds = fields.get("time.tv_sec")
    sub = fields.get("time.tv_usec")
    if seconds is None or sub is None:
        return None
    digits = 9 if fields.get("status", 0) & STA_NANO else 6
    if sub >= 10**digits:
        raise ProbeResponseError(
            f"the container's adjtimex printed time.tv_usec {sub}, out of range"
        )
    return seconds, f"{sub:0{digits}d}"


def parse_rfc3339(text: str) -> tuple[float, float]:
    """Return the POSIX time and the resolution of an RFC 3339 time with ns."""
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ProbeResponseError(f"the daemon's SystemTime {text[:40]!r} is not a time")
    whole, digits, zone = match.groups()
    try:
        moment = datetime.fromisoformat(f"{whole}{'+00:00' if zone == 'Z' else zone}")
    except ValueError as err:
        raise ProbeResponseError(
            f"the daemon's SystemTime {text[:40]!r} is not a time"
        ) from err
    fraction = int(digits) / 10 ** len(digits) if digits else 0.0
    return moment.timestamp() + fraction, 10.0 ** -len(digits or "")


def edge_interval(answers: Sequence[_Answer], tick: float) -> tuple[float, float]:
    """Return the offsets a whole-second clock can have given these exchanges.

    An exchange sent at ``t0`` and answered at ``t1`` that printed ``s`` read the
    clock at a local instant ``tau`` in ``[t0, t1]``. BusyBox ``date`` calls
    ``time()``, the kernel's coarse clock, which lags the precise one by up to a
    timer ``tick``: ``s <= tau + offset`` and ``tau - tick + offset < s + 1``, so
    ``s - t1 <= offset < s + 1 + tick - t0``. The intersection over the exchanges
    is the answer: for the last exchange printing ``s`` and the first printing
    ``s + 1`` it is ``[s + 1 - t1_first, s + 1 - t0_last + tick]``, the second's
    edge bracketed between the last send that still saw ``s`` and the first answer
    that saw ``s + 1``.
    """
    low = max(answer.seconds - answer.t1 for answer in answers)
    high = min(answer.seconds + 1 + tick - answer.t0 for answer in answers)
    return low, high


def coarse_tick(url: str) -> float:
    """Return how far ``time()`` may lag the precise clock on the daemon's kernel.

    A Unix socket's daemon runs on this kernel: its coarse clock's resolution is
    the tick. A remote kernel's is unknown: 10 ms, the tick at the lowest usual HZ.
    """
    if url.startswith("unix://"):
        with contextlib.suppress(AttributeError, OSError):
            return max(time.clock_getres(CLOCK_REALTIME_COARSE), 1e-6)
    return REMOTE_TICK


def _raise_exec_failure(line: bytes) -> None:
    """Raise if the line is the runtime's report that the exec could not start."""
    text = line.decode("utf-8", "replace").strip()[:200]
    if any(marker in text for marker in NO_SHELL_MARKERS):
        raise _NoShellError(text)
    if any(marker in text for marker in STOPPED_MARKERS):
        raise _NotRunningError("the container is not running")


@dataclass(slots=True)
class _Session:
    """An open ``while read`` exec stream into one container."""

    container_id: str
    started_at: str
    exec_: Exec
    stream: Stream
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    buffer: bytearray = field(default_factory=bytearray)
    edge: tuple[float, float] | None = None
    """The last whole-second bracket: offset and uncertainty."""
    method: ContainerMethod | None = None
    """How this session reads the clock, decided by its first exchanges."""

    async def readline(self, timeout: float) -> bytes:
        """Return the next stdout line, bounded in length and time."""
        async with asyncio.timeout(timeout):
            while (end := self.buffer.find(b"\n")) < 0:
                if len(self.buffer) > MAX_LINE:
                    raise ProbeResponseError(
                        f"the container answered a line longer than {MAX_LINE} bytes"
                    )
                try:
                    message = await self.stream.read_out()
                except (aiohttp.ClientError, OSError) as err:
                    raise _StreamBrokenError("the exec stream failed") from err
                if message is None:
                    _raise_exec_failure(bytes(self.buffer))
                    raise _StreamBrokenError("the exec stream ended")
                if message.stream == 2:
                    text = message.data[:200].decode("utf-8", "replace").strip()
                    raise ProbeResponseError(f"the container's shell said {text!r}")
                self.buffer.extend(message.data)
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        if len(line) > MAX_LINE:
            raise ProbeResponseError(
                f"the container answered a line longer than {MAX_LINE} bytes"
            )
        _raise_exec_failure(line)
        return line

    async def _send(self, request: bytes) -> float:
        """Write one request line; return the local time just before."""
        t0 = time.time()
        try:
            await self.stream.write_in(request)
        except (OSError, RuntimeError, AssertionError) as err:
            raise _StreamBrokenError("the exec stream is closed") from err
        return t0

    async def exchange(self, timeout: float) -> _Answer:
        """Write a line, read the answer, and time both on the local clock."""
        t0 = await self._send(b"\n")
        line = await self.readline(timeout)
        t1 = time.time()
        seconds, fraction = parse_answer(line)
        return _Answer(t0, t1, seconds, fraction)

    async def exchange_adjtimex(self, timeout: float) -> _Answer | None:
        """Run ``adjtimex`` once; None when the container's BusyBox has none."""
        t0 = await self._send(b"t\n")
        line = (await self.readline(timeout)).rstrip()
        t1 = time.time()
        if not line.endswith(b"="):
            shown = line[:40].decode("ascii", "backslashreplace")
            raise ProbeResponseError(f"the container's adjtimex printed {shown!r}")
        parsed = parse_adjtimex(line)
        if parsed is None:
            return None
        return _Answer(t0, t1, parsed[0], parsed[1])

    async def close(self) -> None:
        """Close the stream; the shell reads end of file and exits."""
        with contextlib.suppress(Exception):
            await self.stream.close()


def _fraction_sample(answer: _Answer) -> Sample:
    """Return the sample of an answer with a fraction (``date`` truncates it)."""
    digits = answer.fraction or ""
    resolution = 10.0 ** -len(digits)
    remote = answer.seconds + int(digits or 0) * resolution + resolution / 2
    return Sample(answer.t0, answer.t1, remote, resolution / 2)


def _endpoint_name(url: str) -> str:
    """Return the endpoint without credentials, query or fragment."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    if parts.scheme in ("tcp", "http", "https"):
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}"
    raise ValueError("a Docker URL starts with unix:// or tcp://")


def _container_name(summary: dict[str, Any]) -> str:
    """Return a container's name from a ``/containers/json`` entry, no slash."""
    names = summary.get("Names") or [summary.get("Id", "")[:12]]
    return str(names[0]).lstrip("/")


async def _sleep_without_slot(seconds: float) -> None:
    """Sleep with the concurrency slot given back, so other containers go on."""
    slot = _SLOT.get()
    if slot is None:
        await asyncio.sleep(seconds)
        return
    slot.release()
    try:
        await asyncio.sleep(seconds)
    finally:
        await slot.acquire()


class DockerClocks:
    """Reads the clocks of a Docker host's containers and of the daemon itself."""

    name: str
    """The endpoint, never with credentials."""

    def __init__(
        self,
        url: str,
        *,
        containers: Sequence[str] = (),
        label: str | None = None,
        concurrency: int = 8,
        timeout: float = 5.0,
        exchanges: int = EXCHANGES,
    ) -> None:
        """Prepare a client for ``unix://PATH`` or ``tcp://HOST:PORT``.

        ``containers`` selects by name (empty: all running), ``label`` by label;
        ``exchanges`` per container and cycle, the shortest round trip kept;
        ``concurrency`` bounds the containers whose exec stream is being opened
        (streams already open are read ``OPEN_CONCURRENCY`` at once, or more).
        """
        self.name = _endpoint_name(url)
        self._url = url
        self._names = tuple(name.lstrip("/") for name in containers)
        self._label = label
        self._concurrency = max(1, concurrency)
        self._timeout = timeout
        self._exchanges = max(1, exchanges)
        self._client: aiodocker.Docker | None = None
        self._tick = coarse_tick(url)
        self._sessions: dict[str, _Session] = {}
        self._no_shell: dict[str, str] = {}
        """Container id plus start time -> why it has no shell."""

    def _docker(self) -> aiodocker.Docker:
        """Return the client, created on first use inside the event loop."""
        if self._client is None:
            self._client = aiodocker.Docker(url=self._url)
        return self._client

    def _error(self, err: BaseException, action: str) -> ProbeError:
        """Map a client error to a probe error that names the endpoint only."""
        if isinstance(err, TimeoutError):
            return ProbeTimeoutError(f"Docker at {self.name} did not answer {action}")
        cause: BaseException | None = err
        while cause is not None:
            if isinstance(cause, OSError) and cause.errno == errno.EACCES:
                return ProbeAuthError(
                    f"permission denied on the Docker socket {self.name}"
                )
            cause = cause.__cause__ or cause.__context__
        if not isinstance(err, DockerError) or err.status == 900:
            return ProbeConnectionError(f"cannot connect to Docker at {self.name}")
        message = str(err.message).replace(self._url, self.name)[:200]
        if err.status in (401, 403):
            return ProbeAuthError(f"Docker at {self.name} refused {action}: {message}")
        if "is not running" in message:
            return _NotRunningError("the container is not running")
        return ProbeResponseError(f"Docker at {self.name}: {message}")

    async def _call[T](self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one API call with the timeout, mapping its errors."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call()
        except (DockerError, aiohttp.ClientError, OSError, TimeoutError) as err:
            raise self._error(err, action) from None

    async def _daemon_sample(self) -> Sample:
        """Read ``/info`` SystemTime once, between two local clock reads."""
        docker = self._docker()
        t0 = time.time()
        info = await self._call("/info", docker.system.info)
        t1 = time.time()
        system_time = info.get("SystemTime") if isinstance(info, dict) else None
        if not isinstance(system_time, str):
            raise ProbeResponseError(f"Docker at {self.name} sent no SystemTime")
        remote, resolution = parse_rfc3339(system_time)
        # The daemon truncates: the true time lies in [remote, remote + resolution).
        return Sample(t0, t1, remote + resolution / 2, resolution / 2)

    async def _daemon_offset(self) -> tuple[float, float, float]:
        """Return the daemon's offset, uncertainty and sample time."""
        samples = [await self._daemon_sample() for _ in range(HOST_SAMPLES)]
        best = best_sample(samples)
        uncertainty = best.round_trip / 2 + best.resolution
        return best.offset, uncertainty, best.midpoint

    async def read_host(self) -> Reading:
        """Return the daemon's clock (``/info`` SystemTime), kind DOCKER_HOST.

        Raises ProbeConnectionError, ProbeTimeoutError, ProbeResponseError.
        """
        offset, uncertainty, taken_at = await self._daemon_offset()
        return Reading(
            kind=ClockKind.DOCKER_HOST,
            name=self.name,
            offset=offset,
            uncertainty=uncertainty,
            taken_at=taken_at,
        )

    async def _selected(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Return the running containers selected, and the names asked but absent."""
        filters: dict[str, list[str]] = {"status": ["running"]}
        if self._label:
            filters["label"] = [self._label]
        docker = self._docker()
        listed = await self._call(
            "the container list",
            lambda: docker._query_json(  # noqa: SLF001
                "containers/json", params={"filters": json.dumps(filters)}
            ),
        )
        if not isinstance(listed, list):
            raise ProbeResponseError(f"Docker at {self.name} sent no container list")
        summaries = [entry for entry in listed if isinstance(entry, dict)]
        if not self._names:
            return summaries, []
        wanted = set(self._names)
        chosen = [
            entry
            for entry in summaries
            if _container_name(entry) in wanted or entry.get("Id") in wanted
        ]
        found = {_container_name(entry) for entry in chosen} | {
            str(entry.get("Id")) for entry in chosen
        }
        return chosen, [name for name in self._names if name not in found]

    async def read_containers(self) -> list[Reading]:
        """Return a reading per selected running container, failed ones included.

        A container that fails gives a failed Reading; the daemon being unreachable
        raises ProbeConnectionError.
        """
        summaries, missing = await self._selected()
        # Opening a stream spawns a process in the container; an open one only
        # costs round trips, so more of those run at once.
        opening = asyncio.Semaphore(self._concurrency)
        reading = asyncio.Semaphore(max(self._concurrency, OPEN_CONCURRENCY))

        async def bounded(summary: dict[str, Any]) -> Reading:
            open_ = str(summary.get("Id", "")) in self._sessions
            semaphore = reading if open_ else opening
            async with semaphore:
                _SLOT.set(semaphore)
                return await self._read_container(summary)

        readings: list[Reading] = list(
            await asyncio.gather(*(bounded(summary) for summary in summaries))
        )
        readings.extend(
            Reading.failed(ClockKind.CONTAINER, name, "the container is not running")
            for name in missing
        )
        live = {str(summary.get("Id")) for summary in summaries}
        for container_id in [key for key in self._sessions if key not in live]:
            await self._drop(container_id)
        for container_id in [key for key in self._no_shell if key not in live]:
            del self._no_shell[container_id]
        return readings

    async def _read_container(self, summary: dict[str, Any]) -> Reading:
        """Return one container's reading; every failure becomes a failed reading."""
        container_id = str(summary.get("Id", ""))
        name = _container_name(summary)
        image = str(summary.get("Image", ""))

        def reading(
            method: ContainerMethod,
            offset: float,
            uncertainty: float,
            taken_at: float,
            note: str | None = None,
        ) -> ContainerReading:
            return ContainerReading(
                kind=ClockKind.CONTAINER,
                name=name,
                offset=offset,
                uncertainty=uncertainty,
                taken_at=taken_at,
                container_id=container_id,
                image=image,
                method=method,
                note=note,
            )

        try:
            try:
                method, offset, uncertainty, taken_at = await self._measure(
                    container_id
                )
            except _NoShellError as err:
                offset, uncertainty, taken_at = await self._daemon_offset()
                note = (
                    f"no shell in the container ({err}): it shares the Docker "
                    "host's clock, read from the daemon"
                )
                return reading(
                    ContainerMethod.DAEMON, offset, uncertainty, taken_at, note
                )
            return reading(method, offset, uncertainty, taken_at)
        except ProbeError as err:
            await self._drop(container_id)
            return ContainerReading(
                kind=ClockKind.CONTAINER,
                name=name,
                error=str(err),
                container_id=container_id,
                image=image,
                method=ContainerMethod.NANOSECONDS,
            )

    async def _drop(self, container_id: str) -> None:
        """Close and forget a container's session."""
        session = self._sessions.pop(container_id, None)
        if session is not None:
            await session.close()

    async def _inspect_state(self, container_id: str) -> dict[str, Any]:
        """Return a container's ``State``; a vanished container is an error."""
        docker = self._docker()
        try:
            details = await self._call(
                "the container's state",
                lambda: docker._query_json(f"containers/{container_id}/json"),  # noqa: SLF001
            )
        except ProbeResponseError as err:
            raise ProbeResponseError(f"the container is gone ({err})") from None
        state = details.get("State") if isinstance(details, dict) else None
        if not isinstance(state, dict):
            raise ProbeResponseError("the daemon sent no container state")
        return state

    async def _open(self, container_id: str) -> _Session:
        """Open a ``while read`` exec stream into a running container."""
        state = await self._inspect_state(container_id)
        if not state.get("Running"):
            raise _NotRunningError("the container is not running")
        started_at = str(state.get("StartedAt", ""))
        known = self._no_shell.get(container_id)
        if known is not None and known.startswith(started_at + "\n"):
            raise _NoShellError(known.split("\n", 1)[1])
        container = self._docker().containers.container(container_id)
        exec_ = await self._call(
            "exec",
            lambda: container.exec(
                list(CLOCK_COMMAND), stdin=True, stdout=True, stderr=True
            ),
        )
        stream = exec_.start(detach=False)
        session = _Session(container_id, started_at, exec_, stream)
        try:
            await self._call("the exec stream", stream._init)  # noqa: SLF001
        except ProbeError:
            await session.close()
            raise
        return session

    async def _session(self, container_id: str) -> _Session:
        """Return the container's open session, opening one if needed."""
        session = self._sessions.get(container_id)
        if session is None:
            session = await self._open(container_id)
            self._sessions[container_id] = session
        return session

    async def _measure(
        self, container_id: str
    ) -> tuple[ContainerMethod, float, float, float]:
        """Measure through the session, re-opening it once if it broke."""
        stopped = "the container stopped during the exchange"
        for attempt in range(2):
            try:
                session = await self._session(container_id)
            except _NotRunningError:
                if attempt:
                    raise ProbeResponseError(stopped) from None
                raise
            try:
                async with session.lock:
                    return await self._measure_session(session)
            except _NoShellError as err:
                await self._drop(container_id)
                self._no_shell[container_id] = f"{session.started_at}\n{err}"
                raise
            except _NotRunningError:
                await self._drop(container_id)
                raise ProbeResponseError(stopped) from None
            except (ProbeError, TimeoutError) as err:
                # Whatever went wrong, a container that stopped meanwhile explains it.
                await self._drop(container_id)
                state = await self._inspect_state(container_id)
                if not state.get("Running"):
                    raise ProbeResponseError(stopped) from None
                if not isinstance(err, _StreamBrokenError | TimeoutError):
                    raise
                if isinstance(err, TimeoutError):
                    raise ProbeTimeoutError(
                        "the container's clock did not answer in time"
                    ) from None
                if attempt:
                    raise ProbeResponseError(str(err)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _measure_session(
        self, session: _Session
    ) -> tuple[ContainerMethod, float, float, float]:
        """Exchange lines through a session and return the best offset.

        A session's first cycle decides how it reads: ``date`` with a fraction,
        else BusyBox's ``adjtimex``, else the whole-second ``date``'s edge.
        """
        answers: list[_Answer] = []
        if session.method in (None, ContainerMethod.NANOSECONDS):
            first = await session.exchange(self._timeout)
            if first.fraction is None:
                if session.method is not None:
                    raise ProbeResponseError("the container's date changed its format")
                answers = await self._adjtimex_answers(session)
                session.method = (
                    ContainerMethod.ADJTIMEX if answers else ContainerMethod.SECOND_EDGE
                )
                if not answers:
                    offset, uncertainty, taken_at = await self._find_edge(
                        session, first
                    )
                    return ContainerMethod.SECOND_EDGE, offset, uncertainty, taken_at
            else:
                session.method = ContainerMethod.NANOSECONDS
                answers = [first]
                for _ in range(self._exchanges - 1):
                    answer = await session.exchange(self._timeout)
                    if answer.fraction is None:
                        raise ProbeResponseError(
                            "the container's date changed its format"
                        )
                    answers.append(answer)
        elif session.method is ContainerMethod.ADJTIMEX:
            answers = await self._adjtimex_answers(session)
            if not answers:
                raise ProbeResponseError("the container's adjtimex stopped answering")
        else:
            first = await session.exchange(self._timeout)
            offset, uncertainty, taken_at = await self._find_edge(session, first)
            return ContainerMethod.SECOND_EDGE, offset, uncertainty, taken_at
        best = best_sample([_fraction_sample(answer) for answer in answers])
        # The clock read lies within the round trip; at least 1 µs, its resolution.
        uncertainty = max(best.round_trip / 2 + best.resolution, 1e-6)
        return session.method, best.offset, uncertainty, best.midpoint

    async def _adjtimex_answers(self, session: _Session) -> list[_Answer]:
        """Read the clock through ``adjtimex``; empty when the applet is missing."""
        answers: list[_Answer] = []
        for _ in range(self._exchanges):
            answer = await session.exchange_adjtimex(self._timeout)
            if answer is None:
                if answers:
                    raise ProbeResponseError(
                        "the container's adjtimex stopped answering"
                    )
                return []
            answers.append(answer)
        return answers

    async def _find_edge(
        self, session: _Session, first: _Answer
    ) -> tuple[float, float, float]:
        """Bracket a whole-second clock's next edge; return offset, bound and time.

        With a previous bracket, only the window around the predicted edge is
        searched; when the edge is not there (the clock stepped), a full search
        follows.
        """
        answers = [first]
        found = False
        if session.edge is not None:
            previous, spread = session.edge
            margin = spread + EDGE_MARGIN
            now = time.time()
            # The container's clock reaches a whole second at local time n - offset.
            edge = math.ceil(now + previous + margin + EDGE_STEP) - previous
            await _sleep_without_slot(max(0.0, edge - margin - time.time()))
            answers = [await session.exchange(self._timeout)]
            found = await self._walk_to_edge(session, answers, edge + margin)
            if not found:
                answers = [await session.exchange(self._timeout)]
        if not found and not await self._walk_to_edge(
            session, answers, time.time() + EDGE_SEARCH_LIMIT
        ):
            session.edge = None
            raise ProbeResponseError(
                "the container's whole-second clock did not advance in "
                f"{EDGE_SEARCH_LIMIT} s"
            )
        low, high = edge_interval(answers, self._tick)
        if high < low:
            session.edge = None
            raise ProbeResponseError(
                "the container's whole-second clock is inconsistent "
                "(it stepped during the search)"
            )
        offset, uncertainty = (low + high) / 2, (high - low) / 2
        if uncertainty > MAX_EDGE_UNCERTAINTY:
            session.edge = None
            raise ProbeResponseError(
                f"the container's second edge was bracketed to ±{uncertainty:.3f} s "
                "only: the exec stream is too slow"
            )
        session.edge = (offset, uncertainty)
        return offset, uncertainty, (answers[-2].t0 + answers[-1].t1) / 2

    async def _walk_to_edge(
        self, session: _Session, answers: list[_Answer], deadline: float
    ) -> bool:
        """Exchange a few ms apart until the printed second changes or the deadline."""
        while time.time() < deadline:
            await asyncio.sleep(EDGE_STEP)
            answer = await session.exchange(self._timeout)
            if answer.fraction is not None:
                raise ProbeResponseError("the container's date changed its format")
            answers.append(answer)
            if answer.seconds != answers[-2].seconds:
                # Keep only the last exchange before the edge and the first after.
                del answers[:-2]
                return True
        return False

    async def exec(
        self, container: str, argv: Sequence[str], *, timeout: float = 10.0
    ) -> tuple[int, str]:
        """Run a fixed argv in a container (no shell); return exit code and output."""
        docker = self._docker()
        handle = docker.containers.container(container.lstrip("/"))
        output = bytearray()
        try:
            async with asyncio.timeout(timeout):
                exec_ = await self._call(
                    "exec",
                    lambda: handle.exec(list(argv), stdout=True, stderr=True),
                )
                stream = exec_.start(detach=False)
                try:
                    while (message := await stream.read_out()) is not None:
                        room = MAX_EXEC_OUTPUT - len(output)
                        output.extend(message.data[:room])
                finally:
                    await stream.close()
                while True:
                    details = await self._call("exec inspect", exec_.inspect)
                    if not details.get("Running"):
                        break
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise ProbeTimeoutError(
                f"{argv[0] if argv else 'the command'} did not finish in {timeout} s"
            ) from None
        except (DockerError, aiohttp.ClientError, OSError) as err:
            raise self._error(err, "exec") from None
        code = details.get("ExitCode")
        return (code if isinstance(code, int) else -1), output.decode(
            "utf-8", "replace"
        )

    async def close(self) -> None:
        """Close every exec session and the client."""
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

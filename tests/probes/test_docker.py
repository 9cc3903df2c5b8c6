"""Tests of the Docker probe against a real dockerd and real containers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
import contextlib
import io
import json
import logging
import math
import os
from pathlib import Path
import re
import secrets
import socket
import struct
import tarfile
import time
from typing import Any

from hypothesis import given, settings, strategies as st
import pytest

from custom_components.clock_drift.probes.docker import (
    _SLOT,
    EXCHANGES,
    ContainerMethod,
    ContainerReading,
    DockerClocks,
    _Answer,
    _sleep_without_slot,
    coarse_tick,
    edge_interval,
    parse_adjtimex,
    parse_answer,
    parse_rfc3339,
)
from custom_components.clock_drift.probes.model import (
    ClockKind,
    ProbeAuthError,
    ProbeConnectionError,
    ProbeResponseError,
    ProbeTimeoutError,
    Reading,
)
from tests.harness import BUSYBOX_IMAGE, GNUDATE_IMAGE, Containers, DockerDaemon
from tests.harness.servers import find_binary

NOSHELL_IMAGE = "clock-drift-test/noshell"
NO_ADJTIMEX = b"sh: adjtimex: not found =\n"
"""What a BusyBox shell without the applet answers to the stream's ``t`` line."""


def by_name(readings: list[Reading]) -> dict[str, Reading]:
    """Return readings keyed by clock name."""
    return {reading.name: reading for reading in readings}


def container_reading(reading: Reading) -> ContainerReading:
    """Return a reading narrowed to a container reading."""
    assert isinstance(reading, ContainerReading)
    return reading


def install_date(docker: Containers, name: str, script: str) -> None:
    """Put a ``date`` script ahead of the real one in the container's PATH."""
    data = f"#!/usr/bin/sh\n{script}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("usr/local", "usr/local/bin"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("usr/local/bin/date")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    docker.cli("cp", "-", f"{name}:/", stdin=buffer.getvalue())


@pytest.fixture(scope="module")
def noshell_image(docker_daemon: DockerDaemon) -> str:
    """Import an image whose only file is busybox, with no ``sh`` to exec."""
    data = Path(find_binary("busybox", "busybox-static")).read_bytes()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    docker_daemon.cli(
        "import",
        "--change",
        'CMD ["/busybox", "sleep", "100000"]',
        "-",
        NOSHELL_IMAGE,
        stdin=buffer.getvalue(),
    )
    return NOSHELL_IMAGE


@pytest.fixture
async def make_clocks(docker: Containers) -> AsyncIterator[Callable[..., DockerClocks]]:
    """Return a factory of DockerClocks on the test daemon, all closed at teardown."""
    made: list[DockerClocks] = []

    def make(**kwargs: object) -> DockerClocks:
        """Return a DockerClocks for the test daemon."""
        clocks = DockerClocks(docker.url, **kwargs)  # type: ignore[arg-type]
        made.append(clocks)
        return clocks

    yield make
    for clocks in made:
        await clocks.close()


async def test_gnu_date_container_at_plus_42(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """A GNU date container under faketime +42 s reads 42 s within 5 ms."""
    name = docker.run_container(GNUDATE_IMAGE, skew=42)
    clocks = make_clocks(containers=[name])
    for _ in range(3):
        (reading,) = await clocks.read_containers()
        reading = container_reading(reading)
        assert reading.ok, reading.error
        assert reading.method is ContainerMethod.NANOSECONDS
        assert reading.offset is not None
        assert reading.uncertainty is not None
        assert abs(reading.offset - 42) <= 0.005
        assert reading.uncertainty <= 0.005
        assert abs(reading.offset - 42) <= reading.uncertainty
        assert reading.kind is ClockKind.CONTAINER
        assert reading.image == GNUDATE_IMAGE
        assert abs((reading.taken_at or 0) - time.time()) < 1


async def _read_true_zero(
    clocks: DockerClocks, method: ContainerMethod, *, bound: float
) -> list[float]:
    """Read one container three cycles; return how long each cycle took.

    Containers share this kernel's clock, so the true offset is 0: every reading
    must be taken by ``method`` and lie within its uncertainty, itself <= ``bound``.
    """
    durations = []
    for _ in range(3):
        began = time.monotonic()
        (reading,) = await clocks.read_containers()
        durations.append(time.monotonic() - began)
        reading = container_reading(reading)
        assert reading.ok, reading.error
        assert reading.method is method
        assert reading.offset is not None
        assert reading.uncertainty is not None
        assert abs(reading.offset) <= reading.uncertainty <= bound
    return durations


async def test_busybox_adjtimex(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """BusyBox prints a literal %N: its adjtimex applet reads the clock in µs."""
    name = docker.run_container(BUSYBOX_IMAGE)
    durations = await _read_true_zero(
        make_clocks(containers=[name]), ContainerMethod.ADJTIMEX, bound=0.005
    )
    # No wait for a second's edge: each cycle is a few round trips.
    assert max(durations[1:]) < 0.2


async def test_busybox_without_adjtimex_second_edge(
    docker: Containers, make_clocks: Callable[..., DockerClocks], tmp_path: Path
) -> None:
    """Where adjtimex fails, the second's edge is bracketed, then tracked.

    Debian's BusyBox runs its applets without their links, so a seccomp profile
    that refuses the ``adjtimex`` system call stands in for a build without it.
    """
    profile = tmp_path / "no-adjtimex.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["adjtimex", "clock_adjtime"],
                        "action": "SCMP_ACT_ERRNO",
                    }
                ],
            }
        )
    )
    name = f"cd-test-{secrets.token_hex(4)}"
    docker.cli(
        "run", "--detach", "--network", "none", "--name", name,
        "--security-opt", f"seccomp={profile}", BUSYBOX_IMAGE,
    )  # fmt: skip
    docker.names.append(name)
    durations = await _read_true_zero(
        make_clocks(containers=[name]), ContainerMethod.SECOND_EDGE, bound=0.05
    )
    # Later cycles only search around the predicted edge: at most a second each.
    assert max(durations[1:]) < 1.2


async def test_ten_containers_cycle_with_open_sessions(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """Ten containers read concurrently; the second cycle reuses every session."""
    names = [docker.run_container(GNUDATE_IMAGE) for _ in range(10)]
    clocks = make_clocks(containers=names)
    first = await clocks.read_containers()
    assert all(reading.ok for reading in first), [r.error for r in first]
    sessions = dict(clocks._sessions)
    assert len(sessions) == 10
    cycles = []
    for _ in range(3):
        began = time.monotonic()
        readings = await clocks.read_containers()
        cycles.append(time.monotonic() - began)
        assert sorted(reading.name for reading in readings) == sorted(names)
        for reading in readings:
            assert reading.ok, reading.error
            assert reading.offset is not None
            assert reading.uncertainty is not None
            # Ten streams at once share two cores: a little wider than one alone.
            assert abs(reading.offset) <= reading.uncertainty <= 0.02
    assert clocks._sessions == sessions
    logging.getLogger(__name__).warning(
        "10-container cycle with open sessions: %.1f ms", min(cycles) * 1000
    )
    assert min(cycles) < 0.5


async def test_selection_by_label_and_name(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """Containers are chosen by label key, key=value, or name with or without /."""
    yes = docker.run_container(GNUDATE_IMAGE, labels={"clock": "yes"})
    no = docker.run_container(GNUDATE_IMAGE, labels={"clock": "no"})
    other = docker.run_container(GNUDATE_IMAGE)

    everything = by_name(await make_clocks().read_containers())
    assert {yes, no, other} <= set(everything)
    assert set(by_name(await make_clocks(label="clock").read_containers())) == {
        yes,
        no,
    }
    assert set(by_name(await make_clocks(label="clock=yes").read_containers())) == {yes}
    named = by_name(
        await make_clocks(containers=[f"/{yes}", other, "absent"]).read_containers()
    )
    assert set(named) == {yes, other, "absent"}
    assert named[yes].ok
    assert named[other].ok
    assert named["absent"].error == "the container is not running"

    clocks = make_clocks(containers=[yes, other])
    await clocks.read_containers()
    assert len(clocks._sessions) == 2
    docker.stop_container(other)
    readings = by_name(await clocks.read_containers())
    assert readings[other].error == "the container is not running"
    assert len(clocks._sessions) == 1


async def test_container_stopped_mid_exchange(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """A container that stops during an exchange fails alone; the others read."""
    slow = docker.run_container(GNUDATE_IMAGE)
    fine = docker.run_container(GNUDATE_IMAGE)
    install_date(docker, slow, 'sleep 3\nexec /usr/bin/date "$@"')
    clocks = make_clocks(containers=[slow, fine])

    reading_task = asyncio.create_task(clocks.read_containers())
    await asyncio.sleep(1)
    await asyncio.to_thread(docker.stop_container, slow)
    readings = by_name(await reading_task)
    assert readings[fine].ok
    assert readings[slow].error == "the container stopped during the exchange"
    assert slow not in clocks._sessions

    again = by_name(await clocks.read_containers())
    assert again[fine].ok
    assert again[slow].error == "the container is not running"


async def test_container_restarted_reopens_session(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """A restarted container's broken stream is replaced by a new session."""
    name = docker.run_container(GNUDATE_IMAGE)
    clocks = make_clocks(containers=[name])
    (reading,) = await clocks.read_containers()
    assert reading.ok
    (before,) = clocks._sessions.values()

    docker.cli("restart", "--time", "0", name)
    (reading,) = await clocks.read_containers()
    assert reading.ok, reading.error
    (after,) = clocks._sessions.values()
    assert after is not before
    assert after.container_id == before.container_id
    assert after.started_at != before.started_at


async def test_container_without_shell_uses_daemon_clock(
    docker: Containers,
    make_clocks: Callable[..., DockerClocks],
    noshell_image: str,
) -> None:
    """A container without sh shares the host's clock: the daemon's is reported."""
    name = docker.run_container(noshell_image)
    clocks = make_clocks(containers=[name])
    for _ in range(2):
        (reading,) = await clocks.read_containers()
        reading = container_reading(reading)
        assert reading.ok, reading.error
        assert reading.method is ContainerMethod.DAEMON
        assert reading.note is not None
        assert "no shell" in reading.note
        assert "Docker host's clock" in reading.note
        assert reading.offset is not None
        assert reading.uncertainty is not None
        assert abs(reading.offset) <= reading.uncertainty < 0.1
    assert clocks._sessions == {}
    assert len(clocks._no_shell) == 1
    docker.remove_container(name)
    assert await clocks.read_containers() == [
        Reading.failed(ClockKind.CONTAINER, name, "the container is not running")
    ]
    assert clocks._no_shell == {}


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("echo", "the container's date printed an empty line"),
        ("echo hello", "the container's date printed 'hello'"),
        ("printf '%01100d\\n' 0", "longer than 1024 bytes"),
        ("printf '%01100d' 0", "longer than 1024 bytes"),
        ("echo oops >&2", "the container's shell said 'oops'"),
        ("echo 1796400350.12x", "the container's date printed '1796400350.12x'"),
        ('echo 1796400350.123; echo "1796400350.%N"', "changed its format"),
        ("kill -9 $PPID", "the exec stream ended"),
    ],
)
async def test_bad_date_output_is_a_per_container_error(
    docker: Containers,
    make_clocks: Callable[..., DockerClocks],
    script: str,
    message: str,
) -> None:
    """Empty, non-numeric, huge or stderr output fails that container only."""
    bad = docker.run_container(GNUDATE_IMAGE)
    good = docker.run_container(GNUDATE_IMAGE)
    install_date(docker, bad, script)
    clocks = make_clocks(containers=[bad, good], timeout=2.0)
    readings = by_name(await clocks.read_containers())
    assert readings[good].ok
    assert readings[bad].error is not None
    assert message in readings[bad].error
    assert bad not in {s.container_id for s in clocks._sessions.values()}


async def test_silent_container_times_out(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """A date that never answers is a timeout for that container."""
    name = docker.run_container(GNUDATE_IMAGE)
    install_date(docker, name, "sleep 30")
    clocks = make_clocks(containers=[name], timeout=0.5)
    (reading,) = await clocks.read_containers()
    assert reading.error == "the container's clock did not answer in time"


async def test_read_host(make_clocks: Callable[..., DockerClocks]) -> None:
    """The daemon's clock is this machine's: offset 0 within its bound."""
    reading = await make_clocks().read_host()
    assert reading.kind is ClockKind.DOCKER_HOST
    assert reading.ok
    assert reading.offset is not None
    assert reading.uncertainty is not None
    assert abs(reading.offset) <= reading.uncertainty < 0.1


async def test_exec_runs_fixed_argv(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """Exec returns exit code and output; no shell interprets the arguments."""
    name = docker.run_container(GNUDATE_IMAGE, skew=42)
    clocks = make_clocks()
    code, output = await clocks.exec(name, ["date", "+%s", ";", "echo"])
    assert code == 1
    assert "extra operand" in output
    code, output = await clocks.exec(f"/{name}", ["date", "+%s"])
    assert code == 0
    assert abs(int(output) - time.time() - 42) < 2
    code, output = await clocks.exec(name, ["no-such-binary"])
    assert code in (126, 127)
    assert "executable file not found" in output
    with pytest.raises(ProbeTimeoutError, match="did not finish"):
        await clocks.exec(name, ["sleep", "5"], timeout=0.5)
    with pytest.raises(ProbeResponseError, match="No such container"):
        await clocks.exec("absent-container", ["true"])


async def test_unreachable_daemon(
    real_sockets: None, tmp_path: Path, docker_daemon: DockerDaemon
) -> None:
    """A missing socket or closed port is a connection error without credentials."""
    clocks = DockerClocks(f"unix://{tmp_path}/missing.sock")
    with pytest.raises(ProbeConnectionError, match="cannot connect"):
        await clocks.read_host()
    with pytest.raises(ProbeConnectionError, match="cannot connect"):
        await clocks.read_containers()
    await clocks.close()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clocks = DockerClocks(f"tcp://user:hunter2@127.0.0.1:{port}")
    assert clocks.name == f"tcp://127.0.0.1:{port}"
    with pytest.raises(ProbeConnectionError) as caught:
        await clocks.read_host()
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ProbeConnectionError):
        await clocks.exec("x", ["true"])
    await clocks.close()


async def test_permission_denied(real_sockets: None, tmp_path: Path) -> None:
    """A socket we may not open is an auth error, not a connection error."""
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        path.chmod(0)
        clocks = DockerClocks(f"unix://{path}")
        switched = os.geteuid() == 0
        if switched:
            # root ignores file modes: connect as nobody for this one call.
            os.seteuid(65534)
        try:
            with pytest.raises(ProbeAuthError, match="permission denied"):
                await clocks.read_host()
        finally:
            if switched:
                os.seteuid(0)
        await clocks.close()


def test_endpoint_validation() -> None:
    """Only unix:// and tcp:// endpoints are accepted."""
    with pytest.raises(ValueError, match="unix:// or tcp://"):
        DockerClocks("ftp://host")
    assert DockerClocks("tcp://[::1]:2375").name == "tcp://[::1]:2375"


def test_parse_answer() -> None:
    """Lines of date parse to seconds and fraction digits, or a clear error."""
    assert parse_answer(b"1796400350.802043438") == (1796400350, "802043438")
    assert parse_answer(b"1796400350.%N") == (1796400350, None)
    with pytest.raises(ProbeResponseError, match="empty line"):
        parse_answer(b"  ")
    with pytest.raises(ProbeResponseError, match="printed"):
        parse_answer(b"\xff\x00")


ADJTIMEX_OUTPUT = b"""    mode:         0
-o  offset:       0 us
    status:       %d (UNSYNC)
-t  tick:         10000 us
    time.tv_sec:  1796403858
    time.tv_usec: %d
    return value: 5 (clock not synchronized)"""


def test_parse_adjtimex() -> None:
    """Microseconds, nanoseconds under STA_NANO, nothing, or out of range."""
    assert parse_adjtimex(ADJTIMEX_OUTPUT % (64, 42)) == (1796403858, "000042")
    assert parse_adjtimex(ADJTIMEX_OUTPUT % (0x2040, 42)) == (1796403858, "000000042")
    assert parse_adjtimex(b"sh: adjtimex: not found") is None
    assert parse_adjtimex(b"adjtimex: adjtimex: Operation not permitted") is None
    with pytest.raises(ProbeResponseError, match="out of range"):
        parse_adjtimex(ADJTIMEX_OUTPUT % (64, 1_000_000))


def test_parse_rfc3339() -> None:
    """The daemon's SystemTime keeps its nanoseconds and its resolution."""
    value, resolution = parse_rfc3339("2026-12-04T16:12:20.233944614Z")
    assert value == pytest.approx(1796400740.233944614, abs=1e-6)
    assert resolution == pytest.approx(1e-9)
    value, resolution = parse_rfc3339("2026-12-04T17:12:20+01:00")
    assert value == 1796400740.0
    assert resolution == 1.0
    with pytest.raises(ProbeResponseError, match="not a time"):
        parse_rfc3339("yesterday")
    with pytest.raises(ProbeResponseError, match="not a time"):
        parse_rfc3339("2026-13-04T16:12:20Z")


@settings(max_examples=300, deadline=None)
@given(
    offset=st.floats(min_value=-1e4, max_value=1e4, allow_nan=False),
    start=st.floats(min_value=1.7e9, max_value=1.8e9),
    tick=st.sampled_from([0.001, 0.004, 0.01]),
    exchanges=st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=0.01),  # pause before sending
            st.floats(min_value=0.0, max_value=0.005),  # round trip
            st.floats(min_value=0.0, max_value=1.0),  # where in it the clock is read
            st.floats(min_value=0.0, max_value=1.0),  # coarse clock lag, in ticks
        ),
        min_size=1,
        max_size=400,
    ),
)
def test_edge_interval_contains_true_offset(
    offset: float,
    start: float,
    tick: float,
    exchanges: list[tuple[float, float, float, float]],
) -> None:
    """Whatever the timing and coarse lag, the bracket holds the true offset."""
    answers = []
    now = start
    for pause, round_trip, where, lag in exchanges:
        t0 = now + pause
        t1 = t0 + round_trip
        read_at = t0 + where * round_trip - lag * tick
        answers.append(_Answer(t0, t1, math.floor(read_at + offset), None))
        now = t1
    low, high = edge_interval(answers, tick)
    # Float rounding of the sums at 1.8e9 is below a microsecond.
    assert low - 1e-6 <= offset <= high + 1e-6
    if len({answer.seconds for answer in answers}) > 1:
        # Across an edge: at most a pause, two round trips and a tick wide.
        assert high - low <= 0.01 + 2 * 0.005 + tick + 1e-6


def test_coarse_tick() -> None:
    """A local daemon's tick is this kernel's coarse resolution; remote ones 10 ms."""
    assert 0 < coarse_tick("unix:///var/run/docker.sock") <= 0.01
    assert coarse_tick("tcp://127.0.0.1:2375") == 0.01


async def test_close_releases_everything(
    docker: Containers, make_clocks: Callable[..., DockerClocks]
) -> None:
    """close() ends every session and the client; a later read opens anew."""
    name = docker.run_container(GNUDATE_IMAGE)
    clocks = make_clocks(containers=[name])
    await clocks.read_containers()
    (session,) = clocks._sessions.values()
    client = clocks._client
    assert client is not None
    await clocks.close()
    assert clocks._sessions == {}
    assert clocks._client is None
    assert client.session.closed
    assert session.stream._closed
    with contextlib.suppress(Exception):
        await clocks.close()
    (reading,) = await clocks.read_containers()
    assert reading.ok


def frame(data: bytes, stream: int = 1) -> bytes:
    """Return a multiplexed exec-stream frame."""
    return struct.pack(">BxxxL", stream, len(data)) + data


class BadDocker:
    """A tiny Docker Engine API on a Unix socket whose answers the test scripts.

    It stands in for dockerd only to send replies a real daemon sends in races
    (a container stopping between two calls) or never sends (a refusing socket
    proxy, garbage): that is the bad input under test.
    """

    def __init__(self) -> None:
        """Start with a healthy one-container daemon."""
        self.info: Any = {"SystemTime": "2026-12-04T16:12:20.233944614Z"}
        self.info_delay = 0.0
        self.status: dict[str, tuple[int, Any]] = {}
        self.listing: Any = [{"Id": "c1" * 32, "Names": ["/one"], "Image": "img"}]
        self.inspect: list[Any] = []
        self.exec_creates: list[tuple[int, Any]] = []
        self.streams: list[tuple[list[bytes], list[bytes | None]]] = []
        self.exec_running: list[bool] = []
        self.answer_delay = 0.0

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve HTTP/1.1 requests on one connection."""
        try:
            while request := await reader.readuntil(b"\r\n\r\n"):
                head = request.decode().split("\r\n")
                method, target, _ = head[0].split(" ")
                length = next(
                    (
                        int(h.split(":")[1])
                        for h in head
                        if h.lower().startswith("content-length")
                    ),
                    0,
                )
                if length:
                    await reader.readexactly(length)
                path = re.sub(r"^/v[0-9.]+/", "/", target.split("?")[0])
                if await self.route(method, path, reader, writer):
                    return
        except asyncio.IncompleteReadError, ConnectionError:
            pass
        finally:
            writer.close()

    @staticmethod
    def reply(writer: asyncio.StreamWriter, status: int, body: Any) -> None:
        """Write a JSON response."""
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )

    async def exec_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Hijack the connection: send the scripted frames, one answer per line."""
        initial, answers = self.streams.pop(0) if self.streams else ([], [])
        writer.write(
            b"HTTP/1.1 101 UPGRADED\r\n"
            b"Content-Type: application/vnd.docker.raw-stream\r\n"
            b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        )
        for data in initial:
            writer.write(frame(data))
        await writer.drain()
        while answers and await reader.readline():
            answer = answers.pop(0)
            if answer is None:
                break
            await asyncio.sleep(self.answer_delay)
            writer.write(frame(answer))
            await writer.drain()

    async def route(
        self,
        method: str,
        path: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; return True when the connection was hijacked."""
        for prefix, (status, body) in self.status.items():
            if path.startswith(prefix):
                self.reply(writer, status, body)
                return False
        if path == "/version":
            self.reply(writer, 200, {"ApiVersion": "1.41"})
        elif path == "/info":
            await asyncio.sleep(self.info_delay)
            self.reply(writer, 200, self.info)
        elif path == "/containers/json":
            self.reply(writer, 200, self.listing)
        elif path.startswith("/containers/") and path.endswith("/json"):
            status, body = (
                self.inspect.pop(0)
                if self.inspect
                else (200, {"State": {"Running": True, "StartedAt": "t"}})
            )
            self.reply(writer, status, body)
        elif path.endswith("/exec") and method == "POST":
            status, body = (
                self.exec_creates.pop(0) if self.exec_creates else (201, {"Id": "e1"})
            )
            self.reply(writer, status, body)
        elif path.endswith("/start"):
            await self.exec_stream(reader, writer)
            return True
        elif path.startswith("/exec/") and path.endswith("/json"):
            running = self.exec_running.pop(0) if self.exec_running else False
            self.reply(
                writer,
                200,
                {"Running": running, "ExitCode": 0, "ProcessConfig": {"tty": False}},
            )
        else:
            self.reply(writer, 404, {"message": "page not found"})
        return False


@pytest.fixture
async def bad_docker(
    real_sockets: None, tmp_path: Path
) -> AsyncIterator[tuple[BadDocker, DockerClocks]]:
    """Return a scripted Docker API and a DockerClocks on it."""
    api = BadDocker()
    path = tmp_path / "bad.sock"
    server = await asyncio.start_unix_server(api.handle, path=str(path))
    clocks = DockerClocks(f"unix://{path}", timeout=0.5)
    yield api, clocks
    await clocks.close()
    server.close()
    await server.wait_closed()


async def read_one(clocks: DockerClocks) -> Reading:
    """Return the only container reading."""
    (reading,) = await clocks.read_containers()
    return reading


async def test_refusing_socket_proxy(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """A socket proxy answering 403 is an auth error."""
    api, clocks = bad_docker
    api.status["/info"] = (403, {"message": "forbidden by the proxy"})
    with pytest.raises(ProbeAuthError, match="refused /info: forbidden by the proxy"):
        await clocks.read_host()


async def test_garbage_daemon_answers(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """No SystemTime, no list, a slow /info: clear errors, never a crash."""
    api, clocks = bad_docker
    api.info = {"ID": "x"}
    with pytest.raises(ProbeResponseError, match="sent no SystemTime"):
        await clocks.read_host()
    api.info_delay = 1.0
    with pytest.raises(ProbeTimeoutError, match="did not answer /info"):
        await clocks.read_host()
    api.listing = {"not": "a list"}
    with pytest.raises(ProbeResponseError, match="sent no container list"):
        await clocks.read_containers()


@pytest.mark.parametrize(
    ("inspect", "message"),
    [
        ([(404, {"message": "No such container: c1"})], "the container is gone"),
        ([(200, {"Id": "c1"})], "the daemon sent no container state"),
        ([(200, {"State": {"Running": False}})], "the container is not running"),
    ],
)
async def test_container_vanishing_between_calls(
    bad_docker: tuple[BadDocker, DockerClocks], inspect: list[Any], message: str
) -> None:
    """A container listed as running but gone when inspected fails alone."""
    api, clocks = bad_docker
    api.inspect = inspect
    reading = await read_one(clocks)
    assert reading.error is not None
    assert message in reading.error


async def test_exec_refused_for_a_stopping_container(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """Exec refused with 409 (stopping), or the stream refused, fails that container."""
    api, clocks = bad_docker
    api.exec_creates = [(409, {"message": "Container c1 is not running"})]
    assert (await read_one(clocks)).error == "the container is not running"
    api.status["/exec/e1/start"] = (500, {"message": "exec start failed"})
    reading = await read_one(clocks)
    assert reading.error is not None
    assert "exec start failed" in reading.error
    assert clocks._sessions == {}


async def test_stream_breaks_then_container_stops(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """The stream ends, the container still looks up, then exec says it stopped."""
    api, clocks = bad_docker
    api.streams = [([], [None])]
    api.exec_creates = [
        (201, {"Id": "e1"}),
        (409, {"message": "Container c1 is not running"}),
    ]
    assert (await read_one(clocks)).error == "the container stopped during the exchange"
    api.streams = [([], [None])]
    api.inspect = [
        (200, {"State": {"Running": True, "StartedAt": "t"}}),
        (200, {"State": {"Running": False, "StartedAt": "t"}}),
    ]
    assert (await read_one(clocks)).error == "the container stopped during the exchange"
    api.streams = [
        ([b"OCI runtime exec failed: cannot exec in a stopped state: unknown\r\n"], [])
    ]
    api.inspect = [
        (200, {"State": {"Running": True, "StartedAt": "t"}}),
        (200, {"State": {"Running": True, "StartedAt": "t"}}),
    ]
    assert (await read_one(clocks)).error == "the container stopped during the exchange"


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ([b"100.%N\n", NO_ADJTIMEX, *[b"100.%N\n"] * 400], "did not advance in 1.2 s"),
        (
            [b"100.%N\n", NO_ADJTIMEX, b"100.%N\n", b"102.%N\n"],
            "inconsistent (it stepped during the search)",
        ),
        ([b"100.%N\n", NO_ADJTIMEX, b"100.%N\n", b"100.5\n"], "changed its format"),
    ],
)
async def test_whole_second_clock_misbehaving(
    bad_docker: tuple[BadDocker, DockerClocks], answers: list[bytes], message: str
) -> None:
    """A whole-second clock that stalls, jumps or changes format is an error."""
    api, clocks = bad_docker
    api.streams = [([], list(answers))]
    reading = await read_one(clocks)
    assert reading.error is not None
    assert message in reading.error


async def test_whole_second_clock_that_stepped_between_cycles(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """When the edge is not where the last cycle predicts, a full search follows."""
    api, clocks = bad_docker
    api.streams = [
        (
            [],
            [
                b"100.%N\n",
                NO_ADJTIMEX,
                b"100.%N\n",
                b"101.%N\n",
                *[b"101.%N\n"] * 40,
                b"102.%N\n",
            ],
        )
    ]
    first = await read_one(clocks)
    assert first.ok, first.error
    second = await read_one(clocks)
    assert second.ok, second.error
    assert second.offset is not None
    assert first.offset is not None
    # Its clock stood still at 101 for a while: it is now behind where it was.
    assert second.offset < first.offset - 0.1


async def test_whole_second_clock_through_a_slow_stream(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """A stream too slow to bracket the edge within 50 ms is an error, not a guess."""
    api, clocks = bad_docker
    api.answer_delay = 0.06
    api.streams = [([], [b"100.%N\n", NO_ADJTIMEX, b"100.%N\n", b"101.%N\n"])]
    reading = await read_one(clocks)
    assert reading.error is not None
    assert "exec stream is too slow" in reading.error


async def test_exec_waits_for_exit_code(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """exec() polls until the process has exited, and maps a refused start."""
    api, clocks = bad_docker
    api.streams = [([b"tracking\n"], [])]
    api.exec_running = [True, True, False]
    assert await clocks.exec("one", ["chronyc", "-c", "tracking"]) == (0, "tracking\n")
    api.status["/exec/e1/start"] = (500, {"message": "exec start failed"})
    with pytest.raises(ProbeResponseError, match="exec start failed"):
        await clocks.exec("one", ["true"])


async def test_adjtimex_misbehaving(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """An adjtimex that floods, is cut short or stops answering fails that reading."""
    api, clocks = bad_docker
    good = (ADJTIMEX_OUTPUT % (64, 5)).replace(b"\n", b" ") + b" =\n"
    api.streams = [([], [b"100.%N\n", b"x" * 2000 + b"\n"])]
    reading = await read_one(clocks)
    assert reading.error is not None
    assert "longer than" in reading.error
    api.streams = [([], [b"100.%N\n", b"time.tv_sec: 5\n"])]
    reading = await read_one(clocks)
    assert reading.error is not None
    assert "adjtimex printed 'time.tv_sec: 5'" in reading.error
    api.streams = [([], [b"100.%N\n", good, NO_ADJTIMEX])]
    reading = await read_one(clocks)
    assert reading.error is not None
    assert "adjtimex stopped answering" in reading.error
    api.streams = [([], [b"100.%N\n", *[good] * EXCHANGES, NO_ADJTIMEX])]
    first = container_reading(await read_one(clocks))
    assert first.ok, first.error
    assert first.method is ContainerMethod.ADJTIMEX
    assert first.offset is not None
    assert abs(first.offset - (1796403858 - time.time())) < 60
    reading = await read_one(clocks)
    assert reading.error is not None
    assert "adjtimex stopped answering" in reading.error


async def test_nanosecond_date_losing_its_fraction_later(
    bad_docker: tuple[BadDocker, DockerClocks],
) -> None:
    """A date that printed nanoseconds and then a literal %N is an error."""
    api, clocks = bad_docker
    api.streams = [([], [*[b"100.5\n"] * EXCHANGES, b"100.%N\n"])]
    assert (await read_one(clocks)).ok
    reading = await read_one(clocks)
    assert reading.error is not None
    assert "changed its format" in reading.error


async def test_sleeping_to_an_edge_gives_the_slot_back() -> None:
    """While one reading sleeps to a second's edge, another takes its slot."""
    slot = asyncio.Semaphore(1)
    order: list[str] = []

    async def sleeper() -> None:
        """Hold the slot, sleep to an edge, then finish holding it again."""
        async with slot:
            _SLOT.set(slot)
            await _sleep_without_slot(0.05)
            assert slot.locked()
            order.append("sleeper")

    async def other() -> None:
        """Take the only slot while the sleeper sleeps."""
        await asyncio.sleep(0.01)
        async with slot:
            order.append("other")

    await asyncio.gather(sleeper(), other())
    assert order == ["other", "sleeper"]
    assert not slot.locked()
    await _sleep_without_slot(0)

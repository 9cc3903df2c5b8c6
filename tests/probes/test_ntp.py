"""Tests of the NTP probe against a real chronyd and a test server that misbehaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
import random
import resource
import struct
import time

import pytest

from custom_components.clock_drift.probes import (
    ClockKind,
    ProbeConnectionError,
    ProbeResponseError,
    Reading,
)
from custom_components.clock_drift.probes.ntp import (
    NtpKissOfDeathError,
    NtpMalformedError,
    NtpModeError,
    NtpOriginMismatchError,
    NtpReading,
    NtpTimeoutError,
    NtpUnsynchronisedError,
    median_offset,
    parse_server,
    query_ntp,
    query_ntp_servers,
    ref_id_text,
)
from tests.harness import NtpServer, StartNtpServer

type Reply = Callable[[bytes, int], list[bytes]]
"""Builds the datagrams to send back for the n-th request (0-based)."""

NTP_DELTA = 2208988800


def server_packet(
    request: bytes,
    *,
    leap: int = 0,
    mode: int = 4,
    stratum: int = 2,
    ref_id: bytes = b"\x7f\x00\x00\x01",
    origin: bytes | None = None,
) -> bytes:
    """Return a server reply to ``request`` with the local clock as the server's."""
    now = time.time()
    stamp = struct.pack(
        "!II", int(now + NTP_DELTA), int((now % 1) * 2**32) & 0xFFFFFFFF
    )
    header = struct.pack(
        "!BBbb", leap << 6 | 4 << 3 | mode, stratum, 0, -20
    ) + struct.pack("!II", 0, 0)
    return (
        header
        + ref_id
        + stamp
        + (request[40:48] if origin is None else origin)
        + stamp
        + stamp
    )


class BadServer(asyncio.DatagramProtocol):
    """A UDP server on 127.0.0.1 answering each request with ``reply``'s datagrams."""

    def __init__(self, reply: Reply) -> None:
        """Remember how to answer."""
        self.reply = reply
        self.requests: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport to answer through."""
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """Answer with the datagrams the test asked for."""
        assert self.transport is not None
        for datagram in self.reply(data, len(self.requests)):
            self.transport.sendto(datagram, addr)
        self.requests.append(data)

    @property
    def address(self) -> str:
        """Return ``127.0.0.1:port``."""
        assert self.transport is not None
        return "127.0.0.1:{}".format(self.transport.get_extra_info("sockname")[1])


@pytest.fixture
async def bad_server(
    real_sockets: None,
) -> AsyncIterator[Callable[[Reply], BadServer]]:
    """Return a factory of misbehaving UDP servers, closed at teardown."""
    servers: list[BadServer] = []

    async def start(reply: Reply) -> BadServer:
        """Start a server that answers with ``reply``."""
        loop = asyncio.get_running_loop()
        _, server = await loop.create_datagram_endpoint(
            lambda: BadServer(reply), local_addr=("127.0.0.1", 0)
        )
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        assert server.transport is not None
        server.transport.close()


async def test_reads_a_skewed_server(start_ntp_server: StartNtpServer) -> None:
    """A chronyd 3.5 s behind reads -3.5 s within 2 ms and within its uncertainty."""
    server = start_ntp_server(skew=-3.5)
    reading = await query_ntp(server.address)
    assert isinstance(reading, NtpReading)
    assert reading.kind is ClockKind.NTP
    assert reading.name == server.address
    assert reading.offset == pytest.approx(-3.5, abs=0.002)
    assert reading.uncertainty is not None
    assert abs(reading.offset + 3.5) <= reading.uncertainty
    assert 0 < reading.delay < 0.01
    assert reading.uncertainty >= reading.delay / 2
    assert reading.stratum == 8
    assert reading.leap == 0
    assert reading.ref_id == "127.127.1.1"
    assert reading.taken_at == pytest.approx(time.time(), abs=1)


async def test_several_servers_and_their_median(
    start_ntp_server: StartNtpServer,
) -> None:
    """Servers are read concurrently; one down gives a failed reading, not a raise."""
    # Skews of 1 s or less come out halved: chronyd takes its receive timestamp from
    # the kernel, which libfaketime does not skew, unless it is over 1 s off.
    behind, ahead = start_ntp_server(skew=-3.5), start_ntp_server(skew=2.0)
    down = NtpServer()  # not started: its port refuses datagrams
    readings = await query_ntp_servers(
        [behind.address, ahead.address, down.address], timeout=0.5
    )
    assert [reading.name for reading in readings] == [
        behind.address,
        ahead.address,
        down.address,
    ]
    assert readings[0].offset == pytest.approx(-3.5, abs=0.002)
    assert readings[1].offset == pytest.approx(2.0, abs=0.002)
    assert not readings[2].ok
    assert readings[2].error is not None
    assert "could not be reached" in readings[2].error
    assert median_offset(readings) == pytest.approx(-0.75, abs=0.002)
    assert median_offset(readings[2:]) is None


async def test_ipv6_loopback(bad_server: Callable[[Reply], BadServer]) -> None:
    """``[::1]:PORT`` is sent over IPv6; nothing listening there is refused."""
    with pytest.raises(ProbeConnectionError, match="could not be reached"):
        await query_ntp("[::1]:9", timeout=0.5)


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("pool.ntp.org", ("pool.ntp.org", 123)),
        ("127.0.0.1:1234", ("127.0.0.1", 1234)),
        ("[::1]:1234", ("::1", 1234)),
        ("[::1]", ("::1", 123)),
        ("::1", ("::1", 123)),
        (" time.example:99 ", ("time.example", 99)),
    ],
)
def test_parse_server(server: str, expected: tuple[str, int]) -> None:
    """Host, host:port, bracketed and bare IPv6 addresses are understood."""
    assert parse_server(server) == expected


@pytest.mark.parametrize(
    "server",
    ["", "host:", "host:0", "host:65536", "host:abc", "[::1", "[::1]x", "1::2::3"],
)
async def test_invalid_server(server: str) -> None:
    """A malformed server string is a connection error naming it, before any I/O."""
    with pytest.raises(ProbeConnectionError, match="invalid NTP server"):
        await query_ntp(server)


async def test_unresolvable_host(real_sockets: None) -> None:
    """An address that does not resolve is a connection error.

    Tests may not resolve names (the plugin blocks DNS): an IPv6 loopback with a zone
    that does not exist fails in the real getaddrinfo instead.
    """
    with pytest.raises(ProbeConnectionError, match=r"cannot resolve ::1%nosuchif"):
        await query_ntp("[::1%nosuchif]:123", timeout=5)


def test_resolution_timeout(real_sockets: None) -> None:
    """A resolution that outlasts the timeout is a timeout.

    The loop resolves names in its executor: one busy worker makes resolving slow.
    Home Assistant's test loop forbids replacing its executor, so a plain loop runs.
    """

    async def resolve_slowly() -> None:
        """Occupy the only executor worker, then query by name."""
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        busy = loop.run_in_executor(None, time.sleep, 0.5)
        with pytest.raises(NtpTimeoutError, match=r"resolving localhost took over"):
            await query_ntp("localhost", timeout=0.1)
        await busy

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(resolve_slowly())


async def test_no_socket_left(real_sockets: None) -> None:
    """When no socket can be opened (EMFILE), the probe says it could not reach."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (0, hard))
    try:
        with pytest.raises(ProbeConnectionError, match="Too many open files"):
            await query_ntp("127.0.0.1:9", timeout=0.5)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_refused(real_sockets: None) -> None:
    """An ICMP port unreachable is a connection error, not a timeout."""
    down = NtpServer()
    with pytest.raises(ProbeConnectionError, match="Connection refused"):
        await query_ntp(down.address, timeout=1)


async def test_request_carries_a_random_nonce(
    bad_server: Callable[[Reply], BadServer],
) -> None:
    """Each request is a v4 client packet with a fresh transmit timestamp."""
    server = await bad_server(lambda request, _: [server_packet(request)])
    reading = await query_ntp(server.address, samples=4)
    assert reading.offset == pytest.approx(0, abs=0.005)
    assert len(server.requests) == 4
    assert all(request[0] == 0x23 for request in server.requests)
    assert len({request[40:48] for request in server.requests}) == 4
    seconds = struct.unpack("!I", server.requests[0][40:44])[0] - NTP_DELTA
    assert seconds == pytest.approx(time.time(), abs=2)


async def test_keeps_the_smallest_delay(
    bad_server: Callable[[Reply], BadServer],
) -> None:
    """Of several samples, the one with the smallest delay is kept."""

    def reply(request: bytes, index: int) -> list[bytes]:
        """Answer the second request at once, the others 30 ms late."""
        packet = server_packet(request)
        if index != 1:
            time.sleep(0.03)
        return [packet]

    server = await bad_server(reply)
    reading = await query_ntp(server.address, samples=3)
    assert reading.delay < 0.02
    assert len(server.requests) == 3


async def test_stale_reply_then_the_right_one(
    bad_server: Callable[[Reply], BadServer],
) -> None:
    """A reply with a foreign origin is ignored and the right one still accepted."""
    server = await bad_server(
        lambda request, _: [
            server_packet(request, origin=random.randbytes(8)),
            server_packet(request),
        ]
    )
    reading = await query_ntp(server.address, samples=1)
    assert reading.ok


async def test_timeout_after_good_samples_keeps_them(
    bad_server: Callable[[Reply], BadServer],
) -> None:
    """A lost reply after good samples ends sampling without failing the reading."""
    server = await bad_server(
        lambda request, index: [server_packet(request)] if index == 0 else []
    )
    reading = await query_ntp(server.address, samples=4, timeout=0.2)
    assert reading.ok
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("reply", "error", "match"),
    [
        pytest.param(
            lambda request: [server_packet(request, origin=random.randbytes(8))],
            NtpOriginMismatchError,
            r"ignored 1 reply\(ies\) whose origin timestamp is not our transmit"
            r" timestamp \(spoofed or stale\)",
            id="wrong-origin",
        ),
        pytest.param(
            lambda request: [server_packet(request, mode=3)],
            NtpModeError,
            r"answered in mode 3, not server mode \(4\)",
            id="wrong-mode",
        ),
        pytest.param(
            lambda request: [server_packet(request, leap=3, stratum=0, ref_id=b"RATE")],
            NtpKissOfDeathError,
            "sent a Kiss-o'-Death: RATE",
            id="kiss-of-death",
        ),
        pytest.param(
            lambda request: [server_packet(request, leap=3, stratum=4)],
            NtpUnsynchronisedError,
            r"is not synchronised \(leap indicator 3, stratum 4\)",
            id="leap-3",
        ),
        pytest.param(
            lambda request: [server_packet(request, stratum=0, ref_id=bytes(4))],
            NtpUnsynchronisedError,
            r"is not synchronised \(leap indicator 0, stratum 0\)",
            id="stratum-0-without-code",
        ),
        pytest.param(
            lambda request: [server_packet(request, stratum=16)],
            NtpUnsynchronisedError,
            "stratum 16",
            id="stratum-16",
        ),
        pytest.param(
            lambda request: [server_packet(request)[:10]],
            NtpMalformedError,
            r"ignored 1 datagram\(s\) that are not NTP replies \(truncated: 10 bytes\)",
            id="truncated",
        ),
        pytest.param(
            lambda request: [bytes([0x04]) + random.randbytes(47)],
            NtpMalformedError,
            r"not NTP replies \(garbage: version 0\)",
            id="version-0",
        ),
        pytest.param(
            lambda request: [
                server_packet(request)[:20],
                server_packet(request, origin=random.randbytes(8)),
            ],
            NtpMalformedError,
            r"\(truncated: 20 bytes\) and 1 with a foreign origin",
            id="truncated-and-foreign",
        ),
        pytest.param(
            lambda request: [],
            NtpTimeoutError,
            r"no valid reply from .* within 0\.2 s: no answer",
            id="no-answer",
        ),
    ],
)
async def test_rejections(
    bad_server: Callable[[Reply], BadServer],
    reply: Callable[[bytes], list[bytes]],
    error: type[Exception],
    match: str,
) -> None:
    """Each bad reply, sent as a real datagram, raises its own clear error."""
    server = await bad_server(lambda request, _: reply(request))
    with pytest.raises(error, match=match) as caught:
        await query_ntp(server.address, samples=2, timeout=0.2)
    assert server.address in str(caught.value)
    if isinstance(caught.value, NtpKissOfDeathError):
        assert caught.value.code == "RATE"


async def test_random_garbage(bad_server: Callable[[Reply], BadServer]) -> None:
    """Random datagrams of any length are never taken for a reading."""
    rng = random.Random(4330)
    server = await bad_server(
        lambda request, _: [rng.randbytes(rng.randrange(1, 200)) for _ in range(20)]
    )
    with pytest.raises(ProbeResponseError, match="ignored"):
        await query_ntp(server.address, samples=1, timeout=0.2)


async def test_failed_servers_become_failed_readings(
    bad_server: Callable[[Reply], BadServer],
) -> None:
    """query_ntp_servers turns each server's error into a failed NTP reading."""
    server = await bad_server(
        lambda request, _: [server_packet(request, stratum=0, ref_id=b"DENY")]
    )
    readings = await query_ntp_servers([server.address], timeout=0.2)
    assert readings == [
        Reading.failed(
            ClockKind.NTP,
            server.address,
            f"{server.address} sent a Kiss-o'-Death: DENY",
        )
    ]


def test_ref_id_text() -> None:
    """Reference ids read as a code at stratum 0 and 1, as an address above."""
    assert ref_id_text(int.from_bytes(b"GPS\0", "big"), 1) == "GPS"
    assert ref_id_text(0x7F000001, 3) == "127.0.0.1"

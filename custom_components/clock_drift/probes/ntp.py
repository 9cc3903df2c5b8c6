"""NTP probe: SNTP client queries over an asyncio datagram endpoint (ntplib's codec)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
import ipaddress
import secrets
import socket
import statistics
import struct
import time
from typing import Final, cast

import ntplib

from .model import (
    ClockKind,
    ProbeConnectionError,
    ProbeError,
    ProbeResponseError,
    ProbeTimeoutError,
    Reading,
)

NTP_PORT: Final = 123
PACKET_SIZE: Final = 48
MODE_CLIENT: Final = 3
MODE_SERVER: Final = 4
LEAP_UNSYNCHRONISED: Final = 3
MAX_STRATUM: Final = 15
SAMPLE_GAP: Final = 0.002
"""Seconds between two exchanges with the same server."""
LOCAL_RESOLUTION: Final = time.get_clock_info("time").resolution
_ORIGIN: Final = slice(24, 32)
_TRANSMIT: Final = slice(40, 48)


@dataclass(frozen=True, slots=True, kw_only=True)
class NtpReading(Reading):
    """An NTP server's clock: ``offset`` is the server minus the local clock."""

    delay: float
    stratum: int
    ref_id: str
    leap: int


class NtpTimeoutError(ProbeTimeoutError):
    """No datagram at all came back in time."""


class NtpOriginMismatchError(ProbeResponseError):
    """Only replies to someone else's request came back (spoofed or stale)."""


class NtpMalformedError(ProbeResponseError):
    """A datagram that is not an NTP packet came back (truncated or garbage)."""


class NtpModeError(ProbeResponseError):
    """The reply is not in server mode (4)."""


class NtpKissOfDeathError(ProbeResponseError):
    """The server sent a Kiss-o'-Death (stratum 0) with a kiss code."""

    def __init__(self, message: str, code: str) -> None:
        """Keep the kiss code (``RATE``, ``DENY``…) next to the message."""
        super().__init__(message)
        self.code = code


class NtpUnsynchronisedError(ProbeResponseError):
    """The server says its own clock is not synchronised (leap indicator 3)."""


def parse_server(server: str) -> tuple[str, int]:
    """Split ``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    text = server.strip()
    host, port = text, str(NTP_PORT)
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid NTP server {server!r}")
        port = rest[1:] if rest else port
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"invalid NTP server {server!r}")
    if ":" in host:
        ipaddress.IPv6Address(host.split("%")[0])
    return host, int(port)


def ref_id_text(ref_id: int, stratum: int) -> str:
    """Return a reference id as a 4-character code (stratum 0 or 1) or an address."""
    raw = ref_id.to_bytes(4, "big")
    if stratum <= 1:
        return raw.rstrip(b"\0").decode("ascii", "replace")
    return socket.inet_ntoa(raw)


def _request() -> bytes:
    """Return a client request whose transmit timestamp ends in a random nonce.

    The server copies our transmit timestamp into its origin field; 32 random bits in
    the fraction make a blind spoofer or a stale reply fail the origin check.
    """
    packet = ntplib.NTPPacket(version=4, mode=MODE_CLIENT, tx_timestamp=0).to_data()
    seconds = int(ntplib.system_to_ntp_time(time.time())) & 0xFFFFFFFF
    transmit = struct.pack("!II", seconds, secrets.randbits(32))
    return bytes(packet[:40]) + transmit


class _Protocol(asyncio.DatagramProtocol):
    """Queues each datagram with the local time it arrived, or the socket's error."""

    def __init__(self) -> None:
        """Create the queue."""
        self.queue: asyncio.Queue[tuple[bytes, float] | Exception] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """Timestamp the datagram first: any later microsecond counts as delay."""
        self.queue.put_nowait((data, time.time()))

    def error_received(self, exc: Exception) -> None:
        """Pass an ICMP error (port unreachable…) to the waiting exchange."""
        self.queue.put_nowait(exc)


@dataclass(slots=True)
class _Ignored:
    """Counts the datagrams an exchange ignored, and why."""

    foreign: int = 0
    malformed: int = 0
    last_malformed: str = ""

    def error(self, server: str, timeout: float) -> ProbeError:
        """Return the error to raise when the exchange timed out."""
        waited = f"no valid reply from {server} within {timeout:g} s"
        if self.malformed:
            return NtpMalformedError(
                f"{waited}: ignored {self.malformed} datagram(s) that are not NTP"
                f" replies ({self.last_malformed})"
                + (f" and {self.foreign} with a foreign origin" if self.foreign else "")
            )
        if self.foreign:
            return NtpOriginMismatchError(
                f"{waited}: ignored {self.foreign} reply(ies) whose origin timestamp"
                " is not our transmit timestamp (spoofed or stale)"
            )
        return NtpTimeoutError(f"{waited}: no answer")


def _check(server: str, data: bytes, request: bytes, ignored: _Ignored) -> bool:
    """Return whether ``data`` is the reply to ``request``; raise if it is a refusal."""
    if len(data) < PACKET_SIZE:
        ignored.malformed += 1
        ignored.last_malformed = f"truncated: {len(data)} bytes"
        return False
    version = data[0] >> 3 & 0x7
    if not 1 <= version <= 4:
        ignored.malformed += 1
        ignored.last_malformed = f"garbage: version {version}"
        return False
    if data[_ORIGIN] != request[_TRANSMIT]:
        ignored.foreign += 1
        return False
    mode, leap, stratum = data[0] & 0x7, data[0] >> 6, data[1]
    if mode != MODE_SERVER:
        raise NtpModeError(f"{server} answered in mode {mode}, not server mode (4)")
    if stratum == 0:
        code = ref_id_text(int.from_bytes(data[12:16], "big"), 0)
        if code.isprintable() and code.isascii() and code:
            raise NtpKissOfDeathError(
                f"{server} sent a Kiss-o'-Death: {code}", code=code
            )
    if leap == LEAP_UNSYNCHRONISED or not 0 < stratum <= MAX_STRATUM:
        raise NtpUnsynchronisedError(
            f"{server} is not synchronised (leap indicator {leap}, stratum {stratum})"
        )
    return True


async def _exchange(
    server: str,
    transport: asyncio.DatagramTransport,
    protocol: _Protocol,
    timeout: float,
) -> NtpReading:
    """Send one request and wait for its reply until ``timeout``."""
    request = _request()
    ignored = _Ignored()
    t1 = time.time()
    transport.sendto(request)
    try:
        async with asyncio.timeout(timeout):
            while True:
                item = await protocol.queue.get()
                if isinstance(item, Exception):
                    raise ProbeConnectionError(f"{server} could not be reached: {item}")
                data, t4 = item
                if _check(server, data, request, ignored):
                    break
    except TimeoutError:
        raise ignored.error(server, timeout) from None
    stats = ntplib.NTPStats()
    stats.from_data(data)
    t2 = ntplib.ntp_to_system_time(stats.recv_timestamp)
    t3 = ntplib.ntp_to_system_time(stats.tx_timestamp)
    offset = ((t2 - t1) + (t3 - t4)) / 2
    delay = (t4 - t1) - (t3 - t2)
    return NtpReading(
        kind=ClockKind.NTP,
        name=server,
        offset=offset,
        uncertainty=max(delay / 2, 2.0**stats.precision, LOCAL_RESOLUTION),
        taken_at=(t1 + t4) / 2,
        delay=delay,
        stratum=stats.stratum,
        ref_id=ref_id_text(stats.ref_id, stats.stratum),
        leap=stats.leap,
    )


async def query_ntp(
    server: str, *, samples: int = 4, timeout: float = 1.0
) -> NtpReading:
    """Query ``host`` or ``host:port`` and return the sample with the smallest delay.

    Raises ProbeTimeoutError, ProbeConnectionError or ProbeResponseError (spoofed or
    stale origin, wrong mode, Kiss-o'-Death, unsynchronised server, bad datagram).
    """
    try:
        host, port = parse_server(server)
    except ValueError:
        raise ProbeConnectionError(f"invalid NTP server {server!r}") from None
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        transport, protocol = await loop.create_datagram_endpoint(
            _Protocol, remote_addr=cast(tuple[str, int], infos[0][4][:2])
        )
    except TimeoutError:
        raise NtpTimeoutError(f"resolving {host} took over {timeout:g} s") from None
    except socket.gaierror as err:
        raise ProbeConnectionError(f"cannot resolve {host}: {err.strerror}") from None
    except OSError as err:
        raise ProbeConnectionError(f"{server} could not be reached: {err}") from None
    readings: list[NtpReading] = []
    try:
        for index in range(max(samples, 1)):
            if index:
                await asyncio.sleep(SAMPLE_GAP)
            try:
                readings.append(await _exchange(server, transport, protocol, timeout))
            except ProbeTimeoutError:
                # One lost datagram after good ones is not worth failing the reading.
                if readings:
                    break
                raise
    finally:
        transport.close()
    return min(readings, key=lambda reading: reading.delay)


async def _query_or_fail(server: str, samples: int, timeout: float) -> Reading:
    """Return the server's reading, or a failed reading that says why."""
    try:
        return await query_ntp(server, samples=samples, timeout=timeout)
    except ProbeError as err:
        return Reading.failed(ClockKind.NTP, server, str(err))


async def query_ntp_servers(
    servers: Sequence[str], *, samples: int = 4, timeout: float = 1.0
) -> list[Reading]:
    """Query every server concurrently: an NtpReading each, or a failed Reading."""
    return list(
        await asyncio.gather(
            *(_query_or_fail(server, samples, timeout) for server in servers)
        )
    )


def median_offset(readings: Sequence[Reading]) -> float | None:
    """Return the median offset of the readable servers, None when none was read."""
    offsets = [r.offset for r in readings if r.ok and r.offset is not None]
    return statistics.median(offsets) if offsets else None

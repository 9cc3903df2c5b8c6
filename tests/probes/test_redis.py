"""Tests of the Redis probe against real (skewed, password-protected) Redis servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
import time
from urllib.parse import quote

import pytest
from redis.asyncio import Redis

from custom_components.clock_drift.probes import (
    ClockKind,
    ProbeAuthError,
    ProbeConnectionError,
    ProbeResponseError,
    ProbeTimeoutError,
)
from custom_components.clock_drift.probes.redis import RedisClock, redis_name
from tests.harness import RedisServer, StartRedis

PASSWORD = "s3cr:et@pass/word"


class TimeDisabledRedis(RedisServer):
    """A real Redis whose TIME command is renamed away, as some hardened set-ups do."""

    def command(self) -> list[str]:
        """Add ``--rename-command TIME ""`` to the harness's argv."""
        return [*super().command(), "--rename-command", "TIME", ""]


@pytest.fixture
async def silent_server(
    real_sockets: None,
) -> AsyncIterator[Callable[[], Awaitable[tuple[int, list[bytes]]]]]:
    """Return a factory of TCP servers that accept, record and never answer."""
    servers: list[asyncio.Server] = []

    async def start() -> tuple[int, list[bytes]]:
        """Start a server; return its port and the bytes it received."""
        received: list[bytes] = []

        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            """Record what the client sends and never answer."""
            while data := await reader.read(4096):
                received.append(data)
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], received

    yield start
    for server in servers:
        server.close()


async def test_reads_a_skewed_server(start_redis: StartRedis) -> None:
    """A Redis 42 s ahead reads +42 s within 5 ms and within its uncertainty."""
    server = start_redis(skew=42)
    clock = RedisClock(server.url)
    try:
        before = time.time()
        reading = await clock.read()
    finally:
        await clock.close()
    assert reading.kind is ClockKind.REDIS
    assert reading.name == f"127.0.0.1:{server.port}/0"
    assert reading.offset == pytest.approx(42, abs=0.005)
    assert reading.uncertainty is not None
    assert 1e-6 <= reading.uncertainty < 0.005
    assert abs(reading.offset - 42) <= reading.uncertainty
    assert reading.taken_at is not None
    assert before <= reading.taken_at <= time.time()


async def test_password_and_db(start_redis: StartRedis) -> None:
    """A password and a database in the URL are used; the name shows neither secret."""
    server = start_redis(skew=-7, password=PASSWORD)
    url = server.url.removesuffix("/0") + "/3"
    assert "%40" in url
    clock = RedisClock(url, samples=2)
    try:
        reading = await clock.read()
    finally:
        await clock.close()
    assert reading.name == f"127.0.0.1:{server.port}/3"
    assert reading.offset == pytest.approx(-7, abs=0.005)


async def test_keeps_its_connection(start_redis: StartRedis) -> None:
    """Reads reuse one connection, and close() closes it."""
    server = start_redis()
    admin = Redis.from_url(server.url)
    clock = RedisClock(server.url, samples=3)
    try:
        connections = (await admin.info("stats"))["total_connections_received"]
        await clock.read()
        await clock.read()
        info = await admin.info("clients")
        stats = await admin.info("stats")
        assert info["connected_clients"] == 2
        assert stats["total_connections_received"] == connections + 1
        await clock.close()
        await asyncio.sleep(0.05)
        assert (await admin.info("clients"))["connected_clients"] == 1
    finally:
        await admin.aclose()


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        (":wrong-secret@", "wrong user name or password"),
        ("admin:wrong-secret@", "wrong user name or password"),
        ("", "password required"),
    ],
    ids=["wrong-password", "wrong-user", "no-password"],
)
async def test_refused_credentials(
    start_redis: StartRedis, credentials: str, reason: str
) -> None:
    """Refused credentials raise ProbeAuthError without the secret or the URL."""
    server = start_redis(password=PASSWORD)
    url = f"redis://{credentials}127.0.0.1:{server.port}/0"
    clock = RedisClock(url, timeout=1)
    try:
        with pytest.raises(ProbeAuthError) as caught:
            await clock.read()
    finally:
        await clock.close()
    message = str(caught.value)
    assert message == f"127.0.0.1:{server.port}/0 refused our credentials: {reason}"
    assert "wrong-secret" not in message
    assert PASSWORD not in message


async def test_user_without_time_permission(start_redis: StartRedis) -> None:
    """An ACL user not allowed TIME (NOPERM) is an authorisation error."""
    server = start_redis(password=PASSWORD)
    admin = Redis.from_url(server.url)
    try:
        await admin.execute_command(
            "ACL", "SETUSER", "watcher", "on", ">watch-pw", "-@all", "+hello", "+auth"
        )
    finally:
        await admin.aclose()
    clock = RedisClock(f"redis://watcher:watch-pw@127.0.0.1:{server.port}", timeout=1)
    try:
        with pytest.raises(
            ProbeAuthError, match="refused our credentials: this user may not run TIME"
        ) as caught:
            await clock.read()
    finally:
        await clock.close()
    assert "watch-pw" not in str(caught.value)


async def test_time_disabled(real_sockets: None) -> None:
    """A Redis without TIME answers an error: a response error, not a crash."""
    with TimeDisabledRedis() as server:
        server.start()
        clock = RedisClock(server.url, timeout=1)
        try:
            with pytest.raises(ProbeResponseError, match="unknown command"):
                await clock.read()
        finally:
            await clock.close()


async def test_server_down(real_sockets: None) -> None:
    """Nothing listening is a connection error that names the server only."""
    down = RedisServer(password=PASSWORD)  # never started: its port is closed
    clock = RedisClock(down.url, timeout=1)
    try:
        with pytest.raises(ProbeConnectionError, match="cannot connect to") as caught:
            await clock.read()
    finally:
        await clock.close()
    assert PASSWORD not in str(caught.value)
    assert str(caught.value).startswith(f"cannot connect to 127.0.0.1:{down.port}/0")


async def test_silent_server(
    silent_server: Callable[[], Awaitable[tuple[int, list[bytes]]]],
) -> None:
    """A server that accepts and never answers is a timeout."""
    port, received = await silent_server()
    clock = RedisClock(f"redis://127.0.0.1:{port}", timeout=0.3)
    try:
        with pytest.raises(ProbeTimeoutError, match=r"did not answer within 0\.3 s"):
            await clock.read()
    finally:
        await clock.close()
    assert received


async def test_rediss_speaks_tls(
    silent_server: Callable[[], Awaitable[tuple[int, list[bytes]]]],
) -> None:
    """``rediss://`` opens TLS: the first bytes sent are a TLS handshake record.

    The Redis build available here has no TLS support, so a TCP server stands in to
    show the client starts a TLS handshake; it never completes it (timeout).
    """
    port, received = await silent_server()
    password = quote(PASSWORD, safe="")
    clock = RedisClock(f"rediss://:{password}@127.0.0.1:{port}/1", timeout=0.3)
    assert clock.name == f"127.0.0.1:{port}/1"
    try:
        with pytest.raises(ProbeTimeoutError) as caught:
            await clock.read()
    finally:
        await clock.close()
    assert received[0][0] == 0x16  # TLS handshake record
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("redis://localhost", "localhost:6379/0"),
        ("redis://:pw@redis.lan:6380/2", "redis.lan:6380/2"),
        ("redis://user:pw@[::1]:7000?db=4", "[::1]:7000/4"),
        ("rediss://h/5", "h:6379/5"),
        ("redis://", "localhost:6379/0"),
        ("unix:///run/redis.sock?db=1&password=pw", "unix:/run/redis.sock/1"),
        ("unix:///run/redis.sock", "unix:/run/redis.sock/0"),
    ],
)
def test_name(url: str, name: str) -> None:
    """The name is host:port/db (or the socket path), never with credentials."""
    assert redis_name(url) == name


def test_invalid_url() -> None:
    """A URL that is not a Redis URL is refused without quoting it."""
    with pytest.raises(ProbeConnectionError) as caught:
        RedisClock("http://user:hunter2@example.org")
    assert "hunter2" not in str(caught.value)
    assert "redis://" in str(caught.value)


async def test_secrets_are_masked_in_other_errors(
    silent_server: Callable[[], Awaitable[tuple[int, list[bytes]]]],
) -> None:
    """Any library message that quotes a credential comes out masked."""
    clock = RedisClock("redis://alice:s%23cret@127.0.0.1:1/0", timeout=0.3)
    try:
        assert clock._scrub("user alice, password s#cret, alice2") == (
            "user ***, password ***, alice2"
        )
    finally:
        await clock.close()

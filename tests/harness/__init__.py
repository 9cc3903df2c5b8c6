"""Pytest plugin: fixtures that start real servers (Redis, chronyd, dockerd, Celery)."""

from __future__ import annotations

from collections.abc import Generator, Iterator
import socket
from typing import Protocol

import pytest
import pytest_socket

from .servers import (
    BUSYBOX_IMAGE,
    GNUDATE_IMAGE,
    TIMESYNC_IMAGE,
    CeleryWorker,
    ChronyCommandServer,
    Containers,
    DockerDaemon,
    HarnessError,
    MissingBinaryError,
    NtpServer,
    RedisServer,
    ServerProcess,
)

__all__ = [
    "BUSYBOX_IMAGE",
    "GNUDATE_IMAGE",
    "TIMESYNC_IMAGE",
    "CeleryWorker",
    "ChronyCommandServer",
    "Containers",
    "DockerDaemon",
    "HarnessError",
    "MissingBinaryError",
    "NtpServer",
    "RedisServer",
    "StartCeleryWorker",
    "StartChronyCommandServer",
    "StartNtpServer",
    "StartRedis",
]


class StartRedis(Protocol):
    """Start a Redis server; the fixture stops it at teardown."""

    def __call__(
        self, *, skew: float | None = None, password: str | None = None
    ) -> RedisServer:
        """Start a Redis server."""


class StartNtpServer(Protocol):
    """Start a chronyd NTP server; the fixture stops it at teardown."""

    def __call__(self, *, skew: float | None = None) -> NtpServer:
        """Start an NTP server."""


class StartChronyCommandServer(Protocol):
    """Start a chronyd with a command socket; the fixture stops it at teardown."""

    def __call__(
        self, source: NtpServer | None = None, *, skew: float | None = None
    ) -> ChronyCommandServer:
        """Start a chronyd with a command socket."""


class StartCeleryWorker(Protocol):
    """Start a Celery worker; the fixture stops it at teardown."""

    def __call__(
        self,
        broker_url: str,
        *,
        skew: float | None = None,
        tz: str | None = None,
        hostname: str | None = None,
    ) -> CeleryWorker:
        """Start a Celery worker."""


@pytest.fixture
def real_sockets() -> Iterator[None]:
    """Allow loopback TCP/UDP and Unix sockets for the test, restored at teardown."""
    saved_socket = socket.socket
    true_socket = pytest_socket._true_socket
    saved_connect = true_socket.__dict__.get("connect")
    # enable first: socket_allow_hosts patches the class socket.socket is at call time.
    pytest_socket.enable_socket()
    pytest_socket.socket_allow_hosts(["127.0.0.1", "::1"], allow_unix_socket=True)
    yield
    if saved_connect is None:
        del true_socket.connect
    else:
        true_socket.connect = saved_connect  # type: ignore[method-assign]
    socket.socket = saved_socket  # type: ignore[misc]


def _closing[S: ServerProcess](servers: list[S]) -> None:
    """Stop the servers and remove their files, newest first."""
    for server in servers:
        server.terminate()
    errors: list[Exception] = []
    for server in reversed(servers):
        try:
            server.close()
        except Exception as err:  # noqa: BLE001
            errors.append(err)
    if errors:
        raise ExceptionGroup("could not stop test servers", errors)


@pytest.fixture
def start_redis(real_sockets: None) -> Generator[StartRedis]:
    """Return a factory of Redis servers (optionally skewed or with a password)."""
    servers: list[RedisServer] = []

    def start(*, skew: float | None = None, password: str | None = None) -> RedisServer:
        """Start a Redis server."""
        server = RedisServer(skew=skew, password=password)
        servers.append(server)
        return server.start()

    yield start
    _closing(servers)


@pytest.fixture
def redis_server(start_redis: StartRedis) -> RedisServer:
    """Return a running Redis server without skew or password."""
    return start_redis()


@pytest.fixture
def start_ntp_server(real_sockets: None) -> Generator[StartNtpServer]:
    """Return a factory of chronyd NTP servers (optionally skewed)."""
    servers: list[NtpServer] = []

    def start(*, skew: float | None = None) -> NtpServer:
        """Start an NTP server."""
        server = NtpServer(skew=skew)
        servers.append(server)
        return server.start()

    yield start
    _closing(servers)


@pytest.fixture
def ntp_server(start_ntp_server: StartNtpServer) -> NtpServer:
    """Return a running NTP server without skew."""
    return start_ntp_server()


@pytest.fixture
def start_chrony_command_server(
    real_sockets: None,
) -> Generator[StartChronyCommandServer]:
    """Return a factory of chronyd with a command socket, synced to a given source."""
    servers: list[ChronyCommandServer] = []

    def start(
        source: NtpServer | None = None, *, skew: float | None = None
    ) -> ChronyCommandServer:
        """Start a chronyd with a command socket."""
        server = ChronyCommandServer(source, skew=skew)
        servers.append(server)
        return server.start()

    yield start
    _closing(servers)


@pytest.fixture
def chrony_command_server(
    start_chrony_command_server: StartChronyCommandServer, ntp_server: NtpServer
) -> ChronyCommandServer:
    """Return a chronyd with a command socket, synchronised to ``ntp_server``."""
    return start_chrony_command_server(ntp_server)


@pytest.fixture(scope="session")
def docker_daemon() -> Generator[DockerDaemon]:
    """Return the session's Docker daemon with the test images imported."""
    daemon = DockerDaemon()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.close()


@pytest.fixture
def docker(docker_daemon: DockerDaemon, real_sockets: None) -> Generator[Containers]:
    """Return the daemon's container helper; the test's containers go at teardown."""
    if not docker_daemon.external and not docker_daemon.running:
        docker_daemon.start()
    containers = Containers(docker_daemon)
    yield containers
    if not docker_daemon.external and not docker_daemon.running:
        # A fault test stopped the shared daemon: bring it back for the next tests.
        docker_daemon.start()
    containers.close()


@pytest.fixture
def start_celery_worker(real_sockets: None) -> Generator[StartCeleryWorker]:
    """Return a factory of real Celery workers on a broker (skew, TZ, hostname)."""
    workers: list[CeleryWorker] = []

    def start(
        broker_url: str,
        *,
        skew: float | None = None,
        tz: str | None = None,
        hostname: str | None = None,
    ) -> CeleryWorker:
        """Start a Celery worker."""
        worker = CeleryWorker(broker_url, skew=skew, tz=tz, hostname=hostname)
        workers.append(worker)
        return worker.start()

    yield start
    _closing(workers)

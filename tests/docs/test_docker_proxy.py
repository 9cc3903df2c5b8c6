"""The compose file's Docker proxy rules pass every request the real probes make."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import contextlib
from pathlib import Path
import re
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml

from custom_components.clock_drift.probes.chrony import ChronyClient, LeapStatus
from custom_components.clock_drift.probes.docker import DockerClocks
from custom_components.clock_drift.probes.model import (
    ProbeCommandError,
)
from tests.harness import BUSYBOX_IMAGE, GNUDATE_IMAGE, TIMESYNC_IMAGE, Containers

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def compose_rules() -> dict[str, re.Pattern[str]]:
    """Return the proxy's rules from docker-compose.yml, anchored as the proxy does."""
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    rules: dict[str, re.Pattern[str]] = {}
    for argument in compose["services"]["docker-proxy"]["command"]:
        if match := re.fullmatch(r"-allow([A-Z]+)=(.*)", argument):
            rules[match[1]] = re.compile(f"^{match[2]}$")
    return rules


class FilteringProxy:
    """A stand-in for wollomatic/socket-proxy, which has no image here (no registry).

    Same decision as the real proxy's handler: the method must have a rule, and the
    rule must match the request's path (query string excluded); else 405 or 403.
    Allowed requests go to dockerd's Unix socket; after an HTTP upgrade (an exec
    stream) bytes flow both ways untouched.
    """

    def __init__(self, rules: dict[str, re.Pattern[str]], upstream: str) -> None:
        """Filter with ``rules`` in front of the Docker socket ``upstream``."""
        self.rules = rules
        self.upstream = upstream
        self.allowed: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on a free loopback port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop the connections."""
        assert self._server is not None
        self._server.close()
        self._server.close_clients()
        await self._server.wait_closed()

    async def _serve(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        """Check each request of one client connection and forward the allowed ones."""
        upstream_r, upstream_w = await asyncio.open_unix_connection(self.upstream)
        pump = asyncio.create_task(self._pipe(upstream_r, client_w))
        try:
            while True:
                try:
                    head = await client_r.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
                path = urlsplit(target).path
                headers = {
                    name.strip().lower(): value.strip()
                    for name, _, value in (
                        line.partition(":")
                        for line in head.decode("latin-1").split("\r\n")[1:]
                        if line
                    )
                }
                assert "transfer-encoding" not in headers, "chunked bodies unsupported"
                body = await client_r.readexactly(int(headers.get("content-length", 0)))
                rule = self.rules.get(method)
                if rule is None or not rule.match(path):
                    self.refused.append((method, path))
                    status = (
                        b"405 Method Not Allowed" if rule is None else b"403 Forbidden"
                    )
                    client_w.write(
                        b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                    await client_w.drain()
                    return
                self.allowed.append((method, path))
                upstream_w.write(head + body)
                await upstream_w.drain()
                if "upgrade" in headers:
                    await self._pipe(client_r, upstream_w)
                    return
        finally:
            pump.cancel()
            upstream_w.close()
            client_w.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy bytes until the source ends, then pass the end on (half-close)."""
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()


@pytest.fixture(name="proxy")
async def proxy_fixture(docker: Containers) -> AsyncIterator[FilteringProxy]:
    """Start the filtering proxy in front of the harness's dockerd."""
    assert docker.daemon.socket_path is not None
    proxy = FilteringProxy(compose_rules(), docker.daemon.socket_path)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_probes_work_through_the_proxy(
    docker: Containers, proxy: FilteringProxy
) -> None:
    """The Docker and chrony probes read every clock through the rules, none refused."""
    busybox = docker.run_container(BUSYBOX_IMAGE)
    gnudate = docker.run_container(GNUDATE_IMAGE, skew=42.0)
    timesync = docker.run_container(TIMESYNC_IMAGE)
    clocks = DockerClocks(f"tcp://127.0.0.1:{proxy.port}")
    try:
        host = await clocks.read_host()
        assert host.ok, host.error
        readings = {reading.name: reading for reading in await clocks.read_containers()}
        assert readings[busybox].ok, readings[busybox].error
        skewed = readings[gnudate].offset
        assert skewed is not None
        assert abs(skewed - 42.0) < 1.1
        chrony = ChronyClient.in_container(clocks, timesync)
        tracking = await chrony.tracking()
        assert tracking.leap_status is LeapStatus.NOT_SYNCHRONISED
        # Under -x chronyd cannot step: "500 Failure" proves makestep got through.
        with pytest.raises(ProbeCommandError, match="500"):
            await chrony.makestep()
    finally:
        await clocks.close()
    assert proxy.refused == []
    methods = {method for method, _ in proxy.allowed}
    assert "POST" in methods
    assert any(path.endswith("/exec") for _, path in proxy.allowed)


async def test_proxy_refuses_creating_a_container(proxy: FilteringProxy) -> None:
    """Through the same rules, creating or stopping a container is refused."""
    url = f"http://127.0.0.1:{proxy.port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{url}/v1.47/containers/create", json={"Image": BUSYBOX_IMAGE}
        ) as response:
            assert response.status == 403
        async with session.delete(f"{url}/v1.47/containers/timesync") as response:
            assert response.status == 405
    assert proxy.refused == [
        ("POST", "/v1.47/containers/create"),
        ("DELETE", "/v1.47/containers/timesync"),
    ]

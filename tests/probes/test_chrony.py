"""Tests of the chrony probe with the real chronyc against real chronyd (always -x)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
import socket
import time

import pytest

from custom_components.clock_drift.probes import (
    ClockKind,
    ProbeAuthError,
    ProbeCommandError,
    ProbeConnectionError,
    ProbeResponseError,
    ProbeTimeoutError,
    Reading,
)
from custom_components.clock_drift.probes.chrony import (
    ChronyClient,
    ChronyTracking,
    LeapStatus,
)
from custom_components.clock_drift.probes.docker import DockerClocks
from tests.harness import (
    GNUDATE_IMAGE,
    TIMESYNC_IMAGE,
    Containers,
    NtpServer,
    StartChronyCommandServer,
    StartNtpServer,
)
from tests.harness.servers import free_port

# A line as chronyd 4.3 prints it here for `chronyc -c tracking`.
TRACKING_LINE = (
    "7F000001,127.0.0.1,9,1796400852.307151681,-1.999996185,-0.000000077,"
    "0.000000313,-0.445,0.000,1.897,0.000028042,0.000003763,0.1,Normal"
)


class UdpCommandChronyd(NtpServer):
    """A chronyd that also takes chronyc commands on a loopback UDP port."""

    label = "chronyd-udp"

    def __init__(self) -> None:
        """Pick a free UDP command port next to the NTP port."""
        super().__init__()
        self.command_port = free_port(socket.SOCK_DGRAM)

    def config_lines(self) -> list[str]:
        """Serve monitoring commands to 127.0.0.1 on ``command_port``."""
        lines = [line for line in super().config_lines() if line != "cmdport 0"]
        return [
            *lines,
            f"cmdport {self.command_port}",
            "bindcmdaddress 127.0.0.1",
            "cmdallow 127.0.0.1",
        ]


@pytest.fixture
def udp_chronyd(real_sockets: None) -> Iterator[UdpCommandChronyd]:
    """Return a running chronyd with a UDP command port."""
    with UdpCommandChronyd() as server:
        server.start()
        yield server


async def test_tracking_of_a_fast_clock(
    start_ntp_server: StartNtpServer,
    start_chrony_command_server: StartChronyCommandServer,
) -> None:
    """A chronyd 2 s fast of its source: every field parsed, offset -2 s."""
    source = start_ntp_server()
    chronyd = start_chrony_command_server(source, skew=2.0)
    client = ChronyClient.local(chronyd.socket_path)
    assert client.name == chronyd.socket_path
    tracking = await client.tracking()
    deadline = time.monotonic() + 10
    while (
        tracking.root_dispersion > 0.001 or tracking.update_interval == 0
    ) and time.monotonic() < deadline:
        # Right after the first update chronyd's error bound is still wide, and it
        # reports an update interval only from its second update on.
        await asyncio.sleep(0.1)
        tracking = await client.tracking()
    assert tracking.ref_id == "7F000001"
    assert tracking.ref_name == "127.0.0.1"
    assert tracking.stratum == 9
    assert tracking.ref_time == pytest.approx(time.time() + 2, abs=5)
    assert tracking.system_time == pytest.approx(-2.0, abs=0.001)
    assert abs(tracking.last_offset) <= 2.001  # the first measurement saw all 2 s
    assert tracking.rms_offset >= 0
    assert abs(tracking.frequency_ppm) < 500
    assert abs(tracking.residual_frequency_ppm) < 500
    assert tracking.skew_ppm >= 0
    assert 0 < tracking.root_delay < 0.01
    assert 0 < tracking.root_dispersion <= 0.001
    assert 0 < tracking.update_interval < 10
    assert tracking.leap_status is LeapStatus.NORMAL

    reading = await client.read()
    assert reading.kind is ClockKind.CHRONY
    assert reading.name == chronyd.socket_path
    assert reading.offset == pytest.approx(-2.0, abs=0.001)
    assert reading.uncertainty is not None
    assert abs(reading.offset + 2.0) <= reading.uncertainty < 0.002


async def test_tracking_unsynchronised(
    start_chrony_command_server: StartChronyCommandServer,
) -> None:
    """A chronyd without a reachable source says so in its leap status."""
    chronyd = start_chrony_command_server()
    tracking = await ChronyClient.local(chronyd.socket_path).tracking()
    assert tracking.ref_id == "00000000"
    assert tracking.stratum == 0
    assert tracking.leap_status is LeapStatus.NOT_SYNCHRONISED
    assert tracking.reading("c") == Reading.failed(
        ClockKind.CHRONY, "c", "chronyd is not synchronised to any source"
    )


async def test_makestep_failure(
    start_chrony_command_server: StartChronyCommandServer,
) -> None:
    """Under -x chronyd cannot step the clock: "500 Failure" is a command error."""
    chronyd = start_chrony_command_server()
    with pytest.raises(
        ProbeCommandError, match=f"chronyd at {chronyd.socket_path} answered: 500"
    ):
        await ChronyClient.local(chronyd.socket_path).makestep()


async def test_missing_socket(tmp_path: Path) -> None:
    """A command socket that does not exist is a connection error that says so."""
    path = str(tmp_path / "chronyd.sock")
    client = ChronyClient.local(path)
    with pytest.raises(ProbeConnectionError, match="does not exist"):
        await client.tracking()
    reading = await client.read()
    assert reading == Reading.failed(
        ClockKind.CHRONY,
        path,
        f"chrony's command socket {path} does not exist (is chronyd running with"
        " bindcmdaddress there?)",
    )


async def test_dead_socket(tmp_path: Path, real_sockets: None) -> None:
    """A socket file nobody listens on: chronyc cannot talk to the daemon."""
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stale:
        stale.bind(str(path))
    with pytest.raises(ProbeConnectionError, match="cannot talk to chronyd at"):
        await ChronyClient.local(str(path), timeout=5).tracking()


async def test_not_authorised(udp_chronyd: UdpCommandChronyd) -> None:
    """Over UDP tracking works but makestep is refused: 501 Not authorised."""
    client = ChronyClient.local(f"127.0.0.1:{udp_chronyd.command_port}")
    tracking = await client.tracking()
    assert tracking.stratum == 8  # its own local reference
    with pytest.raises(ProbeAuthError, match="501 Not authorised"):
        await client.makestep()


async def test_no_answer_times_out(real_sockets: None) -> None:
    """A chronyc waiting on a silent port is killed at the timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        client = ChronyClient.local(f"127.0.0.1:{port}", timeout=0.3)
        started = time.monotonic()
        with pytest.raises(ProbeTimeoutError, match=r"within 0\.3 s"):
            await client.tracking()
    assert time.monotonic() - started < 2


async def test_chronyc_missing(tmp_path: Path) -> None:
    """Without chronyc the error names the Debian package to install."""
    client = ChronyClient.local(
        str(tmp_path / "chronyd.sock"), chronyc=str(tmp_path / "chronyc")
    )
    with pytest.raises(ProbeCommandError, match="install the Debian package 'chrony'"):
        await client.tracking()


async def test_chronyc_not_executable(tmp_path: Path) -> None:
    """A chronyc that cannot be run is a command error saying why."""
    chronyc = tmp_path / "chronyc"
    chronyc.write_text("not a program")
    client = ChronyClient.local(str(tmp_path / "sock"), chronyc=str(chronyc))
    with pytest.raises(ProbeCommandError, match=r"cannot run .*: Permission denied"):
        await client.tracking()


async def test_unknown_failure(tmp_path: Path) -> None:
    """A chronyc that fails without a known answer is a command error with its code.

    /bin/false stands in for a chronyc that dies without printing anything, which the
    real one does not do on demand.
    """
    socket_path = tmp_path / "chronyd.sock"
    socket_path.touch()
    client = ChronyClient.local(str(socket_path), chronyc="/bin/false")
    with pytest.raises(ProbeCommandError, match="answered: exit code 1"):
        await client.makestep()


async def test_in_a_container(docker: Containers) -> None:
    """The chronyc exec'd in the timesync container answers; makestep fails."""
    name = docker.run_container(TIMESYNC_IMAGE)
    clocks = DockerClocks(docker.url)
    try:
        client = ChronyClient.in_container(clocks, name)
        assert client.name == name
        tracking = await client.tracking()
        assert tracking.leap_status is LeapStatus.NOT_SYNCHRONISED
        assert tracking.ref_id == "00000000"
        with pytest.raises(ProbeCommandError, match=f"chronyd at {name} answered: 500"):
            await client.makestep()
        no_chrony = ChronyClient.in_container(
            clocks, docker.run_container(GNUDATE_IMAGE)
        )
        with pytest.raises(ProbeCommandError, match="Debian package 'chrony'"):
            await no_chrony.tracking()
    finally:
        await clocks.close()


def test_parse_every_field() -> None:
    """The 14 CSV fields map to their attributes; the leap texts to LeapStatus."""
    tracking = ChronyTracking.parse(f"\n{TRACKING_LINE}\n")
    assert tracking == ChronyTracking(
        ref_id="7F000001",
        ref_name="127.0.0.1",
        stratum=9,
        ref_time=1796400852.307151681,
        system_time=-1.999996185,
        last_offset=-0.000000077,
        rms_offset=0.000000313,
        frequency_ppm=-0.445,
        residual_frequency_ppm=0.0,
        skew_ppm=1.897,
        root_delay=0.000028042,
        root_dispersion=0.000003763,
        update_interval=0.1,
        leap_status=LeapStatus.NORMAL,
    )
    for text, status in [
        ("Insert second", LeapStatus.INSERT),
        ("Delete second", LeapStatus.DELETE),
        ("Not synchronised", LeapStatus.NOT_SYNCHRONISED),
    ]:
        line = TRACKING_LINE.replace("Normal", text)
        assert ChronyTracking.parse(line).leap_status is status
    reading = tracking.reading("chrony")
    assert reading.offset == -1.999996185
    assert reading.uncertainty == pytest.approx(0.000028042 / 2 + 0.000003763)


@pytest.mark.parametrize(
    ("output", "match"),
    [
        ("", "printed 1 fields, expected 14"),
        ("506 Cannot talk to daemon", "printed 1 fields"),
        (TRACKING_LINE + ",extra", "printed 15 fields"),
        (TRACKING_LINE.replace(",9,", ",nine,"), "unreadable line"),
        (TRACKING_LINE.replace("Normal", "Invalid"), "unreadable line"),
    ],
)
def test_parse_rejects(output: str, match: str) -> None:
    """Output that is not a tracking line is a response error."""
    with pytest.raises(ProbeResponseError, match=match):
        ChronyTracking.parse(output)

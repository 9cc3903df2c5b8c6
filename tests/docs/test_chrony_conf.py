"""docs/chrony.conf: the real chronyd parses it, runs with it, and answers chronyc."""

from __future__ import annotations

from collections.abc import Iterator
import os
from pathlib import Path
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest

# Imported first so `custom_components` resolves to this repository's.
import custom_components.clock_drift  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "docs" / "chrony.conf"
# A network namespace of its own: chronyd there can reach no address but its own
# loopback, so nothing here can contact the pool or step anything but a fake clock.
ISOLATED = ["unshare", "--net"]
CHRONYC = shutil.which("chronyc") or "/usr/bin/chronyc"


def chronyd_parse(conf: Path) -> subprocess.CompletedProcess[str]:
    """Run ``chronyd -p`` (print the parsed configuration and exit) on a file."""
    return subprocess.run(
        [*ISOLATED, "chronyd", "-x", "-p", "-f", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_parses_with_chronyd() -> None:
    """The real chronyd accepts every directive of the shipped file."""
    result = chronyd_parse(CONF)
    assert result.returncode == 0, result.stderr
    directives = result.stdout.splitlines()
    assert "pool pool.ntp.org iburst maxsources 4" in directives
    assert "makestep 1 3" in directives
    assert "maxupdateskew 100" in directives
    assert "driftfile /var/lib/chrony/chrony.drift" in directives
    assert "rtcsync" in directives
    assert "bindcmdaddress /run/chrony/chronyd.sock" in directives
    assert "cmdport 0" in directives


@pytest.mark.parametrize(
    ("good", "bad"),
    [("makestep 1 3", "makestep 1 three"), ("rtcsync", "rtcsync_please")],
)
def test_parse_check_catches_mistakes(tmp_path: Path, good: str, bad: str) -> None:
    """The same check fails on a broken copy, naming the line."""
    broken = tmp_path / "chrony.conf"
    broken.write_text(CONF.read_text(encoding="utf-8").replace(good, bad, 1))
    result = chronyd_parse(broken)
    assert result.returncode != 0
    assert "line" in result.stderr


@pytest.fixture(name="running_chronyd")
def running_chronyd_fixture() -> Iterator[Path]:
    """Start chronyd -x with the shipped config, only its paths moved to a temp dir."""
    chrony = pwd.getpwnam("_chrony")
    # Not pytest's tmp_path: its parents are root-only, and chronyd runs as _chrony.
    tmp_path = Path(tempfile.mkdtemp(prefix="clock-drift-chrony-"))
    run = tmp_path / "run"
    run.mkdir(mode=0o750)
    os.chown(run, chrony.pw_uid, chrony.pw_gid)
    os.chown(tmp_path, chrony.pw_uid, chrony.pw_gid)
    socket = run / "chronyd.sock"
    text = (
        CONF.read_text(encoding="utf-8")
        .replace("/run/chrony/chronyd.sock", str(socket))
        .replace("/var/lib/chrony/chrony.drift", str(tmp_path / "chrony.drift"))
    )
    conf = tmp_path / "chrony.conf"
    conf.write_text(text + f"pidfile {run / 'chronyd.pid'}\n")
    process = subprocess.Popen(
        [*ISOLATED, "chronyd", "-x", "-d", "-u", "_chrony", "-f", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket.exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no command socket"
            time.sleep(0.05)
        yield socket
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_healthcheck_answers(running_chronyd: Path) -> None:
    """`chronyc tracking`, the healthcheck, answers over the socket with cmdport 0."""
    result = subprocess.run(
        [CHRONYC, "-h", str(running_chronyd), "-c", "tracking"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fields = result.stdout.strip().split(",")
    assert len(fields) == 14
    # Isolated from any network: no source, so chronyd reports itself unsynchronised.
    assert fields[-1] == "Not synchronised"


def test_makestep_allowed_on_socket(running_chronyd: Path) -> None:
    """The Unix socket accepts `makestep` (refused over UDP); -x makes it fail."""
    result = subprocess.run(
        [CHRONYC, "-h", str(running_chronyd), "makestep"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    # "501 Not authorised" is what a monitoring-only (UDP) channel answers instead.
    assert "Not authorised" not in result.stdout + result.stderr
    assert "500 Failure" in result.stdout + result.stderr

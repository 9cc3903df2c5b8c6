"""Tests of the command line against the harness's real servers."""

from __future__ import annotations

from collections.abc import Sequence
import json
import os
from pathlib import Path
import runpy
import subprocess
import sys
from typing import Any

import pytest

from custom_components.clock_drift.probes import ClockKind, Reading
from custom_components.clock_drift.probes.__main__ import format_table, main
from custom_components.clock_drift.probes.report import build_report
from tests.harness import (
    GNUDATE_IMAGE,
    TIMESYNC_IMAGE,
    Containers,
    NtpServer,
    RedisServer,
    StartCeleryWorker,
    StartChronyCommandServer,
    StartNtpServer,
    StartRedis,
)

REPO = Path(__file__).parents[2]
PASSWORD = "hunter2-clock"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m custom_components.clock_drift.probes ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "custom_components.clock_drift.probes", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_main(
    capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, Any]]:
    """Run ``main`` in this process with ``--json``; return its status and report."""
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def by_kind(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Return the report's readings of one kind."""
    return [reading for reading in report["readings"] if reading["kind"] == kind]


def test_ntp_in_sync_exits_0(ntp_server: NtpServer) -> None:
    """NTP only, at 0 s: the documented JSON and exit status 0."""
    done = run_cli("--ntp", ntp_server.address, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"in_sync", "spread", "tolerance", "worst", "readings"}
    assert report["in_sync"] is True
    assert report["tolerance"] == 30.0
    assert report["worst"] == ntp_server.address
    [reading] = report["readings"]
    assert set(reading) == {"kind", "name", "offset", "uncertainty", "error"}
    assert reading["kind"] == "ntp"
    assert reading["name"] == ntp_server.address
    assert abs(reading["offset"]) <= reading["uncertainty"] < 0.002
    assert reading["error"] is None
    assert report["spread"] == pytest.approx(abs(reading["offset"]))


def test_redis_ahead_exits_1(ntp_server: NtpServer, start_redis: StartRedis) -> None:
    """A +42 s Redis with a 30 s tolerance is out of sync: exit status 1, a table."""
    redis = start_redis(skew=42, password=PASSWORD)
    done = run_cli("--ntp", ntp_server.address, "--redis", redis.url)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "OFFSET", "UNCERTAINTY", "ERROR"]
    assert lines[1].startswith("ntp ")
    assert lines[2].split()[:3] == ["redis", f"127.0.0.1:{redis.port}/0", "+42.000"]
    assert lines[2].split()[3:5] == ["s", "±"]
    assert lines[2].endswith(" ms")
    assert lines[-1].startswith("OUT OF SYNC (tolerance 30.000 s, spread 42.000 s")
    assert lines[-1].endswith(f"worst redis 127.0.0.1:{redis.port}/0)")
    assert PASSWORD not in done.stdout + done.stderr

    wider = run_cli("--redis", redis.url, "--tolerance", "60", "--json")
    assert wider.returncode == 0
    assert json.loads(wider.stdout)["readings"][0]["offset"] == pytest.approx(
        42, abs=0.005
    )


def test_unreachable_redis_exits_2(
    ntp_server: NtpServer, start_redis: StartRedis
) -> None:
    """A clock that cannot be read gives 2, even when another is out of sync."""
    ahead = start_redis(skew=42)
    down = RedisServer(password=PASSWORD)  # never started
    done = run_cli("--ntp", ntp_server.address, "--redis", down.url, "--json")
    assert done.returncode == 2
    report = json.loads(done.stdout)
    assert report["in_sync"] is True
    [failed] = by_kind(report, "redis")
    assert failed["offset"] is None
    assert failed["error"].startswith(f"cannot connect to 127.0.0.1:{down.port}/0")
    assert PASSWORD not in done.stdout + done.stderr

    both = run_cli("--redis", ahead.url, "--ntp", "127.0.0.1:9", "--json")
    assert both.returncode == 2
    assert json.loads(both.stdout)["in_sync"] is False


def test_table_of_an_unreadable_clock(
    capsys: pytest.CaptureFixture[str], start_redis: StartRedis
) -> None:
    """The table shows the error of a clock that could not be read, never a secret."""
    redis = start_redis(password=PASSWORD)
    wrong = redis.url.replace(PASSWORD, "not-the-password")
    assert main(["--redis", wrong]) == 2
    out = capsys.readouterr().out
    assert "refused our credentials: wrong user name or password" in out
    assert "not-the-password" not in out
    assert out.splitlines()[-1] == "in sync (tolerance 30.000 s, 1 clock(s) unreadable)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to check"),
        (("--container", "x", "--ntp", "h"), "need --docker"),
        (("--chrony-container", "x"), "need --docker"),
        (("--ntp", "h", "--tolerance", "-1"), "must be 0 or more"),
        (("--ntp", "h", "--listen", "soon"), "not a number"),
        (("--chrony-socket", "/s", "--chrony-container", "c"), "not allowed with"),
    ],
)
def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], args: Sequence[str], message: str
) -> None:
    """Wrong arguments are argparse errors: a message and exit status 2."""
    with pytest.raises(SystemExit) as caught:
        main(list(args))
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_chrony_socket(
    capsys: pytest.CaptureFixture[str],
    start_ntp_server: StartNtpServer,
    start_chrony_command_server: StartChronyCommandServer,
) -> None:
    """--chrony-socket reads chronyd's tracking; a 2 s fast clock reads -2 s."""
    source = start_ntp_server()
    chronyd = start_chrony_command_server(source, skew=2.0)
    code, report = run_main(
        capsys,
        "--chrony-socket",
        chronyd.socket_path,
        "--ntp",
        source.address,
        "--tolerance",
        "1",
    )
    assert code == 1
    assert by_kind(report, "ntp")[0]["offset"] == pytest.approx(0, abs=0.002)
    [reading] = by_kind(report, "chrony")
    assert reading["kind"] == "chrony"
    assert reading["name"] == chronyd.socket_path
    assert reading["offset"] == pytest.approx(-2.0, abs=0.001)


def test_docker_containers_and_chrony_container(
    capsys: pytest.CaptureFixture[str], docker: Containers
) -> None:
    """--docker reads the daemon and the named containers; chrony runs inside one."""
    ahead = docker.run_container(GNUDATE_IMAGE, skew=42)
    docker.run_container(GNUDATE_IMAGE)  # not selected
    timesync = docker.run_container(TIMESYNC_IMAGE)
    code, report = run_main(
        capsys,
        "--docker",
        docker.url,
        "--container",
        ahead,
        "--chrony-container",
        timesync,
        "--tolerance",
        "60",
    )
    host = by_kind(report, "docker_host")
    [container] = by_kind(report, "container")
    [chrony] = by_kind(report, "chrony")
    assert len(host) == 1
    assert abs(host[0]["offset"]) <= host[0]["uncertainty"]
    assert container["name"] == ahead
    assert container["offset"] == pytest.approx(42, abs=0.005)
    # Its only source never answers: chronyd is unsynchronised (or still starting).
    assert chrony["name"] == timesync
    assert chrony["error"]
    assert code == 2


def test_unreachable_docker(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, real_sockets: None
) -> None:
    """A Docker endpoint nobody listens on is an unreadable clock, not a crash."""
    code, report = run_main(capsys, "--docker", f"unix://{tmp_path}/docker.sock")
    assert code == 2
    assert [reading["kind"] for reading in report["readings"]] == [
        "docker_host",
        "container",
    ]
    assert all(reading["error"] for reading in report["readings"])


def test_invalid_urls(capsys: pytest.CaptureFixture[str]) -> None:
    """Malformed URLs are unreadable clocks whose messages quote no credentials."""
    code, report = run_main(
        capsys,
        "--redis",
        "http://u:hunter2@h",
        "--docker",
        "ftp://u:hunter2@h",
        "--celery",
        "http://u:hunter2@h",
    )
    assert code == 2
    assert [reading["kind"] for reading in report["readings"]] == [
        "redis",
        "docker_host",
        "celery",
    ]
    assert "hunter2" not in json.dumps(report)


def test_celery_worker_ahead(
    capsys: pytest.CaptureFixture[str],
    start_redis: StartRedis,
    start_celery_worker: StartCeleryWorker,
) -> None:
    """A worker 42 s ahead is heard within the listening time and judged: exit 1."""
    broker = start_redis()
    worker = start_celery_worker(broker.url, skew=42)
    code, report = run_main(capsys, "--celery", broker.url, "--listen", "4.5")
    assert code == 1
    [reading] = report["readings"]
    assert reading["kind"] == "celery"
    assert reading["name"] == worker.hostname
    assert reading["offset"] == pytest.approx(42, abs=0.05)


def test_celery_without_workers(
    capsys: pytest.CaptureFixture[str], redis_server: RedisServer
) -> None:
    """No heartbeat within the listening time is an unreadable clock."""
    code, report = run_main(capsys, "--celery", redis_server.url, "--listen", "0.3")
    assert code == 2
    [reading] = report["readings"]
    assert reading["kind"] == "celery"
    assert reading["error"] == "no worker heartbeat within 0.3 s"


def test_runs_as_a_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-m`` runs main and exits with its status (here, an unreadable NTP server)."""
    monkeypatch.setattr(sys, "argv", ["probes", "--ntp", "[::1%nosuchif]"])
    monkeypatch.delitem(sys.modules, "custom_components.clock_drift.probes.__main__")
    with pytest.raises(SystemExit) as caught:
        runpy.run_module("custom_components.clock_drift.probes", run_name="__main__")
    assert caught.value.code == 2
    assert "cannot resolve" in capsys.readouterr().out


def test_table_formats() -> None:
    """Offsets below 1 s print in ms with a sign, larger ones in s."""
    report = build_report(
        [
            Reading(kind=ClockKind.NTP, name="a", offset=0.0123, uncertainty=0.0004),
            Reading(kind=ClockKind.REDIS, name="b", offset=-1.5, uncertainty=2.0),
            Reading.failed(ClockKind.CHRONY, "c", "boom"),
        ],
        tolerance=0.5,
    )
    assert format_table(report).splitlines() == [
        "KIND    NAME      OFFSET  UNCERTAINTY  ERROR",
        "ntp     a     +12.300 ms   ± 0.400 ms",
        "redis   b       -1.500 s    ± 2.000 s",
        "chrony  c              -            -  boom",
        "OUT OF SYNC (tolerance 500.000 ms, spread 1.512 s, worst redis b,"
        " 1 clock(s) unreadable)",
    ]
    in_sync = build_report([Reading(kind=ClockKind.NTP, name="a", offset=-2e-4)], 1)
    assert format_table(in_sync).splitlines()[1:] == [
        "ntp   a     -0.200 ms            -",
        "in sync (tolerance 1.000 s, spread 0.200 ms, worst ntp a)",
    ]

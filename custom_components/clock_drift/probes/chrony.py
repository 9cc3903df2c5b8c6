"""chrony probe: ``chronyc -c tracking`` and ``chronyc makestep`` with fixed argv."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
import contextlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
import time
from typing import Final

from .docker import DockerClocks
from .model import (
    ClockKind,
    ProbeAuthError,
    ProbeCommandError,
    ProbeConnectionError,
    ProbeError,
    ProbeResponseError,
    ProbeTimeoutError,
    Reading,
)

DEFAULT_TIMEOUT: Final = 10.0
MISSING_CHRONYC: Final = (
    "chronyc is not installed: install the Debian package 'chrony' (it provides"
    " chronyc)"
)
TRACKING_FIELDS: Final = 14
_COMMAND_NOT_FOUND: Final = (126, 127)
"""Exit codes of a shell or runtime that could not find or run the command."""


class LeapStatus(StrEnum):
    """chrony's leap status."""

    NORMAL = "normal"
    INSERT = "insert_second"
    DELETE = "delete_second"
    NOT_SYNCHRONISED = "not_synchronised"


_LEAP_TEXT: Final = {
    "Normal": LeapStatus.NORMAL,
    "Insert second": LeapStatus.INSERT,
    "Delete second": LeapStatus.DELETE,
    "Not synchronised": LeapStatus.NOT_SYNCHRONISED,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ChronyTracking:
    """Every field of ``chronyc -c tracking``, in seconds unless named ppm."""

    ref_id: str
    ref_name: str
    stratum: int
    ref_time: float
    system_time: float
    """NTP time minus the system clock, as chronyc prints it (negative: clock fast).

    chronyc's text mode prints this value's magnitude with "slow" when it is positive
    and "fast" when negative (client.c, print_report ``%O``); a chronyd under
    ``faketime +2s`` shows ``-2.0`` here and "2.0 seconds fast" in text mode.
    """
    last_offset: float
    rms_offset: float
    frequency_ppm: float
    residual_frequency_ppm: float
    skew_ppm: float
    root_delay: float
    root_dispersion: float
    update_interval: float
    leap_status: LeapStatus

    @classmethod
    def parse(cls, output: str) -> ChronyTracking:
        """Parse the CSV line of ``chronyc -c tracking``; raise ProbeResponseError."""
        line = next((line for line in output.splitlines() if line.strip()), "")
        fields = line.strip().split(",")
        if len(fields) != TRACKING_FIELDS:
            raise ProbeResponseError(
                f"chronyc tracking printed {len(fields)} fields, expected"
                f" {TRACKING_FIELDS}: {line[:200]!r}"
            )
        try:
            return cls(
                ref_id=fields[0],
                ref_name=fields[1],
                stratum=int(fields[2]),
                ref_time=float(fields[3]),
                system_time=float(fields[4]),
                last_offset=float(fields[5]),
                rms_offset=float(fields[6]),
                frequency_ppm=float(fields[7]),
                residual_frequency_ppm=float(fields[8]),
                skew_ppm=float(fields[9]),
                root_delay=float(fields[10]),
                root_dispersion=float(fields[11]),
                update_interval=float(fields[12]),
                leap_status=_LEAP_TEXT[fields[13]],
            )
        except (ValueError, KeyError) as err:
            raise ProbeResponseError(
                f"chronyc tracking printed an unreadable line ({err}): {line[:200]!r}"
            ) from None

    def reading(self, name: str) -> Reading:
        """Return NTP time minus the system clock as a CHRONY reading.

        An unsynchronised chronyd has no NTP time to compare with: a failed reading.
        """
        if self.leap_status is LeapStatus.NOT_SYNCHRONISED:
            return Reading.failed(
                ClockKind.CHRONY, name, "chronyd is not synchronised to any source"
            )
        return Reading(
            kind=ClockKind.CHRONY,
            name=name,
            offset=self.system_time,
            uncertainty=self.root_delay / 2 + self.root_dispersion,
            taken_at=time.time(),
        )


type _Runner = Callable[[Sequence[str], float], Awaitable[tuple[int, str]]]


def _raise_for_output(name: str, code: int, output: str) -> None:
    """Raise the probe error that chronyc's exit code and answer stand for."""
    text = output.strip()
    first = text.splitlines()[0] if text else f"exit code {code}"
    if "501 Not authorised" in text:
        raise ProbeAuthError(
            f"chronyd at {name} refused the command: 501 Not authorised (commands"
            " that change the clock need chrony's Unix command socket)"
        )
    if "506 Cannot talk to daemon" in text or "Could not open connection" in text:
        raise ProbeConnectionError(f"cannot talk to chronyd at {name}: {first}")
    if code in _COMMAND_NOT_FOUND or "executable file not found" in text:
        raise ProbeCommandError(f"{name}: {MISSING_CHRONYC}")
    if code or (text[:1] == "5" and text[:3].isdigit()):
        raise ProbeCommandError(f"chronyd at {name} answered: {first}")


class ChronyClient:
    """Runs chronyc through a local command socket or inside a container."""

    name: str

    def __init__(self, name: str, runner: _Runner, timeout: float) -> None:
        """Run chronyc through ``runner`` (built by ``local`` or ``in_container``)."""
        self.name = name
        self._run = runner
        self._timeout = timeout

    @classmethod
    def local(
        cls,
        socket_path: str,
        *,
        chronyc: str = "chronyc",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ChronyClient:
        """Return a client for ``chronyc -h SOCKET``.

        ``socket_path`` may also be ``HOST`` or ``HOST:PORT`` of chronyd's UDP command
        port, which allows monitoring (``tracking``) but not ``makestep``.
        """
        host = ["-h", socket_path]
        if not socket_path.startswith("/") and socket_path.count(":") == 1:
            address, port = socket_path.split(":")
            host = ["-h", address, "-p", port]

        async def run(args: Sequence[str], timeout: float) -> tuple[int, str]:
            """Run the local chronyc with a fixed argv, killed after ``timeout``."""
            try:
                process = await asyncio.create_subprocess_exec(
                    chronyc,
                    *host,
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
            except FileNotFoundError:
                raise ProbeCommandError(MISSING_CHRONYC) from None
            except OSError as err:
                raise ProbeCommandError(
                    f"cannot run {chronyc}: {err.strerror or err}"
                ) from None
            try:
                async with asyncio.timeout(timeout):
                    stdout, _ = await process.communicate()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise ProbeTimeoutError(
                    f"chronyc did not finish within {timeout:g} s"
                ) from None
            output = stdout.decode(errors="replace")
            if (
                process.returncode
                and socket_path.startswith("/")
                and not await asyncio.to_thread(Path(socket_path).exists)
            ):
                raise ProbeConnectionError(
                    f"chrony's command socket {socket_path} does not exist (is chronyd"
                    " running with bindcmdaddress there?)"
                )
            return process.returncode or 0, output

        return cls(socket_path, run, timeout)

    @classmethod
    def in_container(cls, docker: DockerClocks, container: str) -> ChronyClient:
        """Return a client that execs ``chronyc`` in a container through Docker."""

        async def run(args: Sequence[str], timeout: float) -> tuple[int, str]:
            """Exec chronyc in the container with a fixed argv."""
            return await docker.exec(container, ["chronyc", *args], timeout=timeout)

        return cls(container, run, DEFAULT_TIMEOUT)

    async def _command(self, *args: str) -> str:
        """Run chronyc with ``args``; return its output or raise what it means."""
        code, output = await self._run(args, self._timeout)
        _raise_for_output(self.name, code, output)
        return output

    async def tracking(self) -> ChronyTracking:
        """Return chrony's tracking report.

        Raises ProbeConnectionError, ProbeAuthError ("Not authorised"),
        ProbeCommandError, ProbeResponseError.
        """
        return ChronyTracking.parse(await self._command("-c", "tracking"))

    async def read(self) -> Reading:
        """Return the tracking report as a CHRONY reading, or a failed one."""
        try:
            return (await self.tracking()).reading(self.name)
        except ProbeError as err:
            return Reading.failed(ClockKind.CHRONY, self.name, str(err))

    async def makestep(self) -> str:
        """Run ``makestep`` and return chrony's answer; a failure raises."""
        return (await self._command("makestep")).strip()

"""Command line: ``python -m custom_components.clock_drift.probes`` checks every clock.

Exit status: 0 in sync, 1 out of sync, 2 when a clock could not be read (2 wins).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
import json
import sys
from typing import Final

from .check import CheckConfig, check
from .report import Report

EXIT_IN_SYNC: Final = 0
EXIT_OUT_OF_SYNC: Final = 1
EXIT_UNREADABLE: Final = 2


def _seconds(text: str) -> float:
    """Parse a non-negative number of seconds for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the command line's parser."""
    parser = argparse.ArgumentParser(
        prog="python -m custom_components.clock_drift.probes",
        description="Measure how far each clock of a stack is from this machine's"
        " clock (offset = source minus local, signed).",
        epilog="Exit status: 0 in sync, 1 out of sync, 2 when a clock could not be"
        " read.",
    )
    source = parser.add_argument_group("clocks to read")
    source.add_argument(
        "--ntp", action="append", default=[], metavar="HOST[:PORT]", help="NTP server"
    )
    source.add_argument("--redis", metavar="URL", help="redis:// or rediss:// URL")
    source.add_argument(
        "--docker",
        metavar="URL",
        help="Docker endpoint: unix://PATH or tcp://HOST:PORT",
    )
    source.add_argument(
        "--container",
        action="append",
        default=[],
        metavar="NAME",
        help="container to read (repeatable; default: all running)",
    )
    source.add_argument(
        "--celery", metavar="URL", help="Redis broker URL to hear worker heartbeats on"
    )
    source.add_argument(
        "--listen",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long to listen for Celery heartbeats (default 5)",
    )
    chrony = source.add_mutually_exclusive_group()
    chrony.add_argument(
        "--chrony-socket", metavar="PATH", help="chronyd's command socket"
    )
    chrony.add_argument(
        "--chrony-container",
        metavar="NAME",
        help="container running chronyd (needs --docker)",
    )
    parser.add_argument(
        "--tolerance",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="largest offset still in sync (default 30)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def _duration(seconds: float | None, *, sign: bool) -> str:
    """Format seconds as milliseconds below one second, else as seconds."""
    if seconds is None:
        return "-"
    plus = "+" if sign else ""
    if abs(seconds) < 1:
        return f"{seconds * 1000:{plus}.3f} ms"
    return f"{seconds:{plus}.3f} s"


def format_table(report: Report) -> str:
    """Return the report as an aligned table with a verdict line."""
    header = ("KIND", "NAME", "OFFSET", "UNCERTAINTY", "ERROR")
    rows = [
        (
            str(reading.kind),
            reading.name,
            _duration(reading.offset, sign=True),
            f"± {_duration(reading.uncertainty, sign=False)}"
            if reading.uncertainty is not None
            else "-",
            reading.error or "",
        )
        for reading in report.readings
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    lines = [
        "  ".join(
            [
                row[0].ljust(widths[0]),
                row[1].ljust(widths[1]),
                row[2].rjust(widths[2]),
                row[3].rjust(widths[3]),
                row[4],
            ]
        ).rstrip()
        for row in (header, *rows)
    ]
    verdict = "in sync" if report.in_sync else "OUT OF SYNC"
    details = [f"tolerance {_duration(report.tolerance, sign=False)}"]
    if report.spread is not None and report.worst is not None:
        details.append(f"spread {_duration(report.spread, sign=False)}")
        details.append(f"worst {report.worst.kind} {report.worst.name}")
    if report.unreadable:
        details.append(f"{len(report.unreadable)} clock(s) unreadable")
    lines.append(f"{verdict} ({', '.join(details)})")
    return "\n".join(lines)


def exit_code(report: Report) -> int:
    """Return 2 if a clock was unreadable, else 1 if out of sync, else 0."""
    if report.unreadable:
        return EXIT_UNREADABLE
    return EXIT_IN_SYNC if report.in_sync else EXIT_OUT_OF_SYNC


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check the arguments describe, print it, and return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.container or args.chrony_container) and not args.docker:
        parser.error("--container and --chrony-container need --docker")
    if not (args.ntp or args.redis or args.docker or args.celery or args.chrony_socket):
        parser.error(
            "nothing to check: give --ntp, --redis, --docker, --celery or"
            " --chrony-socket"
        )
    config = CheckConfig(
        ntp=args.ntp,
        redis=args.redis,
        docker=args.docker,
        containers=args.container,
        celery=args.celery,
        listen=args.listen,
        chrony_socket=args.chrony_socket,
        chrony_container=args.chrony_container,
        tolerance=args.tolerance,
    )
    report = asyncio.run(check(config))
    if args.json:
        sys.stdout.write(json.dumps(report.as_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(format_table(report) + "\n")
    return exit_code(report)


if __name__ == "__main__":
    sys.exit(main())

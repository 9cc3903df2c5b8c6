"""Tests of the report: in-sync verdict, spread, worst clock, unreadable clocks."""

from __future__ import annotations

import json

import pytest

from custom_components.clock_drift.probes import ClockKind, Reading
from custom_components.clock_drift.probes.report import Report, build_report


def reading(kind: ClockKind, name: str, offset: float) -> Reading:
    """Return a readable reading with a 1 ms uncertainty."""
    return Reading(kind=kind, name=name, offset=offset, uncertainty=0.001, taken_at=1.0)


NTP = reading(ClockKind.NTP, "pool", -0.25)
REDIS = reading(ClockKind.REDIS, "redis:6379/0", 42.0)
WORKER = reading(ClockKind.CELERY, "celery@scan-worker-1", -3.0)
DOWN = Reading.failed(ClockKind.REDIS, "cache:6379/0", "cannot connect")


def test_all_within_tolerance() -> None:
    """Clocks within the tolerance are in sync; the spread counts the local 0."""
    report = build_report([NTP, WORKER], tolerance=30)
    assert report.in_sync
    assert report.spread == pytest.approx(3.0)
    assert report.worst is WORKER
    assert report.out_of_tolerance == ()
    assert report.unreadable == ()


def test_one_out_of_tolerance() -> None:
    """The +42 s Redis is out of a 30 s tolerance and the worst clock."""
    report = build_report([NTP, REDIS, WORKER], tolerance=30)
    assert not report.in_sync
    assert report.spread == pytest.approx(45.0)
    assert report.worst is REDIS
    assert report.out_of_tolerance == (REDIS,)


def test_negative_offset_out_of_tolerance() -> None:
    """The sign does not matter against the tolerance; exactly at it is in sync."""
    assert not build_report([WORKER], tolerance=2.9).in_sync
    assert build_report([WORKER], tolerance=3.0).in_sync


def test_spread_includes_the_local_clock() -> None:
    """All clocks ahead: the spread still runs from the local clock's 0."""
    report = build_report([REDIS], tolerance=60)
    assert report.spread == pytest.approx(42.0)


def test_unreadable_clocks_are_listed_not_judged() -> None:
    """A clock that could not be read neither breaks nor makes the verdict."""
    report = build_report([DOWN, NTP], tolerance=30)
    assert report.in_sync
    assert report.unreadable == (DOWN,)
    assert report.worst is NTP
    assert report.readings == (DOWN, NTP)


def test_nothing_readable() -> None:
    """Without a readable clock there is no spread and no worst clock."""
    report = build_report(iter([DOWN]), tolerance=30)
    assert report.in_sync
    assert report.spread is None
    assert report.worst is None
    assert report.as_dict() == {
        "in_sync": True,
        "spread": None,
        "tolerance": 30,
        "worst": None,
        "readings": [
            {
                "kind": "redis",
                "name": "cache:6379/0",
                "offset": None,
                "uncertainty": None,
                "error": "cannot connect",
            }
        ],
    }


def test_as_dict_is_the_documented_json() -> None:
    """as_dict() is the command line's JSON: verdict, spread, worst, readings."""
    report = build_report([NTP, REDIS, DOWN], tolerance=30)
    assert isinstance(report, Report)
    assert json.loads(json.dumps(report.as_dict())) == {
        "in_sync": False,
        "spread": 42.25,
        "tolerance": 30,
        "worst": "redis:6379/0",
        "readings": [
            {
                "kind": "ntp",
                "name": "pool",
                "offset": -0.25,
                "uncertainty": 0.001,
                "error": None,
            },
            {
                "kind": "redis",
                "name": "redis:6379/0",
                "offset": 42.0,
                "uncertainty": 0.001,
                "error": None,
            },
            {
                "kind": "redis",
                "name": "cache:6379/0",
                "offset": None,
                "uncertainty": None,
                "error": "cannot connect",
            },
        ],
    }

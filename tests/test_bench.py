"""The bench's own arithmetic (the bench itself runs against a real daemon: `nox -s bench`)."""

from __future__ import annotations

import os

import pytest

from tests.bench.bench import Measure, busy_core_seconds, report

# user nice system idle iowait irq softirq steal guest guest_nice
STAT = "cpu  1000 20 300 90000 400 5 75 600 0 0\ncpu0 500 10 150 45000 200 3 40 300 0 0\n"


def test_busy_core_seconds_count_what_processes_used_and_not_idle_iowait_or_steal() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    assert busy_core_seconds(STAT) == pytest.approx((1000 + 20 + 300 + 5 + 75) / ticks)


def test_busy_core_seconds_refuse_what_is_not_proc_stat() -> None:
    with pytest.raises(ValueError, match="not /proc/stat"):
        busy_core_seconds("intr 1 2 3\n")


def test_the_report_sets_the_publishers_work_against_each_baselines() -> None:
    def measure(method: str, seconds: float, core_seconds: float) -> Measure:
        return Measure(
            scenario="cold",
            method=method,
            seconds=seconds,
            bytes_uploaded=400_000_000,
            images_built=6,
            core_seconds=core_seconds,
        )

    table = report([measure("publisher", 120.0, 300.0), measure("careful", 200.0, 250.0)])
    header, _, row = table.splitlines()
    assert header.split() == [
        *("scenario", "publisher", "s", "publisher", "MB", "up", "publisher", "core-s"),
        *("careful", "s", "time", "xcareful", "bytes", "xcareful", "core-s", "xcareful"),
    ]
    assert row.split() == ["cold", "120.0", "400.0", "300", "200.0", "0.600", "1.000", "1.200"]

"""The bench's own arithmetic (the bench itself runs against a real daemon: `nox -s bench`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from publisher import smoke
from tests.bench.bench import Measure, busy_core_seconds, report, report_work
from tests.bench.limit import Limit, environments, probes
from tests.bench.work import CGROUPS_V1, CGROUPS_V2, Sampler, docker_cgroups, part_of, split

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


@contextmanager
def running(args: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A process for the length of a test, its stdin and stdout piped."""
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_a_containers_part_is_told_by_its_command() -> None:
    assert part_of("/usr/bin/python3 /usr/local/bin/pip install --dry-run --report -") == "resolve"
    assert part_of("python -c import compileall, json, os, sys ...") == "install"
    assert part_of("sh -ec options=-qq -o Dir::State::Lists=/tmp/apt/lists") == "apt"
    assert part_of("tini -g -- /usr/local/bin/entrypoint.sh python -c import json") == (
        "smoke tests"
    )
    assert part_of("sleep 5") == "other containers"


def test_the_work_is_split_by_part_and_what_nothing_explains_is_other() -> None:
    work = split(
        400.0,
        all_containers=150.0,
        build_steps=20.0,
        containers={
            "a": (60.0, "tini -g -- /usr/local/bin/entrypoint.sh python -c probe"),
            "b": (30.0, "pip install --dry-run --quiet --report -"),
        },
        processes={"daemon": 120.0, "bench process": 30.0, "index": 10.0},
    )
    assert work.parts["build steps"] == 20.0
    assert work.parts["smoke tests"] == 60.0
    assert work.parts["resolve"] == 30.0
    # Containers too short-lived to be sampled: the docker cgroup has what they used.
    assert work.parts["other containers"] == 40.0
    assert work.parts["daemon"] == 120.0
    assert work.parts["other"] == 400.0 - 150.0 - 160.0
    assert "smoke tests 60" in work.line() and "apt" not in work.line()
    idle = split(0.1, all_containers=0.0, build_steps=0.0, containers={}, processes={})
    assert idle.line() == "none to speak of"


def usage_file(version: int, folder: Path, ns: int) -> None:
    """A cgroup's CPU time as cgroup v1 (cpuacct.usage, ns) or v2 (cpu.stat, us) has it."""
    if version == 1:
        (folder / "cpuacct.usage").write_text(f"{ns}\n")
    else:
        (folder / "cpu.stat").write_text(f"usage_usec {ns // 1000}\nuser_usec 0\nsystem_usec 0\n")


@pytest.mark.parametrize("version", [1, 2])
def test_the_sampler_keeps_what_a_container_used_before_its_cgroup_went(
    tmp_path: Path, version: int
) -> None:
    root = tmp_path / "docker"

    def cgroup(name: str, ns: int, pid: int | None = None) -> Path:
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        usage_file(version, folder, ns)
        (folder / "cgroup.procs").write_text(f"{pid}\n" if pid else "")
        return folder

    # A process whose command line says what it does, as a resolver container's would.
    resolving = [sys.executable, "-c", "import time; time.sleep(60)", "--dry-run", "--report"]
    with running(resolving) as resolver:
        cgroup(".", 5_000_000_000)
        cgroup("buildkit", 1_000_000_000)
        before = cgroup("old", 4_000_000_000)
        with Sampler(interval=0.05, cgroups=root) as sampler:
            cgroup(".", 12_000_000_000)
            cgroup("buildkit", 3_000_000_000)
            cgroup("buildkit/step", 2_000_000_000)  # counted in buildkit's, not again
            # Sampled first before its process is in it, as a container being started is.
            gone = cgroup("c1", 0)
            time.sleep(0.2)
            cgroup("c1", 3_000_000_000, resolver.pid)
            usage_file(version, before, 4_500_000_000)
            time.sleep(0.3)
            shutil.rmtree(gone)  # the container was removed: its cgroup with it
            time.sleep(0.2)
        work = sampler.work(100.0)
    assert work.parts["resolve"] == 3.0
    assert work.parts["build steps"] == 2.0
    # 7 s in all containers: 3 resolving, 2 in build steps, 0.5 in the container that was
    # there before (a command this test's cgroup gives none of).
    assert work.parts["other containers"] == 2.0


def test_the_daemons_work_leaves_out_the_build_steps_its_runc_children_did(
    tmp_path: Path,
) -> None:
    root = tmp_path / "docker"
    (root / "buildkit").mkdir(parents=True)
    for folder, ns in ((root, 0), (root / "buildkit", 0)):
        (folder / "cpuacct.usage").write_text(f"{ns}\n")
        (folder / "cgroup.procs").write_text("")
    # Stands in for dockerd: about 1 s of a core once told to, after the sampling began.
    busy = "import sys, time\nsys.stdin.readline()\nend = time.process_time() + 1.0\n"
    busy += "while time.process_time() < end: pass\nprint(flush=True)\ntime.sleep(60)"
    with running([sys.executable, "-c", busy]) as daemon:
        with Sampler(interval=0.05, cgroups=root, watched={daemon.pid: "daemon"}) as sampler:
            assert daemon.stdin is not None and daemon.stdout is not None
            daemon.stdin.write("go\n")
            daemon.stdin.flush()
            daemon.stdout.readline()  # its second of work is done
            (root / "cpuacct.usage").write_text("300000000\n")
            (root / "buildkit" / "cpuacct.usage").write_text("300000000\n")
            time.sleep(0.2)
        work = sampler.work(100.0)
    assert work.parts["build steps"] == 0.3
    assert 0.6 <= work.parts["daemon"] <= 0.8, work.parts


def test_without_docker_cgroups_there_is_no_breakdown(tmp_path: Path) -> None:
    with Sampler(interval=0.05, cgroups=tmp_path / "absent") as sampler:
        pass
    assert sampler.work(10.0).parts == {}
    assert docker_cgroups() in (CGROUPS_V1, CGROUPS_V2)
    assert "no breakdown" in sampler.work(10.0).line()


def test_the_work_table_has_a_column_per_run_and_a_row_per_part_that_did_any() -> None:
    def measure(method: str, work: dict[str, float], core_seconds: float) -> Measure:
        return Measure(
            scenario="cold",
            method=method,
            seconds=100.0,
            bytes_uploaded=1,
            images_built=6,
            core_seconds=core_seconds,
            work=work,
        )

    table = report_work(
        [
            measure("publisher", {"daemon": 120.0, "smoke tests": 100.0, "apt": 0.2}, 400.0),
            measure("careful", {"daemon": 70.0, "build steps": 150.0}, 300.0),
        ]
    )
    lines = [line.split() for line in table.splitlines()]
    assert lines[0] == ["core-s", "by", "part", "cold", "publisher", "cold", "careful"]
    assert lines[2:] == [
        ["daemon", "120", "70"],
        ["build", "steps", "0", "150"],
        ["smoke", "tests", "100", "0"],
        ["all", "400", "300"],
    ]


E2E_MATRIX = Path(__file__).parent / "e2e" / "matrix.yaml"


def test_the_limit_probes_each_image_and_starts_the_server_once_per_environment() -> None:
    # As the publisher checks (`build.serves_ui`): the core of an environment serves the
    # UI and its extras image is not asked again; an environment without a core image has
    # its extras image serve it.
    found = {
        key[:2]: [(image.variant, ui) for image, ui in probes(images)]
        for key, images in environments(E2E_MATRIX).items()
    }
    assert found == {
        ("3.9.0", "3.13"): [("core", smoke.UI_IF_PRESENT), ("full", smoke.UI_SKIP)],
        ("3.9.1", "3.13"): [("core", smoke.UI_IF_PRESENT), ("full", smoke.UI_SKIP)],
        ("3.9.0", "3.11"): [("full", smoke.UI_IF_PRESENT)],
        ("3.9.1", "3.11"): [("full", smoke.UI_IF_PRESENT)],
    }


def test_the_limit_with_checks_adds_the_same_upload_to_the_checked_installs() -> None:
    limit = Limit(
        environments=4,
        install_seconds=80.0,
        bandwidth=100e6,
        upload_bytes=400_000_000,
        checked_seconds=130.0,
        probes=6,
        ui_probes=4,
    )
    assert (limit.seconds, limit.seconds_with_checks) == pytest.approx((84.0, 134.0))

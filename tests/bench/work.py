"""Where a run's work goes: its core-seconds by part, sampled while it runs.

The bench's core-seconds say how much work a method does; this says what that work is.
Containers' CPU is read from their cgroups (v1's cpuacct, as on this machine, or v2's cpu
controller under /sys/fs/cgroup/docker, where dockerd's cgroupfs driver puts them): all
containers together from the docker cgroup and BuildKit's RUN steps from its buildkit
cgroup (a parent keeps what its removed children used), each container from its own
cgroup, which the daemon removes with the container. So those are read every
``interval`` seconds and each one's highest reading kept; a container that lives less
than that is missed, and its work shows as "other containers". A container's part is
told by its command line (`part_of`). The daemon's own work (BuildKit, compressing layers
for a push, unpacking them) is read from dockerd's and containerd's /proc entries, their
reaped children (docker-untar) included, less the build steps (BuildKit's runc is
dockerd's child); the bench's own process (the publisher runs in it, and this sampler;
the loops' docker CLI calls are its children) from getrusage. "other" is the rest of the
machine's busy time: the kernel's threads, mostly.

Cheap enough to run with every measurement: a few dozen cgroup files and a few /proc
entries twice a second, 1.7 core-s in a 240 s run (0.4%), where scanning every process
took 3% of a run's work.
"""

from __future__ import annotations

import os
import resource
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CGROUPS_V1 = Path("/sys/fs/cgroup/cpuacct/docker")
CGROUPS_V2 = Path("/sys/fs/cgroup/docker")
# cgroup v1 counts a group's CPU in nanoseconds (cpuacct.usage), v2 in microseconds
# (cpu.stat's usage_usec).
USAGE_V1, USAGE_V2 = "cpuacct.usage", "cpu.stat"
BUILDKIT = "buildkit"  # BuildKit's RUN steps' cgroups are under docker/buildkit
PROC = Path("/proc")
# Processes outside containers whose work is a part of its own, by /proc/PID/comm.
DAEMONS = {"dockerd": "daemon", "containerd": "daemon", "docker-registry": "registry"}
INDEX = "pypi-server"  # the package index: a Python process, told by its command line
PARTS = (
    "daemon",  # dockerd and containerd: BuildKit, layer compression on push, unpacking
    "build steps",  # RUN steps of a BuildKit build (the loops' pip installs)
    "smoke tests",
    "resolve",  # pip resolving in a container
    "install",  # pip installing wheels in a container, outside a build
    "apt",  # fetching .debs in a container
    "other containers",
    "bench process",  # the publisher itself, or the loops' docker CLI calls
    "index",
    "registry",
    "other",
)


def part_of(command: str) -> str:
    """The part a container's work belongs to, from the command line of a process in it."""
    if "--dry-run" in command and "--report" in command:
        return "resolve"
    if "compileall" in command:
        return "install"
    if "Dir::State" in command or command.startswith("apt"):
        return "apt"
    if "entrypoint.sh" in command:
        return "smoke tests"
    return "other containers"


@dataclass
class Work:
    """Core-seconds by part (PARTS order); empty where no docker cgroups were found."""

    parts: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        if not self.parts:
            return "no breakdown (no docker cgroups found)"
        shown = [f"{name} {seconds:.0f}" for name, seconds in self.parts.items() if seconds >= 0.5]
        return ", ".join(shown) or "none to speak of"


def split(
    total: float,
    *,
    all_containers: float,
    build_steps: float,
    containers: Mapping[str, tuple[float, str]],
    processes: Mapping[str, float],
) -> Work:
    """``total`` busy core-seconds split into PARTS: ``all_containers`` (of which
    ``build_steps``) by ``containers`` (one's name -> its core-seconds and command; what
    they leave out is "other containers"), ``processes`` (part -> core-seconds); what none
    explains is "other"."""
    parts = dict.fromkeys(PARTS, 0.0)
    parts["build steps"] = build_steps
    for seconds, command in containers.values():
        parts[part_of(command)] += seconds
    parts["other containers"] += max(0.0, all_containers - sum(parts.values()))
    for part, seconds in processes.items():
        parts[part] += seconds
    parts["other"] = max(0.0, total - sum(parts.values()))
    return Work({name: round(seconds, 1) for name, seconds in parts.items()})


class Sampler:
    """Samples while a run runs (``with Sampler() as sampler: ...``), then ``work(total)``."""

    def __init__(
        self,
        interval: float = 0.5,
        cgroups: Path | None = None,  # default: the docker cgroups this machine has
        watched: Mapping[int, str] | None = None,  # pid -> part; default: found in /proc
    ) -> None:
        self._interval = interval
        self._root = cgroups if cgroups is not None else docker_cgroups()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="work-sampler", daemon=True)
        self._baseline: dict[str, int] = {}
        self._seen: dict[str, tuple[int, str]] = {}  # cgroup -> highest ns, command
        self._pids = dict(watched) if watched is not None else _watched()
        self._start_cpu = {pid: _cpu(pid) for pid in self._pids}
        self._end_cpu: dict[int, float] = {}
        self._own = _own_cpu()

    def __enter__(self) -> Sampler:
        self._baseline = {name: ns for name, (ns, _) in self._read().items()}
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self._end_cpu = {pid: _cpu(pid) for pid in self._pids}
        self._own = _own_cpu() - self._own

    def work(self, total: float) -> Work:
        """``total`` (the machine's busy core-seconds during the run) by part."""
        if not self._root.is_dir():
            return Work()
        used = self._used()
        everything = used.pop(".", (0.0, ""))[0]
        build_steps = used.pop(BUILDKIT, (0.0, ""))[0]
        containers = {name: found for name, found in used.items() if "/" not in name}
        processes: dict[str, float] = {"bench process": self._own}
        for pid, part in self._pids.items():
            spent = self._end_cpu.get(pid, 0.0) - self._start_cpu[pid]
            processes[part] = processes.get(part, 0.0) + max(0.0, spent)
        # BuildKit runs each RUN step's runc as dockerd's child, so what the steps used is
        # in dockerd's reaped children's time as well as in the buildkit cgroup.
        processes["daemon"] = max(0.0, processes.get("daemon", 0.0) - build_steps)
        return split(
            total,
            all_containers=everything,
            build_steps=build_steps,
            containers=containers,
            processes=processes,
        )

    def containers(self) -> dict[str, tuple[float, str]]:
        """Each container seen during the run, by id: its core-seconds and command line."""
        return {
            name: found
            for name, found in self._used().items()
            if name not in (".", BUILDKIT) and "/" not in name
        }

    def _used(self) -> dict[str, tuple[float, str]]:
        return {
            name: ((ns - self._baseline.get(name, 0)) / 1e9, command)
            for name, (ns, command) in self._seen.items()
        }

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def _sample(self) -> None:
        for name, (ns, command) in self._read().items():
            earlier = self._seen.get(name)
            if earlier is not None:
                # A container's first sample may find no process in it yet, or runc's.
                if earlier[1] and not earlier[1].startswith("runc"):
                    command = earlier[1]
                ns = max(ns, earlier[0])
            self._seen[name] = (ns, command)

    def _read(self) -> dict[str, tuple[int, str]]:
        found: dict[str, tuple[int, str]] = {}
        if not self._root.is_dir():
            return found
        # The docker cgroup (".", every container), buildkit (every build step) and each
        # container's; not each build step's: buildkit has what they used.
        for folder, _, files in os.walk(self._root):
            if folder.startswith(f"{self._root / BUILDKIT}/"):
                continue
            try:
                ns = _usage(Path(folder), files)
                pids = Path(folder, "cgroup.procs").read_text().split()
            except (OSError, ValueError):
                continue  # removed meanwhile
            if ns is None:
                continue
            name = os.path.relpath(folder, self._root)
            found[name] = (ns, _command(pids[0]) if pids and "/" not in name else "")
        return found


def docker_cgroups() -> Path:
    """Where this machine's docker cgroups are: v1's cpuacct hierarchy, or else v2's."""
    return CGROUPS_V1 if CGROUPS_V1.is_dir() else CGROUPS_V2


def _usage(folder: Path, files: list[str]) -> int | None:
    """A cgroup's CPU time so far in nanoseconds; None if it has no CPU accounting."""
    if USAGE_V1 in files:
        return int((folder / USAGE_V1).read_text())
    if USAGE_V2 in files:
        for line in (folder / USAGE_V2).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * 1000
    return None


def _watched() -> dict[int, str]:
    """The daemons', registry's and index's pids, found once: they outlive the run."""
    found: dict[int, str] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        pid = int(entry.name)
        if comm in DAEMONS:
            found[pid] = DAEMONS[comm]
        elif INDEX in _command(entry.name):
            found[pid] = "index"
    return found


def _cpu(pid: int) -> float:
    """A process's core-seconds, its reaped children's included (0 once it is gone)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def _command(pid: str) -> str:
    try:
        raw = (PROC / pid / "cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)

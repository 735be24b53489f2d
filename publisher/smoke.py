"""Smoke tests: run a built image and check it is the image the plan asked for.

One container per image, started through the image's own entrypoint (tini and
entrypoint.sh) and waited for: a test started detached can never fail. Inside it a
probe runs `prefect version` (so the CLI really starts), reads what PID 1 is, asks the
image's own Python for its version and for which extras' packages are installed, and
prints all of it as one JSON document. The checks on that report are pure functions.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker

from . import docker_client
from .errors import BuildError

REPORT_MARKER = "publisher-smoke-report: "

# Runs inside the image with its own Python, as the container's command. pip vendors
# `packaging`, so the extra markers of prefect's requirements are evaluated exactly as
# pip evaluated them. It always prints a report; the checks decide what is wrong.
_PROBE = r"""
import json, platform, subprocess, sys

def read(path, binary=False):
    try:
        with open(path, "rb" if binary else "r") as file:
            return file.read()
    except OSError:
        return b"" if binary else ""

def prefect_version():
    try:
        done = subprocess.run(
            ["prefect", "version"], capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return {"code": 127, "output": f"{type(exc).__name__}: {exc}"}
    return {"code": done.returncode, "output": done.stdout + done.stderr}

def extras(wanted):
    from importlib import metadata
    from pip._vendor.packaging.requirements import Requirement

    def installed(name):
        try:
            metadata.distribution(name)
            return True
        except metadata.PackageNotFoundError:
            return False

    requirements = [Requirement(r) for r in (metadata.requires("prefect") or [])]
    base = {
        r.name.lower() for r in requirements
        if r.marker is None or r.marker.evaluate({"extra": ""})
    }
    report = {}
    for extra in wanted:
        names = sorted({
            r.name for r in requirements
            if r.marker is not None and r.marker.evaluate({"extra": extra})
            and not r.marker.evaluate({"extra": ""}) and r.name.lower() not in base
        })
        report[extra] = {"packages": names, "installed": [n for n in names if installed(n)]}
    return report

cmdline = read("/proc/1/cmdline", binary=True).split(b"\0")
report = {
    "pid1": {
        "cmdline": [arg.decode("utf-8", "replace") for arg in cmdline if arg],
        "comm": read("/proc/1/comm").strip(),
    },
    "python": platform.python_version(),
    "machine": platform.machine(),
    "prefect": prefect_version(),
    "extras": {},
}
if sys.argv[1:]:
    try:
        report["extras"] = extras(sys.argv[1:])
    except Exception as exc:
        report["extras_error"] = f"{type(exc).__name__}: {exc}"
print(MARKER + json.dumps(report), flush=True)
""".replace("MARKER", repr(REPORT_MARKER))

_VERSION_LINE = re.compile(r"^\s*Version:\s*(\S+)", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class SmokeResult:
    prefect_version: str
    python_version: str
    machine: str = ""


@dataclass(frozen=True, kw_only=True)
class Extra:
    packages: tuple[str, ...]  # what prefect declares for the extra beyond its core
    installed: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Report:
    """What the probe saw inside the container."""

    pid1: str  # the program name of PID 1
    python_version: str
    machine: str  # platform.machine(): the architecture the image's code runs as
    prefect_exit_code: int
    prefect_output: str
    extras: Mapping[str, Extra]
    extras_error: str | None = None


def check(
    client: docker.DockerClient,
    image: str,
    *,
    python: str,
    prefect_version: str | None,
    extras_present: Sequence[str],
    extras_absent: Sequence[str],
    machine: str | None = None,
) -> SmokeResult:
    """Raise BuildError naming the first check that fails.

    ``prefect_version`` None accepts whatever version the image reports (nightly builds
    learn their version from the build).
    """
    code, output = docker_client.run(
        client, image, ["python", "-c", _PROBE, *extras_present, *extras_absent]
    )
    return verify(
        parse_report(code, output),
        python=python,
        prefect_version=prefect_version,
        extras_present=extras_present,
        extras_absent=extras_absent,
        machine=machine,
    )


def parse_report(code: int, output: str) -> Report:
    """The probe's report from the container's exit code and output."""
    lines = [line for line in output.splitlines() if line.startswith(REPORT_MARKER)]
    if code != 0 or not lines:
        raise BuildError(f"the smoke probe exited with {code}: {_last_line(output)}")
    try:
        document: dict[str, Any] = json.loads(lines[-1].removeprefix(REPORT_MARKER))
        cmdline, comm = document["pid1"]["cmdline"], document["pid1"]["comm"]
        return Report(
            pid1=os.path.basename(cmdline[0]) if cmdline else str(comm),
            python_version=str(document["python"]),
            machine=str(document.get("machine", "")),
            prefect_exit_code=int(document["prefect"]["code"]),
            prefect_output=str(document["prefect"]["output"]),
            extras={
                str(name): Extra(
                    packages=tuple(entry["packages"]), installed=tuple(entry["installed"])
                )
                for name, entry in document["extras"].items()
            },
            extras_error=document.get("extras_error"),
        )
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise BuildError(f"the smoke probe's report is malformed: {exc!r}") from None


def verify(
    report: Report,
    *,
    python: str,
    prefect_version: str | None,
    extras_present: Sequence[str],
    extras_absent: Sequence[str],
    machine: str | None = None,
) -> SmokeResult:
    """Raise BuildError naming the first check the report fails.

    ``machine`` is the ``platform.machine()`` the image must report (None: any).
    """
    if not report.pid1.startswith("tini"):
        raise BuildError(
            f"PID 1 is {report.pid1 or 'unknown'!r}, not tini: the entrypoint does not start "
            "through tini"
        )
    reported = _prefect_version(report)
    if prefect_version is not None and reported != prefect_version:
        raise BuildError(f"`prefect version` reports {reported}, expected {prefect_version}")

    actual = report.python_version
    if not (actual == python or actual.startswith(python + ".")):
        raise BuildError(f"`python` in the image is Python {actual}, expected Python {python}")
    if machine is not None and report.machine != machine:
        raise BuildError(
            f"the image runs as {report.machine or 'an unknown machine'}, expected {machine}"
        )

    if (extras_present or extras_absent) and report.extras_error is not None:
        raise BuildError(f"extras check failed to run: {report.extras_error}")
    for extra in extras_present:
        found = report.extras[extra]
        if not found.packages:
            raise BuildError(f"prefect declares no packages for extra {extra!r}")
        missing = sorted(set(found.packages) - set(found.installed))
        if missing:
            raise BuildError(f"extra {extra!r} is missing {', '.join(missing)}")
    for extra in extras_absent:
        present = report.extras[extra].installed
        if present:
            raise BuildError(
                f"a core image must not carry extra {extra!r}, but has {', '.join(present)}"
            )
    return SmokeResult(prefect_version=reported, python_version=actual, machine=report.machine)


def _prefect_version(report: Report) -> str:
    if report.prefect_exit_code != 0:
        raise BuildError(
            f"`prefect version` exited with {report.prefect_exit_code}: "
            f"{_last_line(report.prefect_output)}"
        )
    match = _VERSION_LINE.search(report.prefect_output)
    if match:
        return match.group(1)
    # Prefect 0.x prints the bare version.
    words = report.prefect_output.split()
    if not words:
        raise BuildError("`prefect version` printed nothing")
    return words[-1]


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"

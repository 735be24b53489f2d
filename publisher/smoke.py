"""Smoke tests: run a built image and check it is the image the plan asked for.

Each check runs a real container through the image's own entrypoint (tini and
entrypoint.sh), and waits for it to finish: a test started detached can never fail.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import docker

from . import docker_client
from .errors import BuildError

# Runs inside the image with its own Python. pip vendors `packaging`, so the extra
# markers of prefect's requirements are evaluated exactly as pip evaluated them.
_EXTRAS_PROBE = r"""
import json, sys
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
for extra in sys.argv[1:]:
    names = sorted({
        r.name for r in requirements
        if r.marker is not None and r.marker.evaluate({"extra": extra})
        and not r.marker.evaluate({"extra": ""}) and r.name.lower() not in base
    })
    report[extra] = {"packages": names, "installed": [n for n in names if installed(n)]}
print(json.dumps(report))
"""

_VERSION_LINE = re.compile(r"^\s*Version:\s*(\S+)", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class SmokeResult:
    prefect_version: str
    python_version: str


def check(
    client: docker.DockerClient,
    image: str,
    *,
    python: str,
    prefect_version: str | None,
    extras_present: Sequence[str],
    extras_absent: Sequence[str],
) -> SmokeResult:
    """Raise BuildError naming the first check that fails.

    ``prefect_version`` None accepts whatever version the image reports (nightly builds
    learn their version from the build).
    """
    reported = _prefect_version(client, image)
    if prefect_version is not None and reported != prefect_version:
        raise BuildError(f"`prefect version` reports {reported}, expected {prefect_version}")

    code, output = docker_client.run(client, image, ["python", "--version"])
    actual = output.strip().removeprefix("Python ").strip()
    if code != 0 or not (actual == python or actual.startswith(python + ".")):
        raise BuildError(f"`python --version` says {output.strip()!r}, expected Python {python}")

    extras = [*extras_present, *extras_absent]
    if extras:
        code, output = docker_client.run(client, image, ["python", "-c", _EXTRAS_PROBE, *extras])
        if code != 0:
            raise BuildError(f"extras check failed to run: {_last_line(output)}")
        report = json.loads(output.strip().splitlines()[-1])
        for extra in extras_present:
            packages, present = report[extra]["packages"], report[extra]["installed"]
            if not packages:
                raise BuildError(f"prefect declares no packages for extra {extra!r}")
            missing = sorted(set(packages) - set(present))
            if missing:
                raise BuildError(f"extra {extra!r} is missing {', '.join(missing)}")
        for extra in extras_absent:
            present = report[extra]["installed"]
            if present:
                raise BuildError(
                    f"a core image must not carry extra {extra!r}, but has {', '.join(present)}"
                )
    return SmokeResult(prefect_version=reported, python_version=actual)


def _prefect_version(client: docker.DockerClient, image: str) -> str:
    code, output = docker_client.run(client, image, ["prefect", "version"])
    if code != 0:
        raise BuildError(f"`prefect version` exited with {code}: {_last_line(output)}")
    match = _VERSION_LINE.search(output)
    if match:
        return match.group(1)
    # Prefect 0.x prints the bare version.
    words = output.split()
    if not words:
        raise BuildError("`prefect version` printed nothing")
    return words[-1]


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"

"""The physical limit of a cold publish: the work no publishing tool can avoid.

  installs  every distinct environment of the plan installed once: for each (version,
            Python, base, package) the package's closure, then each variant's extras on
            top, with `pip install` from wheels already on disk (no index, no download),
            as many environments at once as there are cores, timed as a whole;
  upload    the compressed bytes of the release sent once, at the bandwidth measured by
            uploading one incompressible blob to a registry of the same kind.

    limit = installs (wall clock) + bytes / bandwidth

It leaves out what a careful tool still has to do (resolve, commit layers, compress them,
run a smoke test), so no real run reaches it; the bench reports how far the publisher is.

With checks, the same installs are measured again with the smoke probes the publisher
runs (`publisher.smoke`), in the same containers: one probe per image, after its packages
are installed, and `prefect server start` once per environment, as the publisher starts it
once per core. That is the floor for a tool that checks what this one checks:

    limit with checks = installs and probes (wall clock) + bytes / bandwidth
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.models.containers import Container

from publisher import smoke
from publisher.build import serves_ui
from publisher.matrix import load
from publisher.plan import Image, plan
from tests.registry_server import run_registry
from tests.tiny_image import push_blob

BLOB_BYTES = 64 * 1024 * 1024
# From the wheels on disk only: nothing is resolved against an index or downloaded.
PIP_INSTALL = ("pip", "install", "--quiet", "--no-index", "--no-cache-dir", "--find-links=/wheels")


@dataclass(frozen=True, kw_only=True)
class Limit:
    environments: int
    install_seconds: float
    bandwidth: float  # bytes per second
    upload_bytes: int
    # The installs again, each image probed as the publisher probes it.
    checked_seconds: float
    probes: int
    ui_probes: int

    @property
    def upload_seconds(self) -> float:
        return self.upload_bytes / self.bandwidth

    @property
    def seconds(self) -> float:
        return self.install_seconds + self.upload_seconds

    @property
    def seconds_with_checks(self) -> float:
        return self.checked_seconds + self.upload_seconds


def environments(matrix_path: Path) -> dict[tuple[str, str, str, str], list[Image]]:
    """The plan's images by the environment their core shares."""
    found: dict[tuple[str, str, str, str], list[Image]] = {}
    for image in plan(load(matrix_path)).images:
        key = (image.prefect_version, image.python_version, image.base_image, image.package)
        found.setdefault(key, []).append(image)
    return found


def probes(images: list[Image]) -> list[tuple[Image, str]]:
    """The images of one environment in the order they are installed (the core first,
    then each set of extras on top), each with the UI check the publisher gives it."""
    ordered = sorted(images, key=lambda image: bool(image.extras))
    return [
        (image, smoke.UI_IF_PRESENT if serves_ui(image, images) else smoke.UI_SKIP)
        for image in ordered
    ]


def install_once(
    client: docker.DockerClient, wheelhouse: Path, images: list[Image], *, check: bool = False
) -> None:
    """The package's closure, then each variant's extras, into one throwaway container;
    with ``check``, each image's smoke probe after its packages are in."""
    first = images[0]
    container = client.containers.run(
        first.base_image,
        ["sleep", "infinity"],
        detach=True,
        volumes={str(wheelhouse): {"bind": "/wheels", "mode": "ro"}},
        network_mode="none",
        environment={"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"},
    )
    try:
        _run(container, [*PIP_INSTALL, f"{first.package}=={first.prefect_version}"])
        for image, ui in probes(images):
            if image.extras:
                extras = ",".join(image.extras)
                _run(
                    container, [*PIP_INSTALL, f"{image.package}[{extras}]=={image.prefect_version}"]
                )
            if check:
                command = smoke.probe_command(ui, image.package, image.extras, ())
                code, output = container.exec_run(command)
                report = smoke.parse_report(code, output.decode("utf-8", "replace"))
                if ui != smoke.UI_SKIP:
                    # The probe is only a floor if the server it starts really answered.
                    smoke.verify_ui(report, smoke.UI_REQUIRED)
    finally:
        container.remove(force=True)


def _run(container: Container, command: list[str]) -> None:
    code, output = container.exec_run(command)
    if code != 0:
        tail = output.decode("utf-8", "replace").strip().splitlines()[-1:]
        raise RuntimeError(f"{' '.join(command)} exited with {code}: {tail}")


def registry_bandwidth() -> float:
    """Bytes per second of one blob upload to a fresh local registry."""
    data = os.urandom(BLOB_BYTES)
    with tempfile.TemporaryDirectory() as tmp, run_registry(Path(tmp)) as host:
        started = time.monotonic()
        push_blob(host, "limit/blob", data)
        return len(data) / (time.monotonic() - started)


def measure(matrix_path: Path, wheelhouse: Path, upload_bytes: int) -> Limit:
    client = docker.from_env(timeout=900)
    groups = list(environments(matrix_path).values())

    def timed(check: bool) -> float:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(
                pool.map(
                    lambda images: install_once(client, wheelhouse, images, check=check), groups
                )
            )
        return time.monotonic() - started

    planned = [ui for images in groups for _, ui in probes(images)]
    return Limit(
        environments=len(groups),
        install_seconds=timed(check=False),
        bandwidth=registry_bandwidth(),
        upload_bytes=upload_bytes,
        checked_seconds=timed(check=True),
        probes=len(planned),
        ui_probes=sum(ui != smoke.UI_SKIP for ui in planned),
    )

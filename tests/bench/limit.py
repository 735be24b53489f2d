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
"""

from __future__ import annotations

import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import docker

from publisher.matrix import load
from publisher.plan import Image, plan
from tests.registry_server import run_registry
from tests.tiny_image import push_blob

BLOB_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class Limit:
    environments: int
    install_seconds: float
    bandwidth: float  # bytes per second
    upload_bytes: int

    @property
    def upload_seconds(self) -> float:
        return self.upload_bytes / self.bandwidth

    @property
    def seconds(self) -> float:
        return self.install_seconds + self.upload_seconds


def environments(matrix_path: Path) -> dict[tuple[str, str, str, str], list[Image]]:
    """The plan's images by the environment their core shares."""
    found: dict[tuple[str, str, str, str], list[Image]] = {}
    for image in plan(load(matrix_path)).images:
        key = (image.prefect_version, image.python_version, image.base_image, image.package)
        found.setdefault(key, []).append(image)
    return found


def install_once(client: docker.DockerClient, wheelhouse: Path, images: list[Image]) -> None:
    """The package's closure, then each variant's extras, into one throwaway container."""
    first = images[0]
    commands = [f"{first.package}=={first.prefect_version}"]
    commands += [
        f"{first.package}[{','.join(i.extras)}]=={first.prefect_version}"
        for i in images
        if i.extras
    ]
    script = " && ".join(
        f"pip install --quiet --no-index --no-cache-dir --find-links /wheels '{req}'"
        for req in commands
    )
    client.containers.run(
        first.base_image,
        ["sh", "-c", script],
        volumes={str(wheelhouse): {"bind": "/wheels", "mode": "ro"}},
        network_mode="none",
        remove=True,
        environment={"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"},
    )


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
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(lambda images: install_once(client, wheelhouse, images), groups))
    install = time.monotonic() - started
    return Limit(
        environments=len(groups),
        install_seconds=install,
        bandwidth=registry_bandwidth(),
        upload_bytes=upload_bytes,
    )

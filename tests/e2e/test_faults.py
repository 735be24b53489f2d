"""Publishing through a proxy that spoils one kind of registry request per case.

Whatever the fault, a run either finishes with every planned tag in the registry, or
stops with exit code 4 and one `publisher: error:` line; and in both cases no rolling
tag names an image whose manifest or any blob is missing. The registry is checked
directly, not through the proxy.

Only manifest requests are spoiled: the publisher's own client makes those (the
daemon, which pushes through the proxy too, mostly moves blobs), so each case hits the
same request every run.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from publisher.matrix import load
from publisher.plan import Plan, plan
from publisher.registry import TIMEOUT_ENV, RegistryClient
from publisher.upload import UPLOAD_TAG
from tests.fault_proxy import Fault, FaultProxy, Kind

from .conftest import Services, run_publisher, write_matrix

# The client's timeout inside the publisher during these runs; SLOW faults outlast it.
TIMEOUT = 5.0
MANIFEST_OF = r"/manifests/[^/]+$"


@pytest.fixture(scope="module")
def proxy(services: Services) -> Iterator[FaultProxy]:
    with FaultProxy(services.registry) as fault_proxy:
        yield fault_proxy


@pytest.fixture(scope="module")
def selected(services: Services, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Plan]:
    """Core and full of the newer release on the default Python: every rolling tag kind."""
    matrix = write_matrix(tmp_path_factory.mktemp("faults"), services)
    pattern = f"*-{services.versions[1]}-py3.13"
    return matrix, plan(load(matrix)).select([pattern])


def publish_through(
    proxy: FaultProxy, services: Services, selected: tuple[Path, Plan]
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """Publish the selection into a fresh namespace through the proxy; return the namespace."""
    matrix, chosen = selected
    namespace = f"faults-{uuid.uuid4().hex[:12]}"
    selection = [arg for image in chosen.images for arg in ("--select", image.id)]
    result = run_publisher(
        "publish",
        "--matrix",
        matrix,
        "--registry",
        f"{proxy.address}/{namespace}",
        *selection,
        env={"PIP_INDEX_URL": services.index, TIMEOUT_ENV: str(TIMEOUT)},
    )
    return namespace, result


@pytest.fixture(scope="module")
def baseline(proxy: FaultProxy, services: Services, selected: tuple[Path, Plan]) -> str:
    """A clean run through the proxy first: it builds (or finds) the images, and shows the
    daemon which blobs the registry holds, so each case below only mounts and copies."""
    namespace, result = publish_through(proxy, services, selected)
    assert result.returncode == 0, f"publish failed:\n{result.stdout}\n{result.stderr}"
    return namespace


CASES = [
    pytest.param(
        Fault(
            method="HEAD",
            path=MANIFEST_OF,
            kind=Kind.STATUS,
            status=429,
            retry_after="1",
            times=2,
        ),
        0,
        id="429-on-manifest-head",
    ),
    pytest.param(
        Fault(method="GET", path=MANIFEST_OF, kind=Kind.STATUS, status=503, times=2),
        0,
        id="503-on-manifest-get",
    ),
    pytest.param(
        Fault(method="GET", path=MANIFEST_OF, kind=Kind.STATUS, status=503, times=99),
        4,
        id="503-on-every-manifest-get",
    ),
    pytest.param(
        Fault(method="PUT", path=r"/manifests/latest$", kind=Kind.RESET),
        0,
        id="reset-before-rolling-put",
    ),
    pytest.param(
        Fault(method="PUT", path=r"/manifests/core$", kind=Kind.FORWARD_RESET),
        0,
        id="reset-after-rolling-put",
    ),
    pytest.param(
        Fault(method="PUT", path=r"/manifests/latest$", kind=Kind.SLOW, delay=TIMEOUT + 3),
        4,
        id="slow-rolling-put",
    ),
]


@pytest.mark.parametrize(("fault", "expected_exit"), CASES)
def test_publish_survives_or_stops_cleanly(
    proxy: FaultProxy,
    services: Services,
    selected: tuple[Path, Plan],
    baseline: str,
    fault: Fault,
    expected_exit: int,
) -> None:
    proxy.clear()
    proxy.inject(fault)

    namespace, result = publish_through(proxy, services, selected)

    output = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert proxy.injected(), f"the fault never fired:\n{output}"
    assert result.returncode in (0, 4), output
    repo = f"{namespace}/prefect"
    _, chosen = selected
    with RegistryClient(services.registry) as registry:
        if result.returncode == 0:
            planned = {tag.name for image in chosen.images for tag in image.tags}
            assert set(registry.tags(repo)) == planned | {UPLOAD_TAG}
        else:
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith("publisher: error: "), output
            assert "Traceback" not in result.stderr
        rolling = [tag for image in chosen.images for tag in image.rolling_tags]
        assert rolling
        for tag in rolling:
            _assert_wholly_present(registry, repo, tag)
    # Each case hits its fault the same way every run.
    assert result.returncode == expected_exit, output


def _assert_wholly_present(registry: RegistryClient, repo: str, tag: str) -> None:
    """A rolling tag may be absent, but never name a manifest or blob the registry lacks."""
    digest = registry.digest(repo, tag)
    if digest is None:
        return
    document = json.loads(registry.manifest(repo, digest).raw)
    blobs = [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]
    missing = [blob for blob in blobs if not registry.blob_exists(repo, blob)]
    assert not missing, f"{repo}:{tag} ({digest}) names blobs the registry lacks: {missing}"

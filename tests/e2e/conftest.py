"""End-to-end fixtures: a real dockerd, a real registry and a real package index.

`.ci/bootstrap up` (root) installs and starts dockerd and builds the base images, and
describes them in bootstrap.json; the `services` fixture reads it, fills the wheelhouse
once and starts a registry and a package index of this session's own (tests/services.py).
Without the bootstrap the e2e tests are skipped, unless PUBLISHER_E2E=1 (set by CI), in
which case that is a failure: CI must never pass by skipping the real thing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import docker
import pytest
import yaml

from publisher.matrix import load
from publisher.plan import Plan, plan
from publisher.registry import RegistryClient
from publisher.staging import is_staging
from tests.base_index import BaseIndex, push_base_index
from tests.registry_server import run_registry
from tests.services import (
    PREFECT_VERSIONS,
    Bootstrap,
    bootstrap_wheelhouse,
    locked,
    package_index,
    sdist,
    tools_python,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_MATRIX = Path(__file__).with_name("matrix.yaml")
# Everything the publisher resolves carries these credentials; no image may keep them.
SECRET = "s3cret"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)


@dataclass(frozen=True, kw_only=True)
class Services:
    registry: str  # HOST:PORT
    index: str  # http://127.0.0.1:PORT/simple/
    base_image: str  # template with {python}
    versions: tuple[str, str]  # (older, newer) real Prefect 3 releases on the index
    pythons: tuple[str, ...]
    sdist: Path
    state: Path
    docker_host: str  # the daemon every test uses (DOCKER_HOST)
    # Platform -> local base image template ({python}), and the Pythons built for all of them.
    platform_images: Mapping[str, str] = field(default_factory=dict)
    multi_platform_pythons: tuple[str, ...] = ()
    second_docker_host: str | None = None  # another daemon, with the amd64 bases only

    def index_with_secret(self) -> str:
        return self.index.replace("http://", f"http://ci:{SECRET}@", 1)


def _require(reason: str) -> NoReturn:
    if os.environ.get("PUBLISHER_E2E") == "1":
        pytest.fail(f"PUBLISHER_E2E=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _bootstrapped() -> Bootstrap:
    """What the bootstrap set up, once it is there and answers; else skip (or fail in CI)."""
    try:
        found = Bootstrap.load()
    except FileNotFoundError as exc:
        _require(f"{exc.filename} not found: run `.ci/bootstrap up` as root (or `nox -s tests`)")
    _require_daemon(found.docker_host, (found.base_image.format(python=p) for p in found.pythons))
    return found


def _require_daemon(host: str, images: Iterable[str]) -> None:
    """Skip (or fail in CI) unless the dockerd at ``host`` answers and holds ``images``."""
    try:
        with closing(docker.DockerClient(base_url=host, timeout=10)) as client:
            client.ping()
            for image in images:
                client.images.get(image)
    except docker.errors.DockerException as exc:
        _require(f"the bootstrap's dockerd at {host} or its base images are not there: {exc}")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    boot = _bootstrapped()
    work = tmp_path_factory.mktemp("services")
    with pytest.MonkeyPatch.context() as env:
        # The publisher under test, and every Docker client here, talk to the same daemon.
        env.setenv("DOCKER_HOST", boot.docker_host)
        wheelhouse = bootstrap_wheelhouse(boot)
        tools = tools_python(boot.cache_dir)
        with (
            run_registry(work / "registry") as registry,
            package_index(wheelhouse, tools, work / "index") as index,
        ):
            older, newer = PREFECT_VERSIONS
            yield Services(
                registry=registry,
                index=index,
                base_image=boot.base_image,
                versions=(older, newer),
                pythons=boot.pythons,
                sdist=sdist(wheelhouse),
                state=boot.state_dir,
                docker_host=boot.docker_host,
                platform_images=boot.platform_images,
                multi_platform_pythons=boot.multi_platform_pythons,
                second_docker_host=boot.second_docker_host,
            )


@pytest.fixture(scope="session")
def docker_client(services: Services) -> Iterator[docker.DockerClient]:
    client = docker.from_env(timeout=600)
    yield client
    client.close()


@pytest.fixture(scope="session")
def multiarch_base(services: Services, docker_client: docker.DockerClient) -> BaseIndex:
    """The bootstrap's linux/amd64 and linux/arm64 bases of the first multi-platform Python
    (3.13), pushed to the session's registry under one OCI index: the stand-in for
    ``python:3.13-slim`` on Docker Hub, at ``HOST:PORT/publisher-test/python:3.13-slim``.
    """
    if not services.multi_platform_pythons or len(services.platform_images) < 2:
        _require("the bootstrap made no multi-platform base: run `.ci/bootstrap up` again")
    python = services.multi_platform_pythons[0]
    images = {p: t.format(python=python) for p, t in sorted(services.platform_images.items())}
    try:
        for image in images.values():
            docker_client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        _require(f"a base image of the bootstrap is missing: {exc}")
    return push_base_index(docker_client, services.registry, images, tag=f"{python}-slim")


@pytest.fixture(scope="session")
def runners(services: Services) -> tuple[str, str]:
    """Two Docker daemons standing in for two CI runners, each with the amd64 base images:
    the one every test uses, and the bootstrap's second."""
    if services.second_docker_host is None:
        _require("the bootstrap started no second dockerd: run `.ci/bootstrap up` again")
    bases = [services.base_image.format(python=python) for python in services.pythons]
    _require_daemon(services.second_docker_host, bases)
    return services.docker_host, services.second_docker_host


def run_publisher(
    *args: str | Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m publisher ARGS` as a maintainer would run it."""
    return subprocess.run(
        _publisher(args),
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


def publish(
    matrix: Path, namespace: str, *args: str | Path, index: str
) -> subprocess.CompletedProcess[str]:
    """`publisher publish` of ``matrix`` to ``namespace`` (HOST:PORT/NAMESPACE), its
    packages from ``index``."""
    return run_publisher(
        "publish", "--matrix", matrix, "--registry", namespace, *args, env={"PIP_INDEX_URL": index}
    )


def start_publisher(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`python -m publisher ARGS` in the background; its stderr and stdout in one pipe."""
    return subprocess.Popen(
        _publisher(args),
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _publisher(args: Iterable[str | Path]) -> list[str]:
    return [sys.executable, "-m", "publisher", *map(str, args)]


def release_snapshot(registry: RegistryClient, repo: str) -> dict[str, str | None]:
    """tag -> digest of every tag of ``repo`` but the staging ones (the upload tag moves
    with every run that uploads anything)."""
    return {tag: registry.digest(repo, tag) for tag in registry.tags(repo) if not is_staging(tag)}


def write_matrix(directory: Path, services: Services, **changes: Any) -> Path:
    """The e2e matrix with the services' Prefect versions and base images filled in."""
    data = yaml.safe_load(E2E_MATRIX.read_text())
    data["versions"] = list(services.versions)
    data["base_image"] = services.base_image
    data["dockerfiles"] = str(REPO_ROOT / "dockerfiles")
    data.update(changes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "matrix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True, kw_only=True)
class Published:
    """The outcome of publishing the e2e matrix once, shared by the tests that inspect it."""

    matrix: Path
    plan: Plan
    namespace: str  # HOST:PORT/NAMESPACE, as given to --registry
    repo: str  # the repository path inside the registry
    result: subprocess.CompletedProcess[str]
    registry: RegistryClient

    def reference(self, tag: str) -> str:
        return f"{self.namespace.split('/', 1)[0]}/{self.repo}:{tag}"


@pytest.fixture(scope="session")
def published(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Published:
    matrix = write_matrix(tmp_path_factory.mktemp("e2e-matrix"), services)
    namespace = f"{services.registry}/e2e"
    # The index URL carries credentials, as a private mirror's would; the tests then
    # look for them in everything the images contain. Test workers (pytest -n) publish one
    # after another: the first builds the images, the next finds them on the daemon they
    # share by fingerprint and uploads them to its own registry.
    with locked(services.state / "published.lock"):
        result = publish(matrix, namespace, index=services.index_with_secret())
    assert result.returncode == 0, f"publish failed:\n{result.stdout}\n{result.stderr}"
    return Published(
        matrix=matrix,
        plan=plan(load(matrix)),
        namespace=namespace,
        repo="e2e/prefect",
        result=result,
        registry=RegistryClient(services.registry),
    )

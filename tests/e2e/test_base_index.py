"""The multi-platform base of the e2e tests (tests/base_index.py), on the real daemon and registry.

The tag is an OCI index of a linux/amd64 and a linux/arm64 image, as ``python:3.13-slim`` is on
Docker Hub; each platform's manifest, pulled or built FROM by digest, runs as its machine (the
arm64 one under QEMU).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import uuid

import docker
import pytest
import requests

from tests.base_index import MANIFEST_TYPES, OCI_INDEX, BaseIndex

pytestmark = pytest.mark.emulated

MACHINE = "import platform; print(platform.machine())"
EXPECTED = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


def _manifest(base: BaseIndex, reference: str, accept: str) -> requests.Response:
    host, repository = base.repository.split("/", 1)
    url = f"http://{host}/v2/{repository}/manifests/{reference}"
    response = requests.get(url, headers={"Accept": accept}, timeout=30)
    response.raise_for_status()
    return response


def test_the_tag_resolves_to_an_oci_index_of_both_platforms(multiarch_base: BaseIndex) -> None:
    tag = multiarch_base.reference.rsplit(":", 1)[1]
    response = _manifest(multiarch_base, tag, OCI_INDEX)
    assert response.headers["Content-Type"] == OCI_INDEX
    assert response.headers["Docker-Content-Digest"] == multiarch_base.digest
    index = response.json()
    assert index["mediaType"] == OCI_INDEX
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}": m for m in index["manifests"]
    }
    assert set(platforms) == set(EXPECTED)
    for platform, entry in platforms.items():
        assert entry["digest"] == multiarch_base.platforms[platform]
        # Each entry describes the stored manifest exactly: media type, size and digest.
        child = _manifest(multiarch_base, entry["digest"], ", ".join(MANIFEST_TYPES))
        assert child.headers["Content-Type"] == entry["mediaType"]
        assert len(child.content) == entry["size"]
        assert "sha256:" + hashlib.sha256(child.content).hexdigest() == entry["digest"]


@pytest.mark.parametrize("platform", sorted(EXPECTED))
def test_each_platform_pulled_by_digest_runs_as_its_machine(
    multiarch_base: BaseIndex, docker_client: docker.DockerClient, platform: str
) -> None:
    pinned = multiarch_base.pinned(platform)
    image = docker_client.images.pull(pinned, platform=platform)
    try:
        assert image.attrs["Architecture"] == platform.split("/")[1]
        out = docker_client.containers.run(
            pinned,
            ["python", "-c", MACHINE],
            platform=platform,
            network_mode="none",
            remove=True,
        )
        assert out.decode().strip() == EXPECTED[platform]
    finally:
        docker_client.images.remove(pinned)  # the digest reference only


def test_a_build_from_the_arm64_digest_runs_under_emulation(
    multiarch_base: BaseIndex, docker_client: docker.DockerClient
) -> None:
    dockerfile = (
        f"FROM {multiarch_base.pinned('linux/arm64')}\n"
        f"RUN python -c '{MACHINE}' > /machine && pip --version\n"
        'CMD ["cat", "/machine"]\n'
    )
    tag = f"publisher-test/base-index-check:{uuid.uuid4().hex[:12]}"
    image, _log = docker_client.images.build(
        fileobj=io.BytesIO(dockerfile.encode()),
        tag=tag,
        platform="linux/arm64",
        pull=True,
        rm=True,
        forcerm=True,
    )
    try:
        assert image.attrs["Architecture"] == "arm64"
        out = docker_client.containers.run(
            tag, platform="linux/arm64", network_mode="none", remove=True
        )
        assert out.decode().strip() == "aarch64"
    finally:
        docker_client.images.remove(tag, force=True)
        with contextlib.suppress(docker.errors.ImageNotFound):  # the digest reference only
            docker_client.images.remove(multiarch_base.pinned("linux/arm64"))

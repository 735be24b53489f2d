"""One tag, two platforms, for real: the e2e matrix's Python 3.13 images built for
linux/amd64 and linux/arm64 (under QEMU) on a base that is itself an index in the registry,
pushed as one OCI index per tag, and run on each platform."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from publisher import labels
from publisher.registry import RegistryClient
from publisher.staging import is_staging
from publisher.upload import UPLOAD_TAG
from tests.base_index import BaseIndex
from tests.services import package_index, tools_python

from .conftest import Published, Services, publish, run_publisher, write_matrix

pytestmark = pytest.mark.emulated

BOTH = ["linux/amd64", "linux/arm64"]
MACHINE = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}


@dataclass(frozen=True, kw_only=True)
class MultiPublished:
    matrix: Path
    namespace: str
    repo: str
    result: subprocess.CompletedProcess[str]
    registry: RegistryClient
    host: str

    def reference(self, tag: str) -> str:
        return f"{self.host}/{self.repo}:{tag}"


def _matrix(tmp: Path, services: Services, base: BaseIndex, **changes: object) -> Path:
    _, newer = services.versions
    return write_matrix(
        tmp,
        services,
        versions=[newer],
        base_image=base.reference.rsplit(":", 1)[0] + ":{python}-slim",
        platforms=BOTH,
        variants={
            "core": {"pythons": ["3.13"]},
            "full": {"pythons": ["3.13"], "default_python": "3.13", "extras": ["docker"]},
        },
        **changes,
    )


@pytest.fixture(scope="module")
def multi(
    services: Services, multiarch_base: BaseIndex, tmp_path_factory: pytest.TempPathFactory
) -> MultiPublished:
    matrix = _matrix(tmp_path_factory.mktemp("multi"), services, multiarch_base)
    namespace = f"{services.registry}/multi"
    result = publish(matrix, namespace, index=services.index)
    assert result.returncode == 0, f"publish failed:\n{result.stdout}\n{result.stderr}"
    return MultiPublished(
        matrix=matrix,
        namespace=namespace,
        repo="multi/prefect",
        result=result,
        registry=RegistryClient(services.registry),
        host=services.registry,
    )


def _release_tags(multi: MultiPublished) -> list[str]:
    return [t for t in multi.registry.tags(multi.repo) if not is_staging(t)]


def _layers(registry: RegistryClient, repo: str, digest: str) -> list[str]:
    manifest = json.loads(registry.manifest(repo, digest).raw)
    return [layer["digest"] for layer in manifest["layers"]]


def test_every_tag_is_an_index_of_both_platforms(multi: MultiPublished) -> None:
    tags = _release_tags(multi)
    assert set(tags) == {
        "latest",
        "latest-python3.13",
        "3.9.1",
        "3.9.1-python3.13",
        "core",
        "core-3.9.1",
    }
    for tag in tags:
        images = multi.registry.platform_images(multi.repo, tag)
        assert images is not None and list(images) == BOTH, tag
        for platform, digest in images.items():
            config = multi.registry.image_config(multi.repo, digest)
            assert f"{config['os']}/{config['architecture']}" == platform
    # The platform images are known by digest; one staging tag is all that stays.
    staged = [t for t in multi.registry.tags(multi.repo) if is_staging(t)]
    assert staged == [UPLOAD_TAG]


@pytest.mark.parametrize("platform", BOTH)
def test_each_platform_of_a_tag_runs_as_that_machine(multi: MultiPublished, platform: str) -> None:
    # The installed distribution's version: the publisher's smoke test already ran
    # `prefect version` on every platform image (about two minutes under QEMU); what this
    # adds is that pulling the tag for a platform gives that platform's image.
    probe = (
        "import importlib.metadata as m, platform;"
        " print(platform.machine(), platform.python_version(), m.version('prefect'))"
    )
    done = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--pull",
            "always",
            "--platform",
            platform,
            multi.reference("latest"),
            "python",
            "-c",
            probe,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    machine, python, prefect = done.stdout.split()[-3:]
    assert (machine, python[:5], prefect) == (MACHINE[platform], "3.13.", "3.9.1")


def test_full_shares_the_core_layers_on_each_platform(multi: MultiPublished) -> None:
    core = multi.registry.platform_images(multi.repo, "core-3.9.1") or {}
    full = multi.registry.platform_images(multi.repo, "3.9.1-python3.13") or {}
    for platform in BOTH:
        core_layers = _layers(multi.registry, multi.repo, core[platform])
        full_layers = _layers(multi.registry, multi.repo, full[platform])
        assert full_layers[: len(core_layers)] == core_layers
        assert len(full_layers) == len(core_layers) + 1
    # Each platform is built on its own base: their bottom layers differ.
    amd = _layers(multi.registry, multi.repo, core["linux/amd64"])
    arm = _layers(multi.registry, multi.repo, core["linux/arm64"])
    assert amd[0] != arm[0]


def test_the_amd64_image_is_what_the_amd64_only_build_gives(
    multi: MultiPublished, published: Published
) -> None:
    """The same base layers and the same resolved packages as the amd64-only publish of the
    same release: the index's amd64 entry is not an arm64 image, nor built on one."""
    index = multi.registry.platform_images(multi.repo, "core-3.9.1") or {}
    ours = multi.registry.image_config(multi.repo, index["linux/amd64"])
    single = published.registry.image_config(published.repo, "core-3.9.1")
    assert ours["architecture"] == single["architecture"] == "amd64"
    base_layers = ours["rootfs"]["diff_ids"][:1]
    assert single["rootfs"]["diff_ids"][:1] == base_layers
    assert ours["config"]["Labels"][labels.PACKAGES] == single["config"]["Labels"][labels.PACKAGES]
    arm = multi.registry.image_config(multi.repo, index["linux/arm64"])
    assert arm["config"]["Labels"][labels.PACKAGES] != ours["config"]["Labels"][labels.PACKAGES]


def test_republishing_builds_nothing(multi: MultiPublished, services: Services) -> None:
    before = {t: multi.registry.digest(multi.repo, t) for t in multi.registry.tags(multi.repo)}
    again = publish(multi.matrix, multi.namespace, index=services.index)
    assert again.returncode == 0, again.stderr
    # "published; not rebuilding" for each image, and no build, resolution or smoke test.
    assert again.stderr.count("published; not rebuilding") == 2, again.stderr
    assert "building (" not in again.stderr and "smoke-testing" not in again.stderr
    after = {t: multi.registry.digest(multi.repo, t) for t in multi.registry.tags(multi.repo)}
    assert after == before


def test_status_shows_each_tag_s_platforms(multi: MultiPublished) -> None:
    done = run_publisher(
        "status", "--matrix", multi.matrix, "--registry", multi.namespace, "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)["images"]
    assert {(s["state"], tuple(s["platforms"])) for s in found} == {("published", tuple(BOTH))}


@pytest.fixture(scope="module")
def amd64_only_index(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A package index of the wheelhouse without its aarch64 wheels: compiled dependencies
    then exist for amd64 only, as when a package ships no arm64 wheel."""
    wheelhouse = services.sdist.parent  # the tests' cache dir holds it
    folder = tmp_path_factory.mktemp("amd64-only")
    for path in wheelhouse.iterdir():
        if "aarch64" not in path.name:
            os.symlink(path, folder / path.name)
    tools = tools_python(wheelhouse.parent)
    with package_index(folder, tools, folder.parent / "amd64-only-index") as url:
        yield url


def test_an_arm64_failure_writes_no_tag_and_names_the_platform(
    services: Services,
    multiarch_base: BaseIndex,
    amd64_only_index: str,
    tmp_path: Path,
    docker_client: docker.DockerClient,
) -> None:
    matrix = _matrix(tmp_path, services, multiarch_base)
    namespace = f"{services.registry}/arm-fails"
    result = publish(
        matrix,
        namespace,
        "--select",
        "core-*",
        # The images built above are on this daemon and would not be resolved again.
        "--force",
        index=amd64_only_index,
    )
    assert result.returncode == 5, result.stderr
    assert "linux/arm64: " in result.stdout
    assert "nothing was released" in result.stderr
    # What passed before the failure may have been uploaded; nothing was tagged for release.
    assert set(RegistryClient(services.registry).tags("arm-fails/prefect")) <= {UPLOAD_TAG}

"""A release sharded over two CI runners, for real: each shard of `plan --format
github-matrix` is published from a Docker daemon of its own (the bootstrap's two dockerds),
both at once, into one registry, and one `publisher promote` follows.

The registry must then hold what one machine's publish holds: the `published` fixture's
images of the same release are the reference. One Prefect version keeps the test short;
its images have the same tags in both matrices (checked). The first daemon holds the
reference's builds, so its shard finds them and mostly smoke-tests and pushes; the second
daemon builds its shard from nothing but the same base images.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from publisher import labels
from publisher.matrix import load
from publisher.plan import Image, Plan, plan
from publisher.registry import RegistryClient
from tests.helpers import layer_steps

from .conftest import (
    Published,
    Services,
    release_snapshot,
    run_publisher,
    start_publisher,
    write_matrix,
)

# Set by each build: its time and, for an image built FROM a core image (full), that core's
# local image id, which its fingerprint and package record include (a core built on another
# machine has another id). What those packages are is compared by running the images.
BUILD_SPECIFIC = frozenset({labels.CREATED, labels.FINGERPRINT, labels.PACKAGES})
DISTRIBUTIONS = (
    "import importlib.metadata as m; "
    "print('\\n'.join(sorted(f'{d.metadata[\"Name\"]}=={d.version}' for d in m.distributions())))"
)


@dataclass(frozen=True, kw_only=True)
class Release:
    """One version of the e2e matrix, to publish in shards into a namespace of its own."""

    matrix: Path
    plan: Plan
    namespace: str  # HOST:PORT/NAMESPACE, as given to --registry
    repo: str
    registry: RegistryClient
    env: dict[str, str]  # for every publisher run: the session's index

    def holdings(self) -> dict[str, str]:
        return _holdings(self.registry, self.repo)


@dataclass(frozen=True, kw_only=True)
class Shard:
    """One entry of `plan --format github-matrix`, and the runner (DOCKER_HOST) it runs on."""

    name: str
    select: tuple[str, ...]
    platform: str
    docker_host: str

    def publish_args(self, release: Release) -> list[str | Path]:
        """The shard's command line, as the release workflow runs it."""
        selects = [arg for glob in self.select for arg in ("--select", glob)]
        return [
            "publish",
            *("--matrix", release.matrix, "--registry", release.namespace),
            *("--no-rolling", "--platform", self.platform, *selects),
        ]

    def env(self, release: Release, tmp_path: Path) -> dict[str, str]:
        # A temporary directory per runner: a killed run leaves its build contexts there.
        # And a cache of its own, as each CI runner has: what this machine's other runs
        # learned (smoke reports kept by image id) is not on a runner.
        tmp = tmp_path / self.name
        tmp.mkdir(exist_ok=True)
        return {
            **release.env,
            "DOCKER_HOST": self.docker_host,
            "TMPDIR": str(tmp),
            "XDG_CACHE_HOME": str(tmp / "cache"),
        }


@pytest.fixture
def release(
    runners: tuple[str, str], published: Published, services: Services, tmp_path: Path
) -> Release:
    # `runners` first: without a second daemon, skip (or fail) before publishing anything.
    _, newer = services.versions
    matrix = write_matrix(tmp_path / "matrix", services, versions=[newer])
    the_plan = plan(load(matrix))
    # The reference publish holds these very images, under these very tags.
    reference = {image.id: image.tags for image in published.plan.images}
    assert {image.id: image.tags for image in the_plan.images}.items() <= reference.items()
    name = f"shards-{uuid.uuid4().hex[:8]}"
    return Release(
        matrix=matrix,
        plan=the_plan,
        namespace=f"{services.registry}/{name}",
        repo=f"{name}/prefect",
        registry=published.registry,
        env={"PIP_INDEX_URL": services.index},
    )


@pytest.fixture
def shards(release: Release, runners: tuple[str, str]) -> tuple[Shard, Shard]:
    """The release's shards by Python, the first on the first runner, the second on the
    second: the Python 3.13 images, then 3.11's."""
    result = run_publisher(
        "plan", "--matrix", release.matrix, "--format", "github-matrix", "--shard-by", "python"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    entries = json.loads(result.stdout)["include"]
    assert [entry["name"] for entry in entries] == ["py3.13-linux-amd64", "py3.11-linux-amd64"]
    first, second = (
        Shard(
            name=entry["name"],
            select=tuple(entry["select"].split()),
            platform=entry["platform"],
            docker_host=host,
        )
        for entry, host in zip(entries, runners, strict=True)
    )
    return first, second


def _run(shard: Shard, release: Release, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_publisher(*shard.publish_args(release), env=shard.env(release, tmp_path))


def _promote(release: Release) -> subprocess.CompletedProcess[str]:
    return run_publisher(
        "promote", "--matrix", release.matrix, "--registry", release.namespace, env=release.env
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _images_of(shard: Shard, release: Release) -> list[Image]:
    return [image for image in release.plan.images if image.id in shard.select]


def _tags(images: Iterable[Image]) -> set[str]:
    return {tag.name for image in images for tag in image.tags}


def _immutable(images: Iterable[Image]) -> set[str]:
    return {tag for image in images for tag in image.immutable_tags}


def _holds(docker_host: str, reference: str) -> bool:
    """Whether the daemon at ``docker_host`` has an image named ``reference`` (a tag, or
    an image id)."""
    with closing(docker.DockerClient(base_url=docker_host, timeout=60)) as client:
        try:
            client.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
    return True


def _aliases(holdings: dict[str, str]) -> set[frozenset[str]]:
    """The tags grouped by the image they name: which tags are one image."""
    groups: dict[str, set[str]] = {}
    for tag, digest in holdings.items():
        groups.setdefault(digest, set()).add(tag)
    return {frozenset(tags) for tags in groups.values()}


def _described(
    registry: RegistryClient, repo: str, tag: str, image_ids: Mapping[str, str]
) -> dict[str, Any]:
    """What an image says of itself that does not depend on where it was built: its labels
    but the build-specific ones, and its number of layers. ``image_ids`` maps registry
    digests to the ids of the images they name."""
    config = registry.image_config(repo, tag)
    found = dict(config.get("config", {}).get("Labels") or {})
    if labels.INPUTS in found:
        # The base by identity (base_id), as the fingerprint takes it: an image built
        # earlier from the same base under another name (the session's base index, pushed
        # to a registry by the multi-platform tests) is that build, and its label keeps the
        # name it was built with. Once pushed, the base is known on the first runner by its
        # registry digest, while the second runner, whose base was loaded from a file, only
        # knows its id: the same image either way.
        inputs = json.loads(found[labels.INPUTS])
        inputs.pop("base", None)
        inputs["base_id"] = image_ids.get(inputs.get("base_id"), inputs.get("base_id"))
        found[labels.INPUTS] = json.dumps(inputs, sort_keys=True)
    return {
        "labels": {key: value for key, value in found.items() if key not in BUILD_SPECIFIC},
        "layers": len(config.get("rootfs", {}).get("diff_ids", [])),
        # The installed packages' layers are the same bytes whatever machine and run
        # installed them, so a registry is sent each of them once.
        "package layers": _added_layers(config),
    }


def _added_layers(config: Mapping[str, Any]) -> list[str]:
    """The diff IDs of the layers an image's Dockerfiles ``ADD`` (its installed packages),
    from the base up."""
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    return [
        d for step, d in zip(layer_steps(config), diff_ids, strict=True) if step.startswith("ADD ")
    ]


def _distributions(client: docker.DockerClient, reference: str) -> str:
    """The Python distributions installed in the image, pulled from the registry."""
    client.images.pull(reference)
    out = client.containers.run(
        reference, ["python", "-c", DISTRIBUTIONS], network_mode="none", remove=True
    )
    return bytes(out).decode()


def _assert_published_as_one_machine_would(release: Release, published: Published) -> None:
    """The release's tags, each naming the same image as the reference's tag of that name
    (rolling tags included), and those images alike; no tag but the planned ones."""
    holdings = release.holdings()
    assert set(holdings) == _tags(release.plan.images)
    everything = _holdings(published.registry, published.repo)
    reference = {tag: digest for tag, digest in everything.items() if tag in holdings}
    assert set(reference) == set(holdings)
    assert _aliases(holdings) == _aliases(reference)
    with closing(docker.from_env(timeout=60)) as client:
        image_ids = {
            digest.split("@", 1)[1]: str(local.id)
            for local in client.images.list()
            for digest in local.attrs.get("RepoDigests") or []
        }
    for image in release.plan.images:
        anchor = image.immutable_tags[0]
        described = _described(release.registry, release.repo, anchor, image_ids)
        assert described == _described(published.registry, published.repo, anchor, image_ids), (
            f"{image.id} differs from the one-machine publish"
        )
        # deps.tar and prefect.tar, and a full image's extras.tar
        assert len(described["package layers"]) == (2 if image.variant == "core" else 3)


def _holdings(registry: RegistryClient, repo: str) -> dict[str, str]:
    """Every tag in the repository but the staging ones, and the digest it names."""
    found = release_snapshot(registry, repo)
    return {tag: digest for tag, digest in found.items() if digest is not None}


def test_two_runners_then_promote_publish_what_one_machine_publishes(
    runners: tuple[str, str],
    release: Release,
    shards: tuple[Shard, Shard],
    published: Published,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    with ThreadPoolExecutor(max_workers=len(shards)) as pool:
        results = list(pool.map(lambda shard: _run(shard, release, tmp_path), shards))
    for shard, result in zip(shards, results, strict=True):
        output = _ok(result)
        assert "moved" not in output, f"{shard.name} moved a rolling tag:\n{output}"
        # Uploaded from its own runner: the image in the registry has the config of a
        # local image that only that runner's daemon holds.
        for image in _images_of(shard, release):
            manifest = release.registry.manifest(release.repo, image.immutable_tags[0])
            config = json.loads(manifest.raw)["config"]["digest"]
            assert [host for host in runners if _holds(host, config)] == [shard.docker_host]
    assert set(release.holdings()) == _immutable(release.plan.images)

    _ok(_promote(release))

    _assert_published_as_one_machine_would(release, published)
    # The same packages, at the same versions, as in the reference's images.
    for image in release.plan.images:
        tag = image.immutable_tags[0]
        assert _distributions(docker_client, f"{release.namespace}/prefect:{tag}") == (
            _distributions(docker_client, published.reference(tag))
        )


def _kill_at(process: subprocess.Popen[str], line: str) -> None:
    """Read the process's output until ``line`` ends a line, then kill it as a dying runner
    is (SIGKILL: it cleans nothing up)."""
    assert process.stdout is not None
    seen = []
    for text in process.stdout:
        seen.append(text)
        if text.rstrip().endswith(line):
            process.kill()
            break
    process.wait(timeout=60)
    process.stdout.close()
    output = "".join(seen)
    assert process.returncode == -signal.SIGKILL, f"it ended before {line!r}:\n{output}"


def test_promote_moves_nothing_while_a_shard_is_missing_and_completes_after_its_rerun(
    release: Release, shards: tuple[Shard, Shard], published: Published, tmp_path: Path
) -> None:
    first, second = shards
    (killed,) = _images_of(second, release)
    with ThreadPoolExecutor(max_workers=1) as pool:
        done = pool.submit(_run, first, release, tmp_path)
        process = start_publisher(*second.publish_args(release), env=second.env(release, tmp_path))
        _kill_at(process, f"{killed.id}: smoke-testing")
        _ok(done.result())
    _stop_containers(second.docker_host)
    before = release.holdings()
    assert set(before) == _immutable(_images_of(first, release))

    refused = _promote(release)

    assert refused.returncode == 7, refused.stdout + refused.stderr
    assert refused.stderr.endswith(
        f"publisher: error: 1 of {len(release.plan.images)} planned images are not ready; "
        f"nothing was written:\n  missing {killed.id}: not in the registry\n"
    ), refused.stderr
    assert release.holdings() == before, "a refused promote wrote tags"

    _ok(_run(second, release, tmp_path))
    _ok(_promote(release))
    _assert_published_as_one_machine_would(release, published)
    after = release.holdings()

    again = _ok(_promote(release))
    assert release.holdings() == after, "a second promote moved tags"
    assert "moved" not in again


def _stop_containers(docker_host: str) -> None:
    """What the killed run left running on its runner (its smoke test's Prefect server):
    a dead CI runner's machine goes with it."""
    with closing(docker.DockerClient(base_url=docker_host, timeout=60)) as client:
        for container in client.containers.list(all=True):
            container.remove(force=True)

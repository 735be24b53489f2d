"""Published releases are facts: the registry, not one checkout's matrix, decides.

Each test publishes into a namespace of its own. The images of the e2e matrix are already
built on this daemon by the `published` fixture and are found there by fingerprint, so a
publish here mostly smoke-tests and pushes; only a changed base image makes real builds.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests

from publisher import cli, labels
from publisher.matrix import load
from publisher.plan import plan

from .conftest import (
    Published,
    Services,
    publish,
    release_snapshot,
    run_publisher,
    write_matrix,
)


def _namespace(services: Services, kind: str) -> tuple[str, str]:
    name = f"{kind}-{uuid.uuid4().hex[:8]}"
    return f"{services.registry}/{name}", f"{name}/prefect"


def _publish(matrix: Path, namespace: str, services: Services, *args: str) -> Any:
    result = publish(matrix, namespace, *args, index=services.index)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _json(*args: str | Path) -> Any:
    result = run_publisher(*args, "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def own_base(docker_client: docker.DockerClient, services: Services) -> Iterator[str]:
    """A base image template of this test's own, initially the same images as the shared
    bases, so that giving it a new identity disturbs no other test."""
    name = f"publisher-test/base-{uuid.uuid4().hex[:8]}"
    for python in services.pythons:
        docker_client.images.get(services.base_image.format(python=python)).tag(
            name, f"{python}-slim"
        )
    yield f"{name}:{{python}}-slim"
    for python in services.pythons:
        with contextlib.suppress(docker.errors.APIError):
            docker_client.images.remove(f"{name}:{python}-slim", noprune=True)


def test_a_base_image_update_moves_no_released_tag_and_replace_moves_exactly_one_image(
    published: Published,
    services: Services,
    docker_client: docker.DockerClient,
    own_base: str,
    tmp_path: Path,
) -> None:
    older, newer = services.versions
    namespace, repo = _namespace(services, "base-update")
    first = write_matrix(tmp_path / "first", services, versions=[older], base_image=own_base)
    _publish(first, namespace, services)
    before = release_snapshot(published.registry, repo)

    # The 3.13 base gets a new identity, as python:3.13-slim does every few weeks.
    base313 = own_base.format(python="3.13")
    docker_client.images.build(
        # A label of its own: a builder-cached identity from an earlier run would not do.
        fileobj=io.BytesIO(f"FROM {base313}\nLABEL refreshed={uuid.uuid4()}\n".encode()),
        tag=base313,
        rm=True,
    )
    both = write_matrix(tmp_path / "both", services, versions=[older, newer], base_image=own_base)
    result = _publish(both, namespace, services)
    after = release_snapshot(published.registry, repo)
    the_plan = plan(load(both))
    for image in the_plan.images:
        if image.prefect_version == older:
            assert f"{image.id}: published; not rebuilding" in result.stderr
            for tag in image.immutable_tags:
                assert after[tag] == before[tag], f"{tag} moved"
    built = [line for line in result.stderr.splitlines() if ": building (" in line]
    assert built and all(newer in line for line in built), built

    # status names the stale images and the cause; the new ones are published.
    report = {
        row["image"]: row
        for row in _json("status", "--matrix", both, "--registry", namespace)["images"]
    }
    for image in the_plan.images:
        row = report[image.id]
        if image.prefect_version == older and image.python_version == "3.13":
            assert row["state"] == "stale", row
            assert any(f"base image {base313} changed" in c for c in row["changes"]), row
        else:
            assert row["state"] == "published", row
        assert row["digest"] == after[image.immutable_tags[0]]
        assert row["version"] == image.prefect_version

    # --replace moves exactly the named image's immutable tags, and says so.
    target = f"core-{older}-py3.13"
    result = _publish(both, namespace, services, "--replace", target)
    replaced = release_snapshot(published.registry, repo)
    old_digest = after[f"core-{older}"]
    new_digest = replaced[f"core-{older}"]
    assert new_digest != old_digest
    assert f"replaced core-{older}: {old_digest} -> {new_digest}" in result.stdout
    moved = {tag for tag in replaced if replaced[tag] != after.get(tag)}
    assert moved == {f"core-{older}"}, moved
    assert published.registry.labels(repo, f"core-{older}")[labels.REPLACES] == old_digest


def test_a_backport_keeps_the_newer_releases_rolling_tags(
    published: Published, services: Services, tmp_path: Path
) -> None:
    older, newer = services.versions
    namespace, repo = _namespace(services, "backport")
    current = write_matrix(tmp_path / "current", services, versions=[newer])
    _publish(current, namespace, services)
    before = release_snapshot(published.registry, repo)
    rolling = {t for i in plan(load(current)).images for t in i.rolling_tags}

    backport = write_matrix(tmp_path / "backport", services, versions=[older])
    # The review first: the backport's own tags are created, the rolling ones kept.
    rows = _json("diff", "--matrix", backport, "--registry", namespace)["tags"]
    actions = {row["tag"]: row["action"] for row in rows}
    for tag in rolling:
        assert actions[tag] == "keep: the registry holds a newer release", (tag, actions[tag])
    assert actions[f"{older}-python3.13"] == "create"

    result = _publish(backport, namespace, services)
    after = release_snapshot(published.registry, repo)
    for tag in rolling:
        assert after[tag] == before[tag], f"{tag} moved backwards"
    assert f"kept latest: the registry holds {newer}, newer than {older}" in result.stdout
    assert after[f"{older}-python3.13"] is not None and after[f"core-{older}"] is not None

    # Explicitly allowed (a yanked release), they move.
    _publish(backport, namespace, services, "--allow-downgrade")
    downgraded = release_snapshot(published.registry, repo)
    assert downgraded["latest"] == downgraded[f"{older}-python3.13"]
    assert downgraded["core"] == downgraded[f"core-{older}"]


def test_diff_before_and_after_a_release(
    published: Published, services: Services, tmp_path: Path
) -> None:
    namespace, _ = _namespace(services, "diff")
    matrix = write_matrix(tmp_path, services)
    before = _json("diff", "--matrix", matrix, "--registry", namespace)["tags"]
    planned = {t.name for i in plan(load(matrix)).images for t in i.tags}
    assert {row["tag"] for row in before} == planned
    assert {row["action"] for row in before} == {"create"}
    dry = run_publisher("publish", "--matrix", matrix, "--registry", namespace, "--dry-run")
    assert dry.returncode == 0 and "create" in dry.stdout, dry.stdout + dry.stderr

    _publish(matrix, namespace, services)
    after = _json("diff", "--matrix", matrix, "--registry", namespace)["tags"]
    assert {row["action"] for row in after} == {"keep"}, after


def test_republishing_makes_no_manifest_get_and_builds_nothing(
    published: Published,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[tuple[str, str]] = []
    original = requests.Session.request

    def counting(self: requests.Session, method: str, url: str, *a: Any, **kw: Any) -> Any:
        calls.append((method.upper(), url))
        return original(self, method, url, *a, **kw)

    monkeypatch.setattr(requests.Session, "request", counting)
    # Republishing needs no daemon: point DOCKER_HOST nowhere to prove it.
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/no-daemon-here.sock")
    code = cli.main(
        ["publish", "--matrix", str(published.matrix), "--registry", published.namespace]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    assert "building (" not in err and "uploading" not in err
    manifest_gets = [u for m, u in calls if m == "GET" and "/manifests/" in u]
    assert manifest_gets == []
    heads = [u for m, u in calls if m == "HEAD"]
    tags = sum(len(i.tags) for i in published.plan.images)
    assert len(heads) <= tags + len(published.plan.images), heads


def test_status_of_a_registry_without_the_release(
    published: Published, services: Services, tmp_path: Path
) -> None:
    namespace, _ = _namespace(services, "status")
    matrix = write_matrix(tmp_path, services)
    rows = _json("status", "--matrix", matrix, "--registry", namespace)["images"]
    assert {row["state"] for row in rows} == {"missing"}
    table = run_publisher("status", "--matrix", matrix, "--registry", namespace)
    assert table.returncode == 0 and "missing" in table.stdout


def test_a_new_variant_of_a_released_version_is_built_on_the_released_core(
    published: Published, services: Services, tmp_path: Path
) -> None:
    namespace, repo = _namespace(services, "on-core")
    matrix = write_matrix(tmp_path, services)
    _publish(matrix, namespace, services, "--select", "core-*")
    core_digest = published.registry.digest(repo, f"core-{services.versions[1]}")

    result = _publish(matrix, namespace, services)
    reference = f"{namespace.split('/', 1)[0]}/{repo}@{core_digest}"
    assert f"building on the released {reference}" in result.stderr

    def layers(tag: str) -> list[str]:
        manifest = json.loads(published.registry.manifest(repo, tag).raw)
        return [layer["digest"] for layer in manifest["layers"]]

    core = layers(f"core-{services.versions[1]}")
    full = layers(f"{services.versions[1]}-python3.13")
    assert full[: len(core)] == core
    assert published.registry.digest(repo, "core") == core_digest  # the core did not move

"""Multi-platform publishing against the in-memory registry and engine: each platform image
waits under a staging tag, one index per image names them all, and nothing is tagged for
release unless every platform of every image passed."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

import pytest
from fakes import FakeDaemon, FakeRegistry, digest_of
from test_publish import REPO, ROOT, by_id, matrix_of, output, release_tags, run

from publisher import publish
from publisher.build import Settings
from publisher.errors import RegistryError
from publisher.matrix import Matrix
from publisher.outcome import Status
from publisher.plan import Plan, plan
from publisher.progress import Reporter
from publisher.staging import is_staging
from publisher.upload import UPLOAD_TAG

__all__ = ["matrix_of"]  # the fixture, shared with test_publish

BOTH = ("linux/amd64", "linux/arm64")


def on(the_plan: Plan, platforms: tuple[str, ...] = BOTH) -> Plan:
    return Plan(images=tuple(dataclasses.replace(i, platforms=platforms) for i in the_plan.images))


def test_every_tag_names_an_index_of_every_platform(matrix_of: Callable[..., Matrix]) -> None:
    the_plan = on(plan(matrix_of()))
    registry = FakeRegistry()
    outcomes, _, daemon = run(matrix_of(), registry, the_plan)

    assert {o.status for o in outcomes} == {Status.PUSHED}
    state = registry.state(REPO)
    for outcome in outcomes:
        index = registry.indexes[outcome.digest]
        assert list(index) == list(BOTH)
        assert index["linux/amd64"] != index["linux/arm64"]
        for platform in BOTH:
            # The platform image is the one built for that platform, and nothing else's.
            assert index[platform] == digest_of(daemon.content[outcome.parts[platform]])
        for tag in outcome.image.tags:
            assert state[tag.name] == outcome.digest, tag.name
    # Each platform of each image built once, in a group of its own platform.
    assert sorted((g.platform, g.version, g.python) for g in daemon.groups) == sorted(
        {(p, i.prefect_version, i.python_version) for i in the_plan.images for p in BOTH}
    )
    assert daemon.pushed_tags() == [UPLOAD_TAG] * (2 * len(the_plan.images))
    assert set(state) - {t.name for i in the_plan.images for t in i.tags} == {UPLOAD_TAG}


def test_no_release_tag_is_written_before_its_index(matrix_of: Callable[..., Matrix]) -> None:
    the_plan = on(plan(matrix_of()))
    registry = FakeRegistry()
    run(matrix_of(), registry, the_plan)

    writes = registry.writes_logged()
    # Release tags are written only as an index or a copy of one, and every rolling copy
    # comes after the last index.
    assert {c.method for c in writes if not is_staging(c.ref)} == {"put_index", "copy_tag"}
    last_index = max(n for n, c in enumerate(writes) if c.method == "put_index")
    rolling = {t for i in the_plan.images for t in i.rolling_tags}
    assert min(n for n, c in enumerate(writes) if c.ref in rolling) > last_index


def test_one_platform_failing_pushes_nothing_and_names_the_platform(
    matrix_of: Callable[..., Matrix],
) -> None:
    the_plan = on(plan(matrix_of()))
    registry = FakeRegistry()
    daemon = FakeDaemon(fail={"full-3.9.1-py3.11@linux/arm64": "no wheel for aarch64"})
    outcomes, _, _ = run(matrix_of(), registry, the_plan, daemon=daemon)

    failed = by_id(outcomes)["full-3.9.1-py3.11"]
    assert failed.status is Status.FAILED
    assert "no wheel for aarch64" in failed.error
    assert {o.status for o in outcomes if o is not failed} == {Status.NOT_PUSHED}
    # Platform images that passed may have been uploaded; no tag but the staging one.
    assert {(c.method, c.ref) for c in registry.writes_logged()} <= {("put", UPLOAD_TAG)}
    assert release_tags(registry) == {}


def test_republishing_builds_nothing(matrix_of: Callable[..., Matrix]) -> None:
    the_plan = on(plan(matrix_of()))
    registry = FakeRegistry()
    run(matrix_of(), registry, the_plan)
    before = registry.state(REPO)

    outcomes, _, daemon = run(matrix_of(), registry, the_plan)

    assert {o.status for o in outcomes} == {Status.PUBLISHED}
    assert daemon.built_ids() == []
    assert registry.state(REPO) == before


def test_a_new_variant_builds_on_each_platform_of_the_published_core(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    run(matrix, registry, on(plan(matrix).select(["core-*"])))
    core_index = registry.indexes[registry.state(REPO)["core-3.9.1"]]

    outcomes, _, daemon = run(matrix, registry, on(plan(matrix).select(["full-3.9.1-py3.13"])))

    assert {g.platform: g.published_core for g in daemon.groups} == {
        platform: f"localhost:5000/ns/prefect@{core_index[platform]}" for platform in BOTH
    }
    assert {o.status for o in outcomes} == {Status.PUSHED}


def test_a_single_platform_release_is_kept_until_replaced(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    run(matrix, registry, plan(matrix))  # published for linux/amd64 only, no index
    single = release_tags(registry)
    assert not any(d in registry.indexes for d in single.values())

    outcomes, _, daemon = run(matrix, registry, on(plan(matrix)))
    assert {o.status for o in outcomes} == {Status.PUBLISHED}
    assert daemon.built_ids() == []
    assert release_tags(registry) == single

    outcomes, publication, _ = run(
        matrix, registry, on(plan(matrix)), replace=("core-3.9.1-py3.13",)
    )
    replaced = by_id(outcomes)["core-3.9.1-py3.13"]
    assert replaced.status is Status.REPLACED
    assert list(registry.indexes[replaced.digest]) == list(BOTH)
    assert registry.state(REPO)["core-3.9.1"] == replaced.digest
    assert f"replaced core-3.9.1: {single['core-3.9.1']} -> {replaced.digest}" in (
        publication.notes
    )
    # The untouched images still name what they named.
    assert {t: d for t, d in release_tags(registry).items() if "core" not in t} == {
        t: d for t, d in single.items() if "core" not in t
    }


def test_an_index_missing_a_platform_is_refused(matrix_of: Callable[..., Matrix]) -> None:
    """A registry that stores an index without one of its platforms fails the run before
    any rolling tag moves."""

    class Lossy(FakeRegistry):
        def put_index(self, repo: str, tag: str, images: object) -> str:
            listed = list(images)  # type: ignore[call-overload]
            return super().put_index(repo, tag, listed[:1])

    the_plan = on(plan(matrix_of()))
    registry = Lossy()
    with pytest.raises(RegistryError, match="lists linux/amd64, expected linux/amd64, linux/arm64"):
        run(matrix_of(), registry, the_plan)
    rolling = {t for i in the_plan.images for t in i.rolling_tags}
    assert not rolling & set(registry.state(REPO))


def test_progress_names_the_platform(matrix_of: Callable[..., Matrix]) -> None:
    the_plan = on(plan(matrix_of()).select(["core-3.9.1-*"]))
    _, publication, _ = run(matrix_of(), FakeRegistry(), the_plan)
    text = output(publication)
    assert "core-3.9.1-py3.13 linux/arm64: uploaded sha256:" in text
    assert "writing the index of linux/amd64, linux/arm64" in text


@pytest.mark.parametrize("stop_after", range(7))
def test_a_run_stopped_after_any_write_is_completed_by_the_next(
    matrix_of: Callable[..., Matrix], stop_after: int
) -> None:
    the_plan = on(plan(matrix_of()).select(["core-*"]))
    reference = FakeRegistry()
    run(matrix_of(), reference, the_plan)
    expected = release_tags(reference)
    assert reference.writes == 7  # 2 images x (2 staging pushes + 1 index) + core

    registry = FakeRegistry(fail_after_writes=stop_after)
    with pytest.raises(RegistryError, match="injected"):
        run(matrix_of(), registry, the_plan)
    for tag, digest in release_tags(registry).items():
        assert digest in registry.indexes, f"{tag} names a single platform image"
    registry.heal()
    outcomes, _, _ = run(matrix_of(), registry, the_plan)
    assert not any(o.failed for o in outcomes)
    assert release_tags(registry) == expected


def test_without_a_registry_the_first_platform_is_tagged_locally(
    matrix_of: Callable[..., Matrix],
) -> None:
    the_plan = on(plan(matrix_of()).select(["core-3.9.1-*"]))
    outcomes, publication, daemon = run(matrix_of(), None, the_plan, destination=None)

    (outcome,) = outcomes
    assert outcome.status is Status.BUILT
    assert set(outcome.parts) == set(BOTH)
    assert daemon.local_tags["prefecthq/prefect:core-3.9.1"] == outcome.parts["linux/amd64"]
    assert publication.notes == [
        "tagged its linux/amd64 image locally; all 2 platforms were built and tested "
        "(--registry publishes the index)"
    ]


def test_describe_names_each_platforms_base_and_the_index(
    matrix_of: Callable[..., Matrix],
) -> None:
    stream = io.StringIO()
    publish.describe(
        on(plan(matrix_of()).select(["core-3.9.1-*"])),
        publish.Options(build=Settings(dockerfiles=ROOT / "dockerfiles")),
        Reporter(stream=stream),
    )
    text = stream.getvalue()
    assert "FROM python:3.13-slim (its linux/arm64 image)" in text
    assert "push an index of linux/amd64, linux/arm64 as core-3.9.1" in text
    assert text.count("would build the core image") == 1

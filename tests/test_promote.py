"""Shards on several machines, then one promote: the registry ends up holding what one run
on one machine gives, and nothing is tagged for release until every platform is staged."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from fakes import FakeDaemon, FakeRegistry
from test_publish import DEST, REPO, ROOT, by_id, matrix_of, run
from test_publish_platforms import BOTH, on, release_tags

from publisher import publish
from publisher.build import Settings
from publisher.errors import SelectionError
from publisher.matrix import Matrix
from publisher.outcome import Outcome, Status
from publisher.plan import Plan, plan
from publisher.progress import Reporter
from publisher.publish import IncompleteRelease
from publisher.upload import UPLOAD_TAG

__all__ = ["matrix_of"]


def promote(
    matrix: Matrix, registry: FakeRegistry, the_plan: Plan, **options: object
) -> tuple[list[Outcome], publish.Publication]:
    daemon = FakeDaemon(registry=registry)
    publication = publish.Publication(
        matrix=matrix,
        options=publish.Options(
            build=Settings(dockerfiles=ROOT / "dockerfiles"),
            destination=DEST,
            **options,  # type: ignore[arg-type]
        ),
        reporter=Reporter(stream=io.StringIO()),
        registry=registry,
        engines=daemon.engines(),
    )
    outcomes = publication.promote(the_plan)
    assert daemon.opened == 0, "promote never needs a Docker daemon"
    return outcomes, publication


def shard(
    matrix: Matrix, registry: FakeRegistry, the_plan: Plan, platform: str, **kw: object
) -> list[Outcome]:
    outcomes, _, _ = run(matrix, registry, the_plan, platforms=(platform,), rolling=False, **kw)
    return outcomes


def test_two_platform_shards_then_promote_equal_one_run(matrix_of: Callable[..., Matrix]) -> None:
    matrix = matrix_of()
    the_plan = on(plan(matrix))
    single = FakeRegistry()
    run(matrix, single, the_plan)

    registry = FakeRegistry()
    for platform in BOTH:
        outcomes = shard(matrix, registry, the_plan, platform)
        assert {o.status for o in outcomes} == {Status.STAGED}
        assert release_tags(registry) == {}, "a shard writes no release tag"

    outcomes, _ = promote(matrix, registry, the_plan)

    assert {o.status for o in outcomes} == {Status.PUSHED}
    # The same release; what is staged differs: shards leave the record promote read.
    assert release_tags(registry) == release_tags(single)
    for outcome in outcomes:
        assert list(registry.indexes[outcome.digest]) == list(BOTH)


def test_promote_with_a_platform_missing_writes_nothing_then_completes(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    the_plan = on(plan(matrix))
    registry = FakeRegistry()
    shard(matrix, registry, the_plan, "linux/amd64")
    daemon = FakeDaemon(fail={"full-3.9.1-py3.11@linux/arm64": "no aarch64 wheel"})
    outcomes = shard(matrix, registry, the_plan, "linux/arm64", daemon=daemon)
    assert by_id(outcomes)["full-3.9.1-py3.11"].status is Status.FAILED
    before = registry.state(REPO)
    writes = registry.writes

    with pytest.raises(IncompleteRelease) as caught:
        promote(matrix, registry, the_plan)

    # The failed shard pushed nothing at all, so every image misses its arm64 image.
    message = str(caught.value)
    assert message.splitlines()[0] == (
        f"{len(the_plan.images)} of {len(the_plan.images)} planned images are not ready; "
        "nothing was written:"
    )
    assert "  missing full-3.9.1-py3.11: no linux/arm64 image staged" in message.splitlines()
    assert caught.value.exit_code == 7
    assert registry.writes == writes and registry.state(REPO) == before

    shard(matrix, registry, the_plan, "linux/arm64")  # the rerun
    outcomes, _ = promote(matrix, registry, the_plan)
    assert {o.status for o in outcomes} == {Status.PUSHED}
    assert {t for t in release_tags(registry)} == {t.name for i in the_plan.images for t in i.tags}


def test_promote_twice_writes_nothing_the_second_time(matrix_of: Callable[..., Matrix]) -> None:
    matrix = matrix_of()
    the_plan = on(plan(matrix))
    registry = FakeRegistry()
    for platform in BOTH:
        shard(matrix, registry, the_plan, platform)
    promote(matrix, registry, the_plan)
    state, writes = registry.state(REPO), registry.writes

    outcomes, _ = promote(matrix, registry, the_plan)

    assert {o.status for o in outcomes} == {Status.PUBLISHED}
    assert registry.writes == writes and registry.state(REPO) == state
    assert registry.methods("labels") == []


def test_promote_lists_at_most_twenty_missing_images() -> None:
    error = IncompleteRelease([f"img-{n}: not in the registry" for n in range(25)], total=30)
    lines = str(error).splitlines()
    assert len(lines) == 1 + 20 + 1
    assert lines[-1] == "  missing ... and 5 more"


def test_promote_keeps_rolling_tags_off_older_releases(matrix_of: Callable[..., Matrix]) -> None:
    registry = FakeRegistry()
    newer = matrix_of(versions=["3.9.1"])
    run(newer, registry, on(plan(newer)))
    latest = registry.state(REPO)["latest"]

    backport = matrix_of(versions=["3.9.0"])
    the_plan = on(plan(backport))
    for platform in BOTH:
        shard(backport, registry, the_plan, platform)
    _, publication = promote(backport, registry, the_plan)

    assert registry.state(REPO)["latest"] == latest
    assert "kept latest: the registry holds 3.9.1, newer than 3.9.0" in publication.notes


def test_single_platform_images_are_pushed_by_their_shard_and_checked_by_promote(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    the_plan = plan(matrix)  # linux/amd64 only: no index, no staging
    registry = FakeRegistry()
    with pytest.raises(IncompleteRelease, match=r"core-3\.9\.1-py3\.13: not in the registry"):
        promote(matrix, registry, the_plan)

    outcomes = shard(matrix, registry, the_plan, "linux/amd64")
    assert {o.status for o in outcomes} == {Status.PUSHED}
    planned = {t.name for i in the_plan.images for t in i.tags}
    assert set(registry.state(REPO)) - planned == {UPLOAD_TAG}, "no staging tag of its own"
    rolling = {t for i in the_plan.images for t in i.rolling_tags}
    assert not rolling & set(registry.state(REPO)), "--no-rolling"

    promote(matrix, registry, the_plan)
    assert rolling <= set(registry.state(REPO))


def test_a_shard_for_a_platform_no_image_has_is_refused(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    with pytest.raises(SelectionError, match="no selected image is planned for linux/s390x"):
        shard(matrix, FakeRegistry(), on(plan(matrix)), "linux/s390x")

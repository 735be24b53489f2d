"""Uploads overlap the builds: each image goes up under the staging tag as soon as it has
passed, the release's tags are written only once every image has, and a failure stops
the uploads."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from fakes import FakeDaemon, FakeRegistry
from test_publish import by_id, matrix_of, release_tags, run

from publisher.build import Group
from publisher.errors import RegistryError
from publisher.matrix import Matrix
from publisher.outcome import Status
from publisher.plan import plan
from publisher.upload import UPLOAD_TAG

__all__ = ["matrix_of"]


def test_an_image_is_uploaded_while_a_later_group_builds(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    uploaded = threading.Event()
    held: list[bool] = []

    def push_seen() -> None:
        if registry.methods("put"):
            uploaded.set()

    def hold_the_last_group(group: Group) -> None:
        if group.version == "3.9.1" and group.python == "3.11":
            # Built last in its lane (one lane at a time): the uploads of what was built
            # before must be under way without waiting for this build to end.
            for _ in range(500):
                push_seen()
                if uploaded.wait(0.01):
                    break
            held.append(uploaded.is_set())

    daemon = FakeDaemon(before_build=hold_the_last_group)
    outcomes, _, _ = run(matrix, registry, daemon=daemon, jobs=1)

    assert held == [True], "no upload happened while a later group waited to build"
    assert {o.status for o in outcomes} == {Status.PUSHED}


def test_a_failed_group_stops_the_uploads(matrix_of: Callable[..., Matrix]) -> None:
    matrix = matrix_of()
    # One lane, groups in plan order: fail the group built first, so that nothing has
    # passed before the failure.
    first = FakeDaemon()
    run(matrix, None, destination=None, daemon=first, jobs=1)
    failing = first.groups[0].images[0].id

    registry = FakeRegistry()
    daemon = FakeDaemon(fail={failing: "smoke test failed"})
    outcomes, _, _ = run(matrix, registry, daemon=daemon, jobs=1)

    assert by_id(outcomes)[failing].status is Status.FAILED
    assert len(daemon.groups) == len(first.groups), "every group is still built and tested"
    assert daemon.pushed_tags() == [], "nothing is uploaded once an image has failed"
    assert registry.writes_logged() == []


def test_a_failed_upload_writes_no_release_tag_and_the_rerun_completes(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    the_plan = plan(matrix)
    registry = FakeRegistry(fail_after_writes=2)
    with pytest.raises(RegistryError, match="injected failure on write 3"):
        run(matrix, registry, the_plan)
    assert release_tags(registry) == {}
    assert set(registry.state("ns/prefect")) == {UPLOAD_TAG}

    registry.heal()
    outcomes, _, _ = run(matrix, registry, the_plan)
    assert {o.status for o in outcomes} == {Status.PUSHED}
    assert set(release_tags(registry)) == {t.name for i in the_plan.images for t in i.tags}

"""Uploads overlap the builds: each image goes up under the staging tag as soon as it is
built, while it is tested, the release's tags are written only once every image has
passed, and a failure stops the uploads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from fakes import FakeDaemon, FakeRegistry
from test_publish import by_id, matrix_of, release_tags, run

from publisher.build import Built, Group
from publisher.errors import RegistryError
from publisher.matrix import Matrix
from publisher.outcome import Status
from publisher.plan import plan
from publisher.upload import UPLOAD_TAG, Uploads

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


def test_an_image_is_uploaded_while_it_is_smoke_tested(
    matrix_of: Callable[..., Matrix],
) -> None:
    registry = FakeRegistry()
    held: list[bool] = []

    def test_once_uploaded(built: Built) -> str:
        # Each smoke test ends only once its own image is in the registry: an upload
        # that waited for the test would never start, and the test would fail.
        for _ in range(500):
            if built.image.id in daemon.pushed_images:
                held.append(True)
                return ""
            time.sleep(0.01)
        return "not uploaded during its smoke test"

    daemon = FakeDaemon(during_test=test_once_uploaded)
    outcomes, _, _ = run(matrix_of(), registry, daemon=daemon)

    assert {o.status for o in outcomes} == {Status.PUSHED}, [o.error for o in outcomes]
    assert len(held) == len(outcomes)


def test_a_failed_smoke_test_stops_the_uploads_and_releases_nothing(
    matrix_of: Callable[..., Matrix], monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = matrix_of()
    # One lane, groups in plan order: fail the test of the first image built.
    groups = groups_built(matrix)
    failing_group = groups[0]
    failing = failing_group.images[0].id

    # The next group is built once the failure has stopped the uploads.
    stopped = stops_told(monkeypatch)

    def wait_for_the_failure(group: Group) -> None:
        if group != failing_group:
            assert stopped.wait(timeout=5), "the failure did not stop the uploads"

    registry = FakeRegistry()
    daemon = FakeDaemon(fail_test={failing: "smoke test failed"})
    daemon.before_build = wait_for_the_failure
    outcomes, _, _ = run(matrix, registry, daemon=daemon, jobs=1)

    assert by_id(outcomes)[failing].status is Status.FAILED
    assert len(daemon.groups) == len(groups), "every group is still built and tested"
    # Built before its test failed, the failing group's images may have been staged;
    # nothing built after the failure was uploaded, and nothing was tagged for release.
    assert daemon.pushed_images
    assert set(daemon.pushed_images) <= {image.id for image in failing_group.images}
    assert set(daemon.pushed_tags()) == {UPLOAD_TAG}
    assert release_tags(registry) == {}


def test_a_failure_stops_the_uploads_while_earlier_tests_still_run(
    matrix_of: Callable[..., Matrix], monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = matrix_of()
    groups = groups_built(matrix)
    # Two groups of one lane: the lane builds the later while the earlier is tested.
    early = groups[0]
    late = [g for g in groups if g.python == early.python][-1]
    assert late != early
    stopped = stops_told(monkeypatch)
    held: list[bool] = []

    def first_image_tested_slowly(built: Built) -> str:
        # The first image's test ends only once the later group's failure has stopped the
        # uploads: waiting for results in group order would hold the stop back 5 s. (One
        # test held: the other of the two test threads tests the later group.)
        if built.image == early.images[0]:
            held.append(stopped.wait(timeout=5))
        return ""

    daemon = FakeDaemon(
        fail_test={late.images[0].id: "smoke test failed"},
        during_test=first_image_tested_slowly,
    )
    outcomes, _, _ = run(matrix, FakeRegistry(), daemon=daemon, jobs=1)

    assert by_id(outcomes)[late.images[0].id].status is Status.FAILED
    assert held == [True], "the uploads were stopped only after an earlier test ended"


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


def groups_built(matrix: Matrix) -> list[Group]:
    """The groups of the matrix in the order one lane at a time builds them."""
    daemon = FakeDaemon()
    run(matrix, None, destination=None, daemon=daemon, jobs=1)
    return daemon.groups


def stops_told(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once the uploads are stopped."""
    stopped = threading.Event()
    stop = Uploads.stop

    def stop_and_tell(uploads: Uploads) -> None:
        stop(uploads)
        stopped.set()

    monkeypatch.setattr(Uploads, "stop", stop_and_tell)
    return stopped

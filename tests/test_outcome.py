"""outcome: the one table of allowed status changes."""

from __future__ import annotations

import pytest

from publisher.outcome import Outcome, Status
from publisher.plan import Image, Tag

IMAGE = Image(
    id="full-3.9.1-py3.13",
    repository="prefecthq/prefect",
    variant="full",
    prefect_version="3.9.1",
    python_version="3.13",
    base_image="python:3.13-slim",
    extras=("docker",),
    tags=(Tag(name="3.9.1-python3.13", rolling=False),),
)

ALLOWED = [
    (Status.PLANNED, Status.DRY_RUN),
    (Status.PLANNED, Status.PUBLISHED),
    (Status.PLANNED, Status.TESTED),
    (Status.PLANNED, Status.FAILED),
    (Status.TESTED, Status.NOT_PUSHED),
    (Status.TESTED, Status.BUILT),
    (Status.TESTED, Status.PUSHED),
    (Status.TESTED, Status.REPLACED),
    (Status.TESTED, Status.FAILED),
    (Status.TESTED, Status.STAGED),
    (Status.PLANNED, Status.STAGED),
    (Status.STAGED, Status.PUSHED),
]
PATHS = {
    Status.PLANNED: [],
    Status.TESTED: [Status.TESTED],
    Status.PUBLISHED: [Status.PUBLISHED],
    Status.DRY_RUN: [Status.DRY_RUN],
    Status.FAILED: [Status.FAILED],
    Status.NOT_PUSHED: [Status.TESTED, Status.NOT_PUSHED],
    Status.BUILT: [Status.TESTED, Status.BUILT],
    Status.PUSHED: [Status.TESTED, Status.PUSHED],
    Status.REPLACED: [Status.TESTED, Status.REPLACED],
    Status.STAGED: [Status.TESTED, Status.STAGED],
}


def outcome_in(status: Status) -> Outcome:
    outcome = Outcome(image=IMAGE)
    for step in PATHS[status]:
        outcome.advance(step)
    assert outcome.status is status
    return outcome


@pytest.mark.parametrize(("start", "end"), ALLOWED)
def test_allowed_transitions(start: Status, end: Status) -> None:
    outcome = outcome_in(start)
    outcome.advance(end, error="why" if end is Status.FAILED else "")
    assert outcome.status is end


REFUSED = [(a, b) for a in Status for b in Status if (a, b) not in ALLOWED]


@pytest.mark.parametrize(("start", "end"), REFUSED)
def test_refused_transitions(start: Status, end: Status) -> None:
    outcome = outcome_in(start)
    with pytest.raises(ValueError, match=f"cannot go from {start} to {end}"):
        outcome.advance(end)
    assert outcome.status is start


def test_never_pushed_without_being_tested() -> None:
    outcome = Outcome(image=IMAGE)
    with pytest.raises(ValueError, match=r"full-3\.9\.1-py3\.13: cannot go from planned to pushed"):
        outcome.advance(Status.PUSHED)


def test_failure_records_its_error_and_is_failed() -> None:
    outcome = outcome_in(Status.TESTED)
    assert not outcome.failed
    outcome.advance(Status.FAILED, error="push refused")
    assert outcome.failed
    assert outcome.error == "push refused"
    assert str(Status.NOT_PUSHED) == "not released"

"""changes: what a publish does to each planned tag, decided from what the registry holds."""

from __future__ import annotations

import pytest

from publisher.changes import (
    Action,
    Holdings,
    Work,
    immutable_action,
    published_digest,
    rolling_action,
    work_list,
)
from publisher.errors import SelectionError
from publisher.plan import Image, Plan, Tag

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def image(
    ident: str = "full-3.9.1-py3.13",
    *,
    version: str = "3.9.1",
    immutable: tuple[str, ...] = ("3.9.1", "3.9.1-python3.13"),
    rolling: tuple[str, ...] = ("latest",),
    nightly: bool = False,
) -> Image:
    return Image(
        id=ident,
        repository="prefecthq/prefect",
        variant=ident.split("-")[0],
        prefect_version=version,
        python_version="3.13",
        base_image="python:3.13-slim",
        extras=(),
        tags=(
            *(Tag(name=t, rolling=True) for t in rolling),
            *(Tag(name=t, rolling=False) for t in immutable),
        ),
        nightly=nightly,
    )


def holdings(**tags: str | None) -> Holdings:
    return Holdings(digests={k.replace("_", "."): v for k, v in tags.items()})


# -- published_digest and work_list ------------------------------------------------------


def test_an_image_with_no_immutable_tag_in_the_registry_is_not_published() -> None:
    assert published_digest(image(), Holdings(digests={})) is None
    # A rolling tag naming something does not make the image published.
    assert published_digest(image(), Holdings(digests={"latest": A})) is None


def test_the_first_immutable_tag_found_names_the_published_image() -> None:
    found = Holdings(digests={"3.9.1": None, "3.9.1-python3.13": B})
    assert published_digest(image(), found) == B
    both = Holdings(digests={"3.9.1": A, "3.9.1-python3.13": B})
    assert published_digest(image(), both) == A


def test_work_list_marks_what_to_build() -> None:
    old = image("full-3.9.0-py3.13", version="3.9.0", immutable=("3.9.0",), rolling=())
    new = image()
    the_plan = Plan(images=(old, new))
    work = work_list(the_plan, Holdings(digests={"3.9.0": A, "latest": A}))
    assert work == [
        Work(image=old, published=A, replace=False),
        Work(image=new, published=None, replace=False),
    ]
    assert [w.build for w in work] == [False, True]


def test_work_list_replace_rebuilds_a_published_image() -> None:
    old = image("core-3.9.0-py3.13", version="3.9.0", immutable=("core-3.9.0",), rolling=())
    other = image()
    the_plan = Plan(images=(old, other))
    found = Holdings(digests={"core-3.9.0": A, "3.9.1": B})
    work = work_list(the_plan, found, replace=("core-*",))
    assert [(w.image.id, w.published, w.replace, w.build) for w in work] == [
        ("core-3.9.0-py3.13", A, True, True),
        ("full-3.9.1-py3.13", B, False, False),
    ]


def test_a_replace_glob_matching_nothing_is_an_error() -> None:
    the_plan = Plan(images=(image(),))
    with pytest.raises(SelectionError, match="--replace 'core-\\*' matches no planned image"):
        work_list(the_plan, Holdings(digests={}), replace=("full-*", "core-*"))


# -- immutable tags ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "replace", "now", "expected"),
    [
        (None, False, None, Action.CREATE),  # a new image
        (A, False, A, Action.KEEP),  # published under this tag
        (A, False, None, Action.ADD_ALIAS),  # published, a tag rule added later
        (A, False, B, Action.KEEP_OTHER),  # the tag names another image: never clobbered
        (A, True, A, Action.REPLACE),  # --replace moves it
        (A, True, None, Action.CREATE),  # --replace, tag not there yet
    ],
)
def test_immutable_action(
    published: str | None, replace: bool, now: str | None, expected: Action
) -> None:
    work = Work(image=image(), published=published, replace=replace)
    found = Holdings(digests={"3.9.1-python3.13": now})
    assert immutable_action(work, "3.9.1-python3.13", found) is expected


# -- rolling tags ------------------------------------------------------------------------


def test_rolling_tag_absent_is_created() -> None:
    assert rolling_action(image(), now=None, now_version=None, target=A) is Action.CREATE
    assert rolling_action(image(), now=None, now_version=None, target=None) is Action.CREATE


def test_rolling_tag_already_on_the_target_is_kept() -> None:
    assert rolling_action(image(), now=A, now_version="3.9.1", target=A) is Action.KEEP


@pytest.mark.parametrize(
    ("held", "expected"),
    [
        ("3.9.0", Action.MOVE),  # older: moves forward
        ("3.9.1", Action.MOVE),  # same release, another image (a --replace)
        ("3.9.2", Action.KEEP_NEWER),  # newer: never moves backwards
        ("3.10.0rc1", Action.KEEP_NEWER),  # PEP 440 order, not string order
        ("not a version", Action.MOVE),  # unreadable counts as older
        (None, Action.MOVE),  # no version label
    ],
)
def test_rolling_tag_moves_only_forward(held: str | None, expected: Action) -> None:
    assert rolling_action(image(), now=A, now_version=held, target=B) is expected
    # Still to be built (no digest yet): the same decision.
    assert rolling_action(image(), now=A, now_version=held, target=None) is expected


def test_rolling_tag_version_compared_by_pep440_not_text() -> None:
    assert rolling_action(image(version="3.10.0"), now=A, now_version="3.9.9", target=B) is (
        Action.MOVE
    )


def test_nightly_and_allow_downgrade_are_exempt() -> None:
    nightly = image("full-nightly-py3.13", version="3.10.0.dev1", nightly=True)
    assert rolling_action(nightly, now=A, now_version="3.10.0.dev9", target=B) is Action.MOVE
    assert (
        rolling_action(image(), now=A, now_version="4.0.0", target=B, allow_downgrade=True)
        is Action.MOVE
    )
    # Exempt from no-downgrade, but a tag already right stays.
    assert rolling_action(nightly, now=A, now_version=None, target=A) is Action.KEEP


def test_action_prints_its_value() -> None:
    assert str(Action.KEEP_NEWER) == "keep: the registry holds a newer release"
    assert str(Action.ADD_ALIAS) == "add alias"
    assert holdings(x_y=C).of("x.y") == C
    assert holdings().of("anything") is None

"""review: `publisher status` and `publisher diff` against an in-memory registry."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeDaemon, FakeRegistry, digest_of

from publisher import labels, review
from publisher.build import Settings
from publisher.changes import Action, work_list
from publisher.destination import Destination
from publisher.matrix import Matrix, load
from publisher.plan import Image, Plan, plan
from publisher.progress import Reporter
from publisher.publish import Options, Publication, survey
from publisher.recipe import CORE_DOCKERFILE, ENTRYPOINT, Sources, recipe_for

ROOT = Path(__file__).resolve().parent.parent
REPO = "ns/prefect"
SOURCES = Sources.read(ROOT / "dockerfiles")
BASE_IDS = {"python:3.7-slim": "sha256:" + "7" * 64, "python:3.8-slim": "sha256:" + "8" * 64}
TAGS = [
    {"tag": "latest", "variant": "full", "python": "default", "release": "latest"},
    {"tag": "{version}-python{python}", "variant": "full"},
]


@pytest.fixture
def matrix(make_matrix: Callable[..., Path]) -> Matrix:
    return load(make_matrix(tags=TAGS))


def today(sources: Sources = SOURCES, ids: dict[str, str] = BASE_IDS) -> review.Today:
    return review.Today(
        sources=sources, base_for=lambda image: image.base_image, base_identity=ids.__getitem__
    )


def inputs_label(image: Image, ids: dict[str, str] = BASE_IDS) -> str:
    base = image.base_image
    return recipe_for(image, base=base, base_id=ids[base], sources=SOURCES).inputs.to_label()


def seed(registry: FakeRegistry, image: Image, **extra: str) -> str:
    found = {labels.VERSION: image.prefect_version, **extra}
    return registry.seed(REPO, list(image.immutable_tags), found, image.id)


def by_id(found: list[review.ImageStatus]) -> dict[str, review.ImageStatus]:
    return {s.image.id: s for s in found}


# -- status ------------------------------------------------------------------------------


def test_nothing_published_is_missing(matrix: Matrix) -> None:
    registry = FakeRegistry()
    found = review.status(registry, REPO, plan(matrix), today())
    assert {s.state for s in found} == {"missing"}
    assert all(s.digest is None and s.causes == () for s in found)
    assert registry.methods("labels") == []  # nothing to read labels of


def test_an_image_built_from_todays_inputs_is_published(matrix: Matrix) -> None:
    registry = FakeRegistry()
    the_plan = plan(matrix)
    digests = {i.id: seed(registry, i, **{labels.INPUTS: inputs_label(i)}) for i in the_plan.images}

    found = by_id(review.status(registry, REPO, the_plan, today()))

    for ident, status in found.items():
        assert status.state == "published", status.causes
        assert status.digest == digests[ident]
        assert status.version == status.image.prefect_version
        assert status.causes == ()
    # Only immutable tags are surveyed, one HEAD each; one label read per published image.
    immutable = sorted(t for i in the_plan.images for t in i.immutable_tags)
    assert sorted(c.ref for c in registry.methods("digest")) == immutable
    assert len(registry.methods("labels")) == len(the_plan.images)


def test_a_changed_base_image_makes_it_stale_and_names_the_base(matrix: Matrix) -> None:
    registry = FakeRegistry()
    the_plan = plan(matrix)
    for image in the_plan.images:
        seed(registry, image, **{labels.INPUTS: inputs_label(image)})
    newer = {**BASE_IDS, "python:3.8-slim": "sha256:" + "9" * 64}

    found = by_id(review.status(registry, REPO, the_plan, today(ids=newer)))

    stale = found["full-0.14.10-py3.8"]
    assert stale.state == "stale"
    assert stale.causes == ("base image python:3.8-slim changed (888888888888 -> 999999999999)",)
    assert found["full-0.14.10-py3.7"].state == "published"


def test_a_changed_dockerfile_makes_every_image_stale(matrix: Matrix) -> None:
    registry = FakeRegistry()
    the_plan = plan(matrix)
    for image in the_plan.images:
        seed(registry, image, **{labels.INPUTS: inputs_label(image)})
    edited = Sources(files={**SOURCES.files, ENTRYPOINT: b"#!/bin/sh\nexec true\n"})

    found = review.status(registry, REPO, the_plan, today(sources=edited))

    assert {s.state for s in found} == {"stale"}
    assert {s.causes for s in found} == {(f"{ENTRYPOINT} changed",)}
    core_edit = Sources(files={**SOURCES.files, CORE_DOCKERFILE: b"FROM scratch\n"})
    found = review.status(registry, REPO, the_plan, today(sources=core_edit))
    # A full image holds the core's files too.
    assert {s.causes for s in found} == {(f"{CORE_DOCKERFILE} changed",)}


@pytest.mark.parametrize("label", [None, "", "{not json"])
def test_an_image_without_readable_inputs_is_stale(matrix: Matrix, label: str | None) -> None:
    registry = FakeRegistry()
    the_plan = plan(matrix).select(["full-0.14.9-py3.7"])
    (image,) = the_plan.images
    seed(registry, image, **({} if label is None else {labels.INPUTS: label}))

    (status,) = review.status(registry, REPO, the_plan, today())

    assert status.state == "stale"
    assert status.causes == ("its build inputs are not recorded in its labels",)
    assert status.to_json() == {
        "image": "full-0.14.9-py3.7",
        "state": "stale",
        "digest": digest_of(image.id),
        "version": "0.14.9",
        "platforms": [],
        "planned_platforms": ["linux/amd64"],
        "changes": ["its build inputs are not recorded in its labels"],
    }


def test_an_image_recorded_under_another_inputs_format_is_stale(matrix: Matrix) -> None:
    registry = FakeRegistry()
    the_plan = plan(matrix).select(["full-0.14.9-py3.7"])
    (image,) = the_plan.images
    recorded = json.loads(inputs_label(image))
    recorded["format"] = "1"
    seed(registry, image, **{labels.INPUTS: json.dumps(recorded)})

    (status,) = review.status(registry, REPO, the_plan, today())

    assert status.state == "stale"
    assert status.causes == ("recorded by an older publisher (inputs format 1)",)
    assert status.causes == ("recorded by an older publisher (inputs format 1)",)


# -- diff --------------------------------------------------------------------------------


def diff(registry: FakeRegistry, the_plan: Plan, **kwargs: Any) -> list[review.TagChange]:
    holdings = survey(registry, REPO, [t.name for i in the_plan.images for t in i.tags])
    work = work_list(the_plan, holdings, kwargs.pop("replace", ()))
    return review.diff(registry, REPO, work, holdings, **kwargs)


def publish_all(matrix: Matrix, registry: FakeRegistry) -> None:
    daemon = FakeDaemon(registry=registry)
    Publication(
        matrix=matrix,
        options=Options(
            build=Settings(dockerfiles=ROOT / "dockerfiles"),
            destination=Destination.parse("localhost:5000/ns"),
        ),
        reporter=Reporter(stream=io.StringIO()),
        registry=registry,
        engines=daemon.engines(),
    ).run(plan(matrix))


def test_diff_before_a_publish_creates_every_tag(matrix: Matrix) -> None:
    registry = FakeRegistry()
    the_plan = plan(matrix)
    rows = diff(registry, the_plan)

    assert [(r.tag, r.action) for r in rows] == [
        (t.name, Action.CREATE)
        for i in the_plan.images
        for t in sorted(i.tags, key=lambda t: t.rolling)
    ]
    assert all(r.now is None and r.after is None for r in rows)
    table = review.diff_table_rows(rows)
    assert ("latest", "full-0.14.10-py3.7", "create", "- -> new image (0.14.10)") in table
    assert registry.writes_logged() == []


def test_diff_after_a_publish_keeps_everything(matrix: Matrix) -> None:
    registry = FakeRegistry()
    publish_all(matrix, registry)
    state = registry.state(REPO)
    registry.calls.clear()

    rows = diff(registry, plan(matrix))

    assert {r.action for r in rows} == {Action.KEEP}
    assert all(r.now == r.after == state[r.tag] for r in rows)
    assert registry.methods("labels") == []  # nothing moves: no version to read
    table = review.diff_table_rows(rows)
    short = state["latest"].removeprefix("sha256:")[:12]
    assert ("latest", "full-0.14.10-py3.7", "keep", short) in table


def test_diff_shows_a_new_release_moving_latest(
    matrix: Matrix, make_matrix: Callable[..., Path]
) -> None:
    registry = FakeRegistry()
    publish_all(matrix, registry)
    old = registry.state(REPO)["latest"]
    newer = load(make_matrix(tags=TAGS, versions=["0.14.9", "0.14.10", "0.15.0"]))

    rows = {r.tag: r for r in diff(registry, plan(newer))}

    assert rows["latest"].action is Action.MOVE
    assert rows["latest"].now == old and rows["latest"].now_version == "0.14.10"
    assert rows["latest"].after is None
    assert rows["0.15.0-python3.7"].action is Action.CREATE
    assert rows["0.14.10-python3.7"].action is Action.KEEP
    table = {row[0]: row for row in review.diff_table_rows(list(rows.values()))}
    assert table["latest"][3] == (
        f"{old.removeprefix('sha256:')[:12]} (0.14.10) -> new image (0.15.0)"
    )
    assert rows["latest"].to_json() == {
        "tag": "latest",
        "image": "full-0.15.0-py3.7",
        "action": "move",
        "now": old,
        "now_version": "0.14.10",
        "after": None,
        "after_version": "0.15.0",
        "platforms": ["linux/amd64"],
        "detail": "",
    }


def test_diff_keeps_latest_from_an_older_release(
    matrix: Matrix, make_matrix: Callable[..., Path]
) -> None:
    registry = FakeRegistry()
    publish_all(matrix, registry)
    older = load(make_matrix(tags=TAGS, versions=["0.14.8"]))

    rows = {r.tag: r for r in diff(registry, plan(older))}

    assert rows["latest"].action is Action.KEEP_NEWER
    assert rows["latest"].now_version == "0.14.10"
    downgrading = {r.tag: r for r in diff(registry, plan(older), allow_downgrade=True)}
    assert downgrading["latest"].action is Action.MOVE
    table = {row[0]: row for row in review.diff_table_rows(list(rows.values()))}
    assert table["latest"][2] == str(Action.KEEP_NEWER)
    assert table["latest"][3].endswith("(0.14.10)")


def test_diff_replace_and_stale(matrix: Matrix) -> None:
    registry = FakeRegistry()
    publish_all(matrix, registry)
    the_plan = plan(matrix)
    state = registry.state(REPO)

    rows = {r.tag: r for r in diff(registry, the_plan, replace=("full-0.14.9-*",))}
    assert rows["0.14.9-python3.7"].action is Action.REPLACE
    assert rows["0.14.9-python3.7"].after is None
    assert rows["0.14.10-python3.7"].action is Action.KEEP

    (image,) = the_plan.select(["full-0.14.10-py3.8"]).images
    stale = review.ImageStatus(
        image=image, state="stale", digest=state["0.14.10-python3.8"], causes=("a", "b")
    )
    rows = {r.tag: r for r in diff(registry, the_plan, stale={image.id: stale})}
    row = rows["0.14.10-python3.8"]
    assert (row.action, row.detail) == (Action.STALE_KEPT, "a; b")
    table = {r[0]: r for r in review.diff_table_rows(list(rows.values()))}
    short = state["0.14.10-python3.8"].removeprefix("sha256:")[:12]
    assert table["0.14.10-python3.8"][3] == f"{short}: a; b"
    assert rows["0.14.9-python3.8"].action is Action.KEEP


def test_release_diff_marks_stale_kept_images_only_when_it_can_identify_the_bases(
    matrix: Matrix,
) -> None:
    registry = FakeRegistry()
    publish_all(matrix, registry)
    the_plan = plan(matrix)
    options = Options(
        build=Settings(dockerfiles=ROOT / "dockerfiles"),
        destination=Destination.parse("localhost:5000/ns"),
        replace=("full-0.14.9-py3.7",),
    )
    # The fake daemon's images recorded no inputs, so every kept image reads as stale.
    rows = {r.tag: r for r in review.release_diff(registry, REPO, the_plan, options, today())}
    assert rows["0.14.9-python3.7"].action is Action.REPLACE
    assert rows["0.14.10-python3.8"].action is Action.STALE_KEPT
    assert rows["latest"].action is Action.KEEP  # rolling tags are never "stale"

    blind = {r.tag: r for r in review.release_diff(registry, REPO, the_plan, options, None)}
    assert blind["0.14.10-python3.8"].action is Action.KEEP
    assert blind["0.14.9-python3.7"].action is Action.REPLACE


# -- status of multi-platform images -------------------------------------------------------

BOTH = ("linux/amd64", "linux/arm64")


def pinned(base: str, platform: str, generation: int = 1) -> str:
    return f"{base.split(':')[0]}@{digest_of(f'{base} {platform} {generation}')}"


def seed_index(
    registry: FakeRegistry, image: Image, platforms: tuple[str, ...], generation: int = 1
) -> str:
    children = []
    for platform in platforms:
        base = pinned(image.base_image, platform, generation)
        inputs = recipe_for(
            image, base=base, base_id=base.split("@")[1], sources=SOURCES
        ).inputs.to_label()
        found = {labels.VERSION: image.prefect_version, labels.INPUTS: inputs}
        children.append(
            (platform, registry.seed(REPO, [], found, f"{image.id} {platform} {generation}"))
        )
    digest = registry.put_index(REPO, image.immutable_tags[0], children)
    for tag in image.immutable_tags:
        registry.tags[(REPO, tag)] = digest
    return digest


def today_pinned(generation: int = 1) -> review.Today:
    return dataclasses.replace(
        today(), pin_base=lambda base, platform: pinned(base, platform, generation)
    )


def on_both(image: Image) -> Image:
    return dataclasses.replace(image, platforms=BOTH)


def test_an_index_of_every_platform_from_todays_inputs_is_published(matrix: Matrix) -> None:
    registry = FakeRegistry()
    image = on_both(plan(matrix).select(["full-0.14.9-py3.7"]).images[0])
    digest = seed_index(registry, image, BOTH)

    (status,) = review.status(registry, REPO, Plan(images=(image,)), today_pinned())

    assert (status.state, status.digest, status.causes) == ("published", digest, ())
    assert status.platforms == BOTH
    assert status.to_json()["platforms"] == list(BOTH)


def test_a_platform_whose_base_changed_is_named(matrix: Matrix) -> None:
    registry = FakeRegistry()
    image = on_both(plan(matrix).select(["full-0.14.9-py3.7"]).images[0])
    seed_index(registry, image, BOTH)

    (status,) = review.status(registry, REPO, Plan(images=(image,)), today_pinned(2))

    assert status.state == "stale"
    assert [c.split(":")[0] for c in status.causes] == list(BOTH)
    assert all("base image" in c and "changed" in c for c in status.causes)


def test_missing_platforms_and_single_platform_releases_are_stale(matrix: Matrix) -> None:
    registry = FakeRegistry()
    first, second = (on_both(i) for i in plan(matrix).select(["full-0.14.9-py3.*"]).images[:2])
    seed_index(registry, first, ("linux/amd64",))
    seed(registry, second, **{labels.INPUTS: inputs_label(second)})

    found = by_id(review.status(registry, REPO, Plan(images=(first, second)), today_pinned()))

    assert found[first.id].causes == ("platforms linux/amd64 -> linux/amd64, linux/arm64",)
    assert found[second.id].causes == (
        "published for one platform, planned for linux/amd64, linux/arm64 "
        "(--replace rebuilds it as an index)",
    )
    assert found[second.id].platforms == ()

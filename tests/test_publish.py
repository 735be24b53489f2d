"""publish.Publication against an in-memory registry and engine: the order of the phases,
no-clobber, no-downgrade, --replace, and that a run stopped anywhere is completed by the next."""

from __future__ import annotations

import dataclasses
import io
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import Call, FakeDaemon, FakeRegistry

from publisher import publish
from publisher.build import Built, Group, Settings
from publisher.destination import Destination
from publisher.errors import MatrixError, RegistryError, SelectionError
from publisher.matrix import Matrix, load
from publisher.outcome import Outcome, Status
from publisher.plan import Plan, Revision, plan
from publisher.progress import Reporter
from publisher.registry import Credentials
from publisher.staging import is_staging
from publisher.upload import UPLOAD_TAG

ROOT = Path(__file__).resolve().parent.parent
DEST = Destination.parse("localhost:5000/ns")
REPO = "ns/prefect"  # DEST.path("prefecthq/prefect")


def release_tags(registry: FakeRegistry) -> dict[str, str]:
    """tag -> digest of every tag but the staging ones."""
    return {t: d for t, d in registry.state(REPO).items() if not is_staging(t)}


BASE: dict[str, Any] = {
    "image": "prefecthq/prefect",
    "base_image": "python:{python}-slim",
    "versions": ["3.9.0", "3.9.1"],
    "variants": {
        "core": {"pythons": ["3.13"]},
        "full": {"pythons": ["3.11", "3.13"], "default_python": "3.13", "extras": ["docker"]},
    },
    "tags": [
        {"tag": "latest", "variant": "full", "python": "default", "release": "latest"},
        {"tag": "latest-python{python}", "variant": "full", "release": "latest"},
        {"tag": "{version}", "variant": "full", "python": "default"},
        {"tag": "{version}-python{python}", "variant": "full"},
        {"tag": "core", "variant": "core", "release": "latest"},
        {"tag": "core-{version}", "variant": "core"},
    ],
}

NIGHTLY_TAGS = [
    {"tag": "master", "variant": "full", "python": "3.13", "release": "nightly"},
    {"tag": "master-{date}-{sha}", "variant": "full", "python": "3.13", "release": "nightly"},
]

# examples/prefect3.yaml's scheme, plus a `latest` that only the highest release may hold.
PREFECT3: dict[str, Any] = {
    "image": "prefecthq/prefect",
    "base_image": "python:{python}-slim",
    "versions": ["2.20.1", "3.2.1"],
    "variants": {"full": {"pythons": ["3.11", "3.12"], "default_python": "3.12", "extras": []}},
    "tags": [
        {"tag": "latest", "variant": "full", "python": "default", "release": "latest"},
        {
            "tag": "{major}-latest",
            "variant": "full",
            "python": "default",
            "release": "latest-in-major",
        },
        {"tag": "{major}-python{python}", "variant": "full", "release": "latest-in-major"},
        {
            "tag": "{major}.{minor}-python{python}",
            "variant": "full",
            "release": "latest-in-minor",
        },
        {"tag": "{version}-python{python}", "variant": "full"},
    ],
}


@pytest.fixture
def matrix_of(tmp_path: Path) -> Callable[..., Matrix]:
    """Load BASE (or ``base``) with top-level keys overridden."""
    counter = iter(range(1000))

    def make(base: dict[str, Any] = BASE, **overrides: Any) -> Matrix:
        path = tmp_path / f"matrix-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump({**base, **overrides}, sort_keys=False))
        return load(path)

    return make


def run(
    matrix: Matrix,
    registry: FakeRegistry | None,
    the_plan: Plan | None = None,
    *,
    daemon: FakeDaemon | None = None,
    destination: Destination | None = DEST,
    **options: Any,
) -> tuple[list[Outcome], publish.Publication, FakeDaemon]:
    daemon = daemon or FakeDaemon()
    daemon.registry = registry
    publication = publish.Publication(
        matrix=matrix,
        options=publish.Options(
            build=Settings(dockerfiles=ROOT / "dockerfiles"), destination=destination, **options
        ),
        reporter=Reporter(stream=io.StringIO()),
        registry=registry,
        engines=daemon.engines(),
    )
    outcomes = publication.run(the_plan or plan(matrix))
    return outcomes, publication, daemon


def by_id(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {o.image.id: o for o in outcomes}


def output(publication: publish.Publication) -> str:
    stream = publication.reporter._stream
    assert isinstance(stream, io.StringIO)
    return stream.getvalue()


# -- a first publish ---------------------------------------------------------------------


def test_first_publish_pushes_every_image_then_moves_rolling_tags(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    the_plan = plan(matrix)
    registry = FakeRegistry()
    outcomes, _, daemon = run(matrix, registry, the_plan)

    assert {o.status for o in outcomes} == {Status.PUSHED}
    assert sorted(daemon.built_ids()) == sorted(i.id for i in the_plan.images)
    state = registry.state(REPO)
    for outcome in outcomes:
        assert outcome.digest.startswith("sha256:")
        for tag in outcome.image.tags:
            assert state[tag.name] == outcome.digest, tag.name
    assert len(set(release_tags(registry).values())) == len(the_plan.images)
    # One upload per image, under the staging tag; every release tag by manifest copy.
    assert daemon.pushed_tags() == [UPLOAD_TAG] * len(the_plan.images)
    assert len(registry.methods("put")) == len(the_plan.images)
    planned = {t.name for i in the_plan.images for t in i.tags}
    assert set(state) - planned == {UPLOAD_TAG}, "one staging tag is all that stays"
    assert daemon.opened == daemon.closed > 0


def test_every_rolling_copy_comes_after_every_immutable_tag_is_read_back(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    the_plan = plan(matrix)
    registry = FakeRegistry()
    outcomes, _, _ = run(matrix, registry, the_plan)

    immutable = {t for i in the_plan.images for t in i.immutable_tags}
    rolling = {t for i in the_plan.images for t in i.rolling_tags}
    calls = registry.calls
    last_read_back = max(
        n for n, c in enumerate(calls) if c.method == "digest" and c.ref in immutable
    )
    rolling_copies = [n for n, c in enumerate(calls) if c.method == "copy_tag" and c.ref in rolling]
    assert sorted(c.ref for c in calls if c.method == "copy_tag" and c.ref in rolling) == sorted(
        rolling
    )
    assert min(rolling_copies) > last_read_back
    # Every tag written is read back; every upload is read back by its digest before
    # any tag names it.
    for n, call in enumerate(calls):
        if call.method == "copy_tag":
            assert any(c.method == "digest" and c.ref == call.ref for c in calls[n + 1 :])
    for outcome in outcomes:
        anchor = outcome.image.immutable_tags[0]
        read = next(n for n, c in enumerate(calls) if c == Call("digest", REPO, outcome.digest))
        tagged = next(n for n, c in enumerate(calls) if c == Call("copy_tag", REPO, anchor))
        assert read < tagged


def test_one_failure_releases_nothing(matrix_of: Callable[..., Matrix]) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    daemon = FakeDaemon(fail={"full-3.9.1-py3.11": "`prefect version` reports 3.9.0"})
    outcomes, _, _ = run(matrix, registry, daemon=daemon)

    statuses = {o.image.id: o.status for o in outcomes}
    assert statuses.pop("full-3.9.1-py3.11") is Status.FAILED
    assert set(statuses.values()) == {Status.NOT_PUSHED}
    assert by_id(outcomes)["full-3.9.1-py3.11"].error == "`prefect version` reports 3.9.0"
    # Images that passed before the failure may have been uploaded, never tagged.
    assert {c.ref for c in registry.writes_logged()} <= {UPLOAD_TAG}
    assert {c.method for c in registry.writes_logged()} <= {"put"}
    assert release_tags(registry) == {}
    assert set(daemon.pushed_tags()) <= {UPLOAD_TAG}


def test_tag_locally_without_a_destination(matrix_of: Callable[..., Matrix]) -> None:
    matrix = matrix_of()
    the_plan = plan(matrix)
    outcomes, _, daemon = run(matrix, None, the_plan, destination=None)

    assert {o.status for o in outcomes} == {Status.BUILT}
    tagged = [ref for method, ref in daemon.calls if method == "tag"]
    assert sorted(tagged) == sorted(t.name for i in the_plan.images for t in i.tags)
    for outcome in outcomes:
        assert daemon.local_tags[f"prefecthq/prefect:{outcome.image.tags[0].name}"] == (
            outcome.local_id
        )
    assert daemon.pushed_tags() == []


# -- republishing ------------------------------------------------------------------------


def test_republishing_builds_nothing_and_only_heads(matrix_of: Callable[..., Matrix]) -> None:
    matrix = matrix_of()
    the_plan = plan(matrix)
    registry = FakeRegistry()
    run(matrix, registry, the_plan)
    before = registry.state(REPO)
    registry.calls.clear()

    outcomes, _, daemon = run(matrix, registry, the_plan)

    assert {o.status for o in outcomes} == {Status.PUBLISHED}
    assert daemon.built_ids() == []
    assert daemon.pushed_tags() == []
    assert daemon.opened == 0  # no engine needed at all
    assert registry.methods("labels") == []
    assert registry.writes_logged() == []
    planned = {t.name for i in the_plan.images for t in i.tags}
    heads = registry.methods("digest")
    assert sorted(c.ref for c in heads) == sorted(planned)  # one HEAD per planned tag
    assert registry.state(REPO) == before
    assert by_id(outcomes)["full-3.9.1-py3.13"].digest == before["3.9.1"]


def test_a_missing_alias_is_added_by_copy(matrix_of: Callable[..., Matrix]) -> None:
    registry = FakeRegistry()
    run(matrix_of(), registry)
    before = registry.state(REPO)
    rule = {"tag": "{version}-full-python{python}", "variant": "full"}
    matrix = matrix_of(tags=[*BASE["tags"], rule])
    registry.calls.clear()

    outcomes, publication, daemon = run(matrix, registry)

    assert daemon.built_ids() == []
    assert registry.methods("put") == []
    copied = sorted(c.ref for c in registry.methods("copy_tag"))
    assert copied == sorted(
        f"{v}-full-python{p}" for v in ("3.9.0", "3.9.1") for p in ("3.11", "3.13")
    )
    after = registry.state(REPO)
    assert after["3.9.1-full-python3.11"] == before["3.9.1-python3.11"]
    assert {k: v for k, v in after.items() if k in before} == before
    assert {o.status for o in outcomes} == {Status.PUBLISHED}
    assert "added alias 3.9.0-full-python3.13" in output(publication)


def test_an_immutable_tag_naming_another_image_is_kept(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    first = registry.seed(REPO, ["3.9.1"], {"org.opencontainers.image.version": "3.9.1"}, "a")
    other = registry.seed(REPO, ["3.9.1-python3.13"], {}, "b")

    outcomes, publication, daemon = run(matrix, registry)

    assert "full-3.9.1-py3.13" not in daemon.built_ids()
    assert by_id(outcomes)["full-3.9.1-py3.13"].status is Status.PUBLISHED
    assert registry.state(REPO)["3.9.1-python3.13"] == other
    assert registry.state(REPO)["latest"] == first
    assert (
        f"kept 3.9.1-python3.13: it names {other}, another image "
        "(--replace full-3.9.1-py3.13 moves it)" in publication.notes
    )


# -- --replace ---------------------------------------------------------------------------


def test_replace_rebuilds_just_those_images_and_moves_their_tags(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    run(matrix, registry)
    before = release_tags(registry)

    outcomes, publication, daemon = run(matrix, registry, replace=("core-*",))

    assert sorted(daemon.built_ids()) == ["core-3.9.0-py3.13", "core-3.9.1-py3.13"]
    after = release_tags(registry)
    moved = {tag for tag in after if after[tag] != before[tag]}
    assert moved == {"core-3.9.0", "core-3.9.1", "core"}
    statuses = by_id(outcomes)
    for ident, old_tag in (
        ("core-3.9.0-py3.13", "core-3.9.0"),
        ("core-3.9.1-py3.13", "core-3.9.1"),
    ):
        outcome = statuses[ident]
        assert outcome.status is Status.REPLACED
        assert f"replaced {old_tag}: {before[old_tag]} -> {after[old_tag]}" in publication.notes
    assert after["core"] == after["core-3.9.1"]
    assert {o.status for o in outcomes if o.image.variant == "full"} == {Status.PUBLISHED}
    for group in daemon.groups:
        assert group.published_core is None
        assert group.replaces == {i.id: before[i.immutable_tags[0]] for i in group.images}


def test_a_replace_glob_matching_nothing_is_refused(matrix_of: Callable[..., Matrix]) -> None:
    registry = FakeRegistry()
    with pytest.raises(SelectionError, match="nope-"):
        run(matrix_of(), registry, replace=("nope-*",))
    assert registry.writes_logged() == []


def test_a_group_with_a_replace_never_builds_on_the_published_core(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    run(matrix, registry)
    before = registry.state(REPO)

    _, _, daemon = run(matrix, registry, replace=("full-3.9.1-py3.13",))

    (group,) = daemon.groups
    assert [i.id for i in group.images] == ["full-3.9.1-py3.13"]
    assert group.published_core is None  # its core is published, but not built on
    assert group.replaces == {"full-3.9.1-py3.13": before["3.9.1"]}
    after = registry.state(REPO)
    assert after["3.9.1"] != before["3.9.1"]
    assert after["core-3.9.1"] == before["core-3.9.1"]


def test_a_new_variant_builds_on_the_published_core(matrix_of: Callable[..., Matrix]) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    run(matrix, registry, plan(matrix).select(["core-*"]))
    cores = release_tags(registry)
    assert set(cores) == {"core", "core-3.9.0", "core-3.9.1"}

    outcomes, _, daemon = run(matrix, registry, plan(matrix).select(["full-*"]))

    published = {(g.version, g.python): g.published_core for g in daemon.groups}
    assert published == {
        ("3.9.0", "3.13"): f"localhost:5000/ns/prefect@{cores['core-3.9.0']}",
        ("3.9.1", "3.13"): f"localhost:5000/ns/prefect@{cores['core-3.9.1']}",
        ("3.9.0", "3.11"): None,  # no core cell on 3.11
        ("3.9.1", "3.11"): None,
    }
    assert all(not g.replaces for g in daemon.groups)
    assert {o.status for o in outcomes} == {Status.PUSHED}
    # The core's tags were surveyed (that is how it was found) but not touched.
    assert {k: v for k, v in registry.state(REPO).items() if k.startswith("core")} == cores


def test_a_new_variant_builds_only_on_a_core_of_its_own_package(
    matrix_of: Callable[..., Matrix],
) -> None:
    # A prefect-client image of the same version and Python is no core for prefect[docker].
    variants = {
        **BASE["variants"],
        "client": {"pythons": ["3.13"], "package": "prefect-client"},
    }
    tags = [*BASE["tags"], {"tag": "{version}-python{python}-client", "variant": "client"}]
    matrix = matrix_of(variants=variants, tags=tags)
    registry = FakeRegistry()
    run(matrix, registry, plan(matrix).select(["core-*", "client-*"]))
    cores = registry.state(REPO)

    _, _, daemon = run(matrix, registry, plan(matrix).select(["full-*-py3.13"]))

    published = {(g.version, g.python, g.package): g.published_core for g in daemon.groups}
    assert published == {
        ("3.9.0", "3.13", "prefect"): f"localhost:5000/ns/prefect@{cores['core-3.9.0']}",
        ("3.9.1", "3.13", "prefect"): f"localhost:5000/ns/prefect@{cores['core-3.9.1']}",
    }


# -- no-downgrade ------------------------------------------------------------------------


def test_an_older_release_does_not_take_latest(matrix_of: Callable[..., Matrix]) -> None:
    registry = FakeRegistry()
    run(matrix_of(), registry)
    before = registry.state(REPO)

    older = matrix_of(versions=["3.8.5"])
    outcomes, publication, _ = run(older, registry)

    after = registry.state(REPO)
    for tag in ("latest", "latest-python3.11", "latest-python3.13", "core"):
        assert after[tag] == before[tag], tag
    assert "kept latest: the registry holds 3.9.1, newer than 3.8.5" in publication.notes
    assert "kept core: the registry holds 3.9.1, newer than 3.8.5" in publication.notes
    for tag in ("3.8.5", "3.8.5-python3.11", "3.8.5-python3.13", "core-3.8.5"):
        assert tag in after
    assert {o.status for o in outcomes} == {Status.PUSHED}
    assert not any(o.failed for o in outcomes)


def test_allow_downgrade_moves_latest_without_reading_labels(
    matrix_of: Callable[..., Matrix],
) -> None:
    registry = FakeRegistry()
    run(matrix_of(), registry)
    registry.calls.clear()

    run(matrix_of(versions=["3.8.5"]), registry, allow_downgrade=True)

    after = registry.state(REPO)
    assert after["latest"] == after["3.8.5"]
    assert after["core"] == after["core-3.8.5"]
    assert registry.methods("labels") == []


def test_a_backport_moves_only_its_own_lines_tags(matrix_of: Callable[..., Matrix]) -> None:
    registry = FakeRegistry()
    run(matrix_of(PREFECT3), registry)
    before = release_tags(registry)
    assert before["latest"] == before["3-latest"] == before["3.2.1-python3.12"]

    outcomes, publication, _ = run(matrix_of(PREFECT3, versions=["2.20.2"]), registry)

    after = release_tags(registry)
    moved = {tag for tag in after if before.get(tag) != after[tag]}
    assert moved == {
        "2-latest",
        "2-python3.11",
        "2-python3.12",
        "2.20-python3.11",
        "2.20-python3.12",
        "2.20.2-python3.11",
        "2.20.2-python3.12",
    }
    assert after["2-latest"] == after["2.20.2-python3.12"]
    assert "kept latest: the registry holds 3.2.1, newer than 2.20.2" in publication.notes
    assert {o.status for o in outcomes} == {Status.PUSHED}


def test_nightly_rolling_tags_follow_the_ref_even_backwards(
    matrix_of: Callable[..., Matrix],
) -> None:
    matrix = matrix_of(
        tags=[*BASE["tags"], *NIGHTLY_TAGS],
        nightly={"repository": "https://github.com/PrefectHQ/prefect.git", "ref": "main"},
    )

    def nightly_plan(sha: str, date: str, version: str) -> Plan:
        images = plan(matrix, nightly=True, revision=Revision(sha=sha, date=date)).images
        return Plan(images=tuple(dataclasses.replace(i, prefect_version=version) for i in images))

    registry = FakeRegistry()
    run(matrix, registry, nightly_plan("a" * 40, "20250101", "3.10.0.dev5"))
    first = registry.state(REPO)
    assert first["master"] == first["master-20250101-aaaaaaa"]
    registry.calls.clear()

    outcomes, publication, daemon = run(
        matrix, registry, nightly_plan("b" * 40, "20250102", "3.10.0.dev1")
    )

    after = registry.state(REPO)
    assert after["master"] == after["master-20250102-bbbbbbb"] != first["master"]
    assert after["master-20250101-aaaaaaa"] == first["master"]
    assert publication.notes == []
    assert registry.methods("labels") == []
    assert all(g.published_core is None for g in daemon.groups)
    assert {o.status for o in outcomes} == {Status.PUSHED}


# -- resuming ----------------------------------------------------------------------------


def _check_rolling_safe(
    registry: FakeRegistry, the_plan: Plan, before: dict[str, str], pushed: set[str]
) -> None:
    """A rolling tag names a pushed image; one that moved, only after every immutable tag."""
    state = registry.state(REPO)
    immutable = {t for i in the_plan.images for t in i.immutable_tags}
    for image in the_plan.images:
        for tag in image.rolling_tags:
            if tag not in state:
                continue
            assert state[tag] in pushed, tag
            if state[tag] != before.get(tag):
                assert immutable <= set(state), f"{tag} moved before every immutable tag"
                assert state[tag] == state[image.immutable_tags[0]]


@pytest.mark.parametrize("start", ["empty", "older release published"])
def test_a_run_stopped_after_any_write_is_completed_by_the_next(
    matrix_of: Callable[..., Matrix], start: str
) -> None:
    if start == "empty":
        seed_matrix = None
        matrix = matrix_of()
    else:
        seed_matrix = matrix_of(versions=["3.9.0"])
        matrix = matrix_of(versions=["3.9.0", "3.9.1"])
    the_plan = plan(matrix)

    def fresh(fail_after: int | None = None) -> FakeRegistry:
        registry = FakeRegistry()
        if seed_matrix is not None:
            run(seed_matrix, registry)
        registry.fail_after_writes = None if fail_after is None else registry.writes + fail_after
        return registry

    reference = fresh()
    start_writes = reference.writes
    run(matrix, reference, the_plan)
    expected = release_tags(reference)
    writes = reference.writes - start_writes
    assert writes > len(the_plan.images)

    for k in range(writes):
        registry = fresh(k)
        before = registry.state(REPO)
        with pytest.raises(RegistryError, match="injected"):
            run(matrix, registry, the_plan)
        assert registry.writes - start_writes == k
        pushed = set(registry.manifests)
        _check_rolling_safe(registry, the_plan, before, pushed)

        registry.heal()
        outcomes, _, _ = run(matrix, registry, the_plan)
        assert not any(o.failed for o in outcomes)
        assert release_tags(registry) == expected, f"stopped after {k} writes"
        assert set(registry.state(REPO)) - set(expected) == {UPLOAD_TAG}
        _check_rolling_safe(registry, the_plan, before, set(registry.manifests))


# -- the real entry point, with fakes plugged in ------------------------------------------


def test_publish_opens_pings_and_closes_the_registry(
    matrix_of: Callable[..., Matrix], monkeypatch: pytest.MonkeyPatch
) -> None:
    matrix = matrix_of()
    registry = FakeRegistry()
    daemon = FakeDaemon(registry=registry)
    seen: dict[str, Any] = {}

    def open_registry(destination: Destination, credentials: Credentials | None) -> FakeRegistry:
        seen["open"] = (destination, credentials)
        return registry

    def docker_engine(**kwargs: Any) -> Any:
        seen["engine"] = kwargs
        return daemon.engines()()

    monkeypatch.setattr(publish, "open_registry", open_registry)
    monkeypatch.setattr(publish, "docker_engine", docker_engine)
    credentials = Credentials(username="bot", password="s3cret")
    options = publish.Options(
        build=Settings(dockerfiles=ROOT / "dockerfiles"),
        destination=DEST,
        credentials=credentials,
    )
    result = publish.publish(matrix, plan(matrix), options, Reporter(stream=io.StringIO()))

    assert {o.status for o in result.outcomes} == {Status.PUSHED}
    assert registry.pings == 1 and registry.closed
    assert seen["open"] == (DEST, credentials)
    assert seen["engine"]["auth"] == {"username": "bot", "password": "s3cret"}
    assert seen["engine"]["matrix"] is matrix
    assert result.notes == []


def test_options_auth() -> None:
    settings = Settings(dockerfiles=ROOT / "dockerfiles")
    assert publish.Options(build=settings).auth is None


def test_describe_says_what_would_happen(matrix_of: Callable[..., Matrix]) -> None:
    matrix = matrix_of()
    stream = io.StringIO()
    options = publish.Options(
        build=Settings(dockerfiles=ROOT / "dockerfiles", base_image="mirror/python:{python}"),
        destination=DEST,
    )
    publish.describe(plan(matrix).select(["*-3.9.1-py3.13"]), options, Reporter(stream=stream))
    text = stream.getvalue()
    assert "prefect 3.9.1 / Python 3.13: would resolve and build core FROM mirror/python:3.13" in (
        text
    )
    assert "core-3.9.1-py3.13: would build the core image" in text
    assert "full-3.9.1-py3.13: would build core + [docker]" in text
    assert "to localhost:5000/ns, then move latest, latest-python3.13" in text
    assert "3.9.0" not in text


def test_survey_of_nothing_asks_nothing() -> None:
    registry = FakeRegistry()
    assert publish.survey(registry, REPO, []).digests == {}
    assert registry.calls == []


def test_lanes_are_one_per_python_in_order(matrix_of: Callable[..., Matrix]) -> None:
    from publisher.build import groups_of

    groups = groups_of(plan(matrix_of()).images)
    lanes = publish._lanes(groups)
    assert [[(g.version, g.python) for g in lane] for lane in lanes] == [
        [("3.9.0", "3.13"), ("3.9.1", "3.13")],
        [("3.9.0", "3.11"), ("3.9.1", "3.11")],
    ]


def test_a_lane_builds_its_next_group_while_the_last_one_is_smoke_tested(
    matrix_of: Callable[..., Matrix],
) -> None:
    # The first group of each lane finishes its smoke tests only once the lane has started
    # its next group: a lane that waited for them would wait 5 s and fail them.
    first: dict[str, str] = {}  # Python -> the version its lane builds first
    next_started = {python: threading.Event() for python in ("3.11", "3.13")}
    waited: list[str] = []

    def before_build(group: Group) -> None:
        if first.setdefault(group.python, group.version) != group.version:
            next_started[group.python].set()

    def during_test(built: Built) -> str:
        image = built.image
        if first[image.python_version] != image.prefect_version:
            return ""
        waited.append(image.id)
        if not next_started[image.python_version].wait(timeout=5):
            return "the lane waited for this smoke test"
        return ""

    matrix = matrix_of()

    daemon = FakeDaemon(before_build=before_build, during_test=during_test)
    outcomes, _, _ = run(matrix, FakeRegistry(), daemon=daemon)
    assert waited, "no smoke test of a first group was held"
    assert {o.status for o in outcomes} == {Status.PUSHED}, [o.error for o in outcomes]


def test_each_start_names_the_next_group_of_its_lane(
    matrix_of: Callable[..., Matrix],
) -> None:
    # So that the engine prepares the next group's packages while this one builds.
    daemon = FakeDaemon()
    run(matrix_of(), FakeRegistry(), daemon=daemon)

    def key(group: Group | None) -> tuple[str, str] | None:
        return None if group is None else (group.version, group.python)

    assert sorted((key(group), key(then)) for group, then in daemon.starts) == [
        (("3.9.0", "3.11"), ("3.9.1", "3.11")),
        (("3.9.0", "3.13"), ("3.9.1", "3.13")),
        (("3.9.1", "3.11"), None),
        (("3.9.1", "3.13"), None),
    ]


def test_what_only_the_builds_need_goes_once_every_lane_has_built_not_after_the_tests(
    matrix_of: Callable[..., Matrix],
) -> None:
    built_all = threading.Event()
    calls: list[int] = []
    daemon = FakeDaemon()

    def cleared() -> None:
        # Every image of the run is built by now; none has finished its smoke test.
        calls.append(len(daemon.built_ids()))
        built_all.set()

    # Each smoke test waits for the call: made only at the end of the run, it would come
    # after the tests had given up.
    daemon.during_test = lambda built: (
        "" if built_all.wait(timeout=5) else "tested before every lane had built"
    )
    daemon.registry = FakeRegistry()
    publication = publish.Publication(
        matrix=matrix_of(),
        options=publish.Options(build=Settings(dockerfiles=ROOT / "dockerfiles"), destination=DEST),
        reporter=Reporter(stream=io.StringIO()),
        registry=daemon.registry,
        engines=daemon.engines(),
        built_all=cleared,
    )
    outcomes = publication.run(plan(matrix_of()))
    assert {o.status for o in outcomes} == {Status.PUSHED}, [o.error for o in outcomes]
    assert calls == [6]


def test_verified_refuses_a_missing_or_different_tag() -> None:
    registry = FakeRegistry()
    digest = registry.seed(REPO, ["a"], {}, "x")
    assert publish._verified(registry, REPO, "a", digest) == digest
    with pytest.raises(RegistryError, match="is not in the registry after pushing it"):
        publish._verified(registry, REPO, "b", digest)
    with pytest.raises(RegistryError, match="expected sha256:0"):
        publish._verified(registry, REPO, "a", "sha256:0")


def test_a_release_image_with_only_rolling_tags_is_refused_before_anything_runs(
    matrix_of: Callable[..., Matrix],
) -> None:
    # Its immutable tag is how a later run knows it is published and what to compare a
    # rolling tag with; without one it would be pushed straight over `core` every time.
    tags = [
        {"tag": "core", "variant": "core", "release": "latest"},
        {"tag": "{version}-python{python}", "variant": "full"},
    ]
    registry = FakeRegistry()
    with pytest.raises(MatrixError, match="gets only rolling tags"):
        run(matrix_of(versions=["3.9.2"], tags=tags), registry)
    assert registry.calls == []


# -- the fakes themselves ----------------------------------------------------------------


def test_fake_registry_behaves_like_a_registry() -> None:
    registry = FakeRegistry(fail_after_writes=2)
    pushed = registry.put(REPO, "a", {"v": "1"}, "content")
    assert registry.digest(REPO, "a") == pushed == registry.digest(REPO, pushed)
    assert registry.digest(REPO, "b") is None
    assert registry.digest("other/repo", "a") is None
    assert registry.labels(REPO, "a") == {"v": "1"}
    with pytest.raises(RegistryError):
        registry.labels(REPO, "b")
    with pytest.raises(RegistryError):
        registry.copy_tag(REPO, "sha256:missing", "c")
    assert registry.copy_tag(REPO, pushed, "c") == pushed
    with pytest.raises(RegistryError, match="injected failure on write 3"):
        registry.copy_tag(REPO, "a", "d")
    assert registry.state(REPO) == {"a": pushed, "c": pushed}
    assert [(c.method, c.ref) for c in registry.calls] == [
        ("put", "a"),
        ("digest", "a"),
        ("digest", pushed),
        ("digest", "b"),
        ("digest", "a"),
        ("labels", "a"),
        ("labels", "b"),
        ("copy_tag", "c"),
        ("copy_tag", "c"),
        ("copy_tag", "d"),
    ]


def test_fake_engine_builds_deterministically_and_fails_on_request(
    matrix_of: Callable[..., Matrix],
) -> None:
    from publisher.build import groups_of

    group = groups_of(plan(matrix_of()).images)[0]
    daemon = FakeDaemon(
        fail={group.images[1].id: "build failed"},
        fail_test={group.images[0].id: "smoke test failed"},
    )
    seen: list[Built] = []
    with daemon.engines()() as one, daemon.engines()() as two:
        first, second = one.build(group), two.build(group)
        started = [future.result() for future in one.start(group, seen.append)]
    assert first == second
    assert first[0].ok and first[1].error == "build failed"
    # A failed test comes after the build: the image was built, and told of, first.
    assert [b.image.id for b in seen] == [group.images[0].id] and seen[0].local_id
    assert started[0].error == "smoke test failed" and not started[0].local_id
    assert started[1].error == "build failed"
    assert daemon.opened == daemon.closed == 2

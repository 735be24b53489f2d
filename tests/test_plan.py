"""publisher.plan: the images the matrix gives and the tags each one gets."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from publisher.errors import MatrixError, SelectionError
from publisher.matrix import Matrix, Release, load
from publisher.plan import UNRESOLVED, Image, Plan, Revision, Tag, image_id, owners, plan
from tests.helpers import owner

FULL_PYTHONS = ("3.6", "3.7", "3.8")
SHIPPED_VERSIONS = tuple(f"0.14.{n}" for n in range(23))
HIGHEST = "0.14.22"

# The shipped alias policy for the full variant, for synthetic version lists.
RELEASE_RULES: list[dict[str, Any]] = [
    {"tag": "latest", "variant": "full", "python": "default", "release": "latest"},
    {"tag": "latest-python{python}", "variant": "full", "release": "latest"},
    {"tag": "{version}", "variant": "full", "python": "default"},
    {"tag": "{version}-python{python}", "variant": "full"},
]
FULL = {"pythons": ["3.7", "3.8"], "default_python": "3.7"}
NIGHTLY = {"repository": "https://github.com/PrefectHQ/prefect.git", "ref": "master"}


def tag_map(the_plan: Plan) -> dict[str, set[str]]:
    """image id -> its tag names."""
    return {image.id: {t.name for t in image.tags} for image in the_plan.images}


def all_tags(the_plan: Plan) -> list[str]:
    return [t.name for image in the_plan.images for t in image.tags]


def rolling(the_plan: Plan) -> dict[str, set[str]]:
    return {i.id: set(i.rolling_tags) for i in the_plan.images if i.rolling_tags}


def plan_error(path: Path, *fragments: str, **kwargs: Any) -> str:
    matrix = load(path)
    with pytest.raises(MatrixError) as info:
        plan(matrix, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


@pytest.fixture(scope="module")
def shipped(shipped_matrix_path: Path) -> Matrix:
    return load(shipped_matrix_path)


@pytest.fixture(scope="module")
def shipped_plan(shipped: Matrix) -> Plan:
    return plan(shipped)


@pytest.fixture
def synthetic(make_matrix: Callable[..., Path]) -> Callable[..., Plan]:
    """Plan the shipped full-variant policy (3.7 default, 3.8) over the given versions."""

    def build(versions: list[str], **overrides: Any) -> Plan:
        overrides.setdefault("variants", {"full": FULL})
        overrides.setdefault("tags", RELEASE_RULES)
        return plan(load(make_matrix(versions=versions, **overrides)))

    return build


# --- the shipped matrix ----------------------------------------------------------------------


def test_shipped_counts(shipped_plan: Plan) -> None:
    variants = Counter(image.variant for image in shipped_plan.images)
    assert variants == {"full": 23 * 3, "core": 23}
    assert len(shipped_plan.images) == 92
    # full: 69 {version}-python{P} + 23 {version} + latest + 3 latest-python{P};
    # core: 23 core-{version} + core.
    assert len(all_tags(shipped_plan)) == 69 + 23 + 1 + 3 + 23 + 1 == 120


def test_shipped_image_cells(shipped_plan: Plan) -> None:
    cells = {(i.variant, i.prefect_version, i.python_version) for i in shipped_plan.images}
    expected = {("full", v, p) for v in SHIPPED_VERSIONS for p in FULL_PYTHONS}
    expected |= {("core", v, "3.8") for v in SHIPPED_VERSIONS}
    assert cells == expected
    assert not any(image.nightly for image in shipped_plan.images)


def test_shipped_image_fields(shipped_plan: Plan) -> None:
    by_id = {image.id: image for image in shipped_plan.images}
    full = by_id["full-0.14.10-py3.6"]
    assert full.repository == "prefecthq/prefect"
    assert full.base_image == "python:3.6-slim"
    assert full.extras == ("all_orchestration_extras",)
    core = by_id["core-0.14.10-py3.8"]
    assert core.base_image == "python:3.8-slim"
    assert core.extras == ()


def test_docker_storage_tag_exists_for_every_full_cell(shipped: Matrix, shipped_plan: Plan) -> None:
    # Prefect's Docker storage computes prefecthq/prefect:{version}-python{P} itself.
    for version in shipped.versions:
        for python in shipped.variant("full").pythons:
            image = owner(shipped_plan, f"{version}-python{python}")
            assert image.id == f"full-{version}-py{python}"
            assert (image.prefect_version, image.python_version) == (str(version), python)
            assert f"{version}-python{python}" in image.immutable_tags


def test_default_python_gets_the_bare_version(shipped_plan: Plan) -> None:
    for version in SHIPPED_VERSIONS:
        assert owner(shipped_plan, version).id == f"full-{version}-py3.7"
        assert version in owner(shipped_plan, version).immutable_tags


def test_latest_goes_to_the_highest_stable_on_the_default_python(shipped_plan: Plan) -> None:
    assert owner(shipped_plan, "latest").id == f"full-{HIGHEST}-py3.7"
    for python in FULL_PYTHONS:
        assert owner(shipped_plan, f"latest-python{python}").id == f"full-{HIGHEST}-py{python}"


def test_core_tags(shipped_plan: Plan) -> None:
    for version in SHIPPED_VERSIONS:
        assert owner(shipped_plan, f"core-{version}").id == f"core-{version}-py3.8"
    assert owner(shipped_plan, "core").id == f"core-{HIGHEST}-py3.8"


def test_shipped_exact_tags_of_the_highest_release(shipped_plan: Plan) -> None:
    tags = tag_map(shipped_plan)
    assert tags[f"full-{HIGHEST}-py3.7"] == {
        "latest",
        "latest-python3.7",
        HIGHEST,
        f"{HIGHEST}-python3.7",
    }
    assert tags[f"full-{HIGHEST}-py3.8"] == {"latest-python3.8", f"{HIGHEST}-python3.8"}
    assert tags[f"full-{HIGHEST}-py3.6"] == {"latest-python3.6", f"{HIGHEST}-python3.6"}
    assert tags[f"core-{HIGHEST}-py3.8"] == {"core", f"core-{HIGHEST}"}
    assert tags["full-0.14.10-py3.7"] == {"0.14.10", "0.14.10-python3.7"}
    assert tags["full-0.14.10-py3.8"] == {"0.14.10-python3.8"}
    assert tags["core-0.14.10-py3.8"] == {"core-0.14.10"}


def test_shipped_rolling_tags(shipped_plan: Plan) -> None:
    assert rolling(shipped_plan) == {
        f"full-{HIGHEST}-py3.6": {"latest-python3.6"},
        f"full-{HIGHEST}-py3.7": {"latest", "latest-python3.7"},
        f"full-{HIGHEST}-py3.8": {"latest-python3.8"},
        f"core-{HIGHEST}-py3.8": {"core"},
    }


def test_every_tag_has_exactly_one_owner(shipped: Matrix, shipped_plan: Plan) -> None:
    tags = all_tags(shipped_plan) + all_tags(plan(shipped, nightly=True))
    assert [tag for tag, n in Counter(tags).items() if n > 1] == []
    for image in shipped_plan.images:
        names = [t.name for t in image.tags]
        assert len(names) == len(set(names)), image.id


def test_tags_follow_rule_order(shipped: Matrix, shipped_plan: Plan) -> None:
    image = owner(shipped_plan, "latest")
    assert [t.name for t in image.tags] == [
        "latest",
        "latest-python3.7",
        HIGHEST,
        f"{HIGHEST}-python3.7",
    ]
    for tag in image.tags:
        assert shipped.tags[tag.rule].release in (Release.LATEST, Release.EVERY)
    assert [t.rule for t in image.tags] == [0, 3, 4, 5]


def test_shipped_nightly_plan(shipped: Matrix) -> None:
    nightly = plan(shipped, nightly=True)
    (image,) = nightly.images
    assert image.id == "full-nightly-py3.7"
    assert image.nightly is True
    assert image.prefect_version == "master"
    assert image.python_version == "3.7"
    assert image.base_image == "python:3.7-slim"
    assert image.extras == ("all_orchestration_extras",)
    assert image.rolling_tags == ("master",)
    assert image.immutable_tags == ("master-YYYYMMDD-SHA",)


def test_release_plans_never_hold_nightly_tags(shipped_plan: Plan) -> None:
    assert [t for t in all_tags(shipped_plan) if t.startswith("master")] == []


def test_nightly_plans_never_hold_release_tags(shipped: Matrix) -> None:
    # A nightly build once landed on `latest`.
    tags = all_tags(plan(shipped, nightly=True))
    assert tags and all(t == "master" or t.startswith("master-") for t in tags)


def test_nightly_revision_renders_date_and_short_sha(shipped: Matrix) -> None:
    revision = Revision(sha="0a1b2c3d4e5f60718293a4b5c6d7e8f901234567", date="20210315")
    assert revision.short == "0a1b2c3"
    (image,) = plan(shipped, nightly=True, revision=revision).images
    assert [t.name for t in image.tags] == ["master", "master-20210315-0a1b2c3"]
    assert image.immutable_tags == ("master-20210315-0a1b2c3",)


def test_unresolved_revision_placeholders() -> None:
    assert Revision(sha="SHA", date="YYYYMMDD") == UNRESOLVED
    assert UNRESOLVED.short == "SHA"


def test_revision_does_not_change_release_plan(shipped: Matrix, shipped_plan: Plan) -> None:
    revision = Revision(sha="f" * 40, date="20210101")
    assert plan(shipped, revision=revision) == shipped_plan


def test_nightly_plan_of_a_matrix_without_nightly_is_empty(
    make_matrix: Callable[..., Path],
) -> None:
    assert plan(load(make_matrix()), nightly=True).images == ()


def test_image_id() -> None:
    assert image_id("full", "0.14.10", "3.7") == "full-0.14.10-py3.7"
    assert image_id("core", "nightly", "3.8") == "core-nightly-py3.8"


def test_plan_json(shipped_plan: Plan) -> None:
    data = shipped_plan.to_json()
    assert list(data) == ["images"]
    assert len(data["images"]) == 92
    latest = next(i for i in data["images"] if i["id"] == f"full-{HIGHEST}-py3.7")
    assert latest == {
        "id": f"full-{HIGHEST}-py3.7",
        "repository": "prefecthq/prefect",
        "variant": "full",
        "prefect_version": HIGHEST,
        "python_version": "3.7",
        "base_image": "python:3.7-slim",
        "extras": ["all_orchestration_extras"],
        "tags": ["latest", "latest-python3.7", HIGHEST, f"{HIGHEST}-python3.7"],
        "immutable_tags": [HIGHEST, f"{HIGHEST}-python3.7"],
        "rolling_tags": ["latest", "latest-python3.7"],
        "nightly": False,
        "platforms": ["linux/amd64"],
        "package": "prefect",
    }


# --- synthetic matrices: which release owns a rolling tag ------------------------------------


@pytest.mark.parametrize(
    ("versions", "candidate"),
    [
        (["0.14.22", "0.15.0rc1"], "0.15.0rc1"),
        (["0.14.22", "1.0rc1"], "1.0rc1"),
        (["1.0rc1", "0.14.22"], "1.0rc1"),
        (["0.14.22", "1.0b1"], "1.0b1"),
        (["0.14.22", "1.0a2"], "1.0a2"),
    ],
)
def test_release_candidate_gets_only_immutable_tags(
    synthetic: Callable[..., Plan], versions: list[str], candidate: str
) -> None:
    # Release candidates (1.0rc) once overwrote `latest-pythonP`.
    the_plan = synthetic(versions)
    tags = tag_map(the_plan)
    assert tags[f"full-{candidate}-py3.7"] == {candidate, f"{candidate}-python3.7"}
    assert tags[f"full-{candidate}-py3.8"] == {f"{candidate}-python3.8"}
    assert owner(the_plan, "latest").id == "full-0.14.22-py3.7"
    assert owner(the_plan, "latest-python3.8").id == "full-0.14.22-py3.8"


def test_backport_listed_last_never_moves_latest(synthetic: Callable[..., Plan]) -> None:
    the_plan = synthetic(["0.14.0", "0.14.1", "0.13.21"])
    assert owner(the_plan, "latest").id == "full-0.14.1-py3.7"
    assert owner(the_plan, "latest-python3.7").id == "full-0.14.1-py3.7"
    assert owner(the_plan, "latest-python3.8").id == "full-0.14.1-py3.8"
    assert tag_map(the_plan)["full-0.13.21-py3.7"] == {"0.13.21", "0.13.21-python3.7"}


def test_numeric_ordering_decides_latest(synthetic: Callable[..., Plan]) -> None:
    the_plan = synthetic(["0.14.10", "0.14.9"])
    assert owner(the_plan, "latest").id == "full-0.14.10-py3.7"
    the_plan = synthetic(["0.14.9", "0.14.10"])
    assert owner(the_plan, "latest").id == "full-0.14.10-py3.7"


def test_dev_releases_skip_rolling_tags(synthetic: Callable[..., Plan]) -> None:
    the_plan = synthetic(["0.14.10", "0.15.0.dev1"])
    assert tag_map(the_plan)["full-0.15.0.dev1-py3.7"] == {"0.15.0.dev1", "0.15.0.dev1-python3.7"}
    assert owner(the_plan, "latest").id == "full-0.14.10-py3.7"


def test_post_release_is_stable(synthetic: Callable[..., Plan]) -> None:
    the_plan = synthetic(["0.14.10", "0.14.10.post1"])
    assert owner(the_plan, "latest").id == "full-0.14.10.post1-py3.7"


def test_only_prereleases_means_no_rolling_tag(synthetic: Callable[..., Plan]) -> None:
    the_plan = synthetic(["1.0rc1", "1.0b2", "1.1.dev0"])
    assert len(the_plan.images) == 6
    assert rolling(the_plan) == {}
    assert not [t for t in all_tags(the_plan) if t.startswith("latest")]
    assert tag_map(the_plan)["full-1.0rc1-py3.7"] == {"1.0rc1", "1.0rc1-python3.7"}


@pytest.mark.parametrize("seed", range(6))
def test_order_of_versions_does_not_matter(synthetic: Callable[..., Plan], seed: int) -> None:
    versions = ["0.13.21", "0.14.0", "0.14.9", "0.14.10", "0.15.0rc1", "1.0.dev1"]
    reference = synthetic(versions)
    shuffled = versions[:]
    random.Random(seed).shuffle(shuffled)
    other = synthetic(shuffled)
    assert tag_map(other) == tag_map(reference)
    assert rolling(other) == rolling(reference)
    assert sorted(other.images, key=lambda i: i.id) == sorted(reference.images, key=lambda i: i.id)


def test_every_permutation_gives_the_same_owners() -> None:
    versions = [Version(v) for v in ["0.9.7", "0.14.9", "0.14.10", "1.0rc1", "0.13.21"]]
    expected = {kind: owners(kind, versions) for kind in Release}
    for permutation in itertools.permutations(versions):
        assert {kind: owners(kind, permutation) for kind in Release} == expected


def test_owners() -> None:
    versions = [
        Version(v)
        for v in [
            "0.14.9",
            "0.14.10",
            "0.15.0",
            "0.15.1rc1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0.dev1",
        ]
    ]
    assert owners(Release.EVERY, versions) == frozenset(versions)
    assert owners(Release.NIGHTLY, versions) == frozenset()
    assert owners(Release.LATEST, versions) == {Version("1.1.0")}
    assert owners(Release.LATEST_IN_MAJOR, versions) == {Version("0.15.0"), Version("1.1.0")}
    assert owners(Release.LATEST_IN_MINOR, versions) == {
        Version("0.14.10"),
        Version("0.15.0"),
        Version("1.0.1"),
        Version("1.1.0"),
    }
    assert owners(Release.LATEST, [Version("1.0rc1")]) == frozenset()
    assert owners(Release.LATEST_IN_MINOR, []) == frozenset()


def test_latest_in_major_and_minor(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        versions=["0.14.9", "0.14.10", "0.15.0", "0.15.1rc1", "1.0.0", "1.0.1", "1.1.0"],
        variants={"full": {"pythons": ["3.8"]}},
        tags=[
            {"tag": "{version}", "variant": "full"},
            {"tag": "{major}", "variant": "full", "release": "latest-in-major"},
            {"tag": "{major}.{minor}", "variant": "full", "release": "latest-in-minor"},
        ],
    )
    assert tag_map(plan(load(path))) == {
        "full-0.14.9-py3.8": {"0.14.9"},
        "full-0.14.10-py3.8": {"0.14.10", "0.14"},
        "full-0.15.0-py3.8": {"0.15.0", "0.15", "0"},
        "full-0.15.1rc1-py3.8": {"0.15.1rc1"},
        "full-1.0.0-py3.8": {"1.0.0"},
        "full-1.0.1-py3.8": {"1.0.1", "1.0"},
        "full-1.1.0-py3.8": {"1.1.0", "1.1", "1"},
    }


def test_rule_restricted_to_one_python(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        versions=["3.2.1"],
        variants={"full": {"pythons": ["3.11", "3.12", "3.13"], "default_python": "3.13"}},
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "{version}-slim", "variant": "full", "python": "3.12"},
        ],
    )
    assert tag_map(plan(load(path))) == {
        "full-3.2.1-py3.11": {"3.2.1-python3.11"},
        "full-3.2.1-py3.12": {"3.2.1-python3.12", "3.2.1-slim"},
        "full-3.2.1-py3.13": {"3.2.1-python3.13"},
    }


def test_rule_for_several_variants(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        versions=["0.14.10"],
        variants={"full": {"pythons": ["3.8"]}, "core": {"pythons": ["3.8"]}},
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "core-{version}", "variant": "core"},
        ],
    )
    assert tag_map(plan(load(path))) == {
        "full-0.14.10-py3.8": {"0.14.10-python3.8"},
        "core-0.14.10-py3.8": {"core-0.14.10"},
    }


# --- the Prefect 3 example -------------------------------------------------------------------


PREFECT3_PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def prefect3_expected() -> dict[str, set[str]]:
    expected: dict[str, set[str]] = {}
    for p in PREFECT3_PYTHONS:
        expected[f"full-3.2.1-py{p}"] = {f"3.2.1-python{p}", f"3.2-python{p}", f"3-python{p}"}
        expected[f"full-3.2.0-py{p}"] = {f"3.2.0-python{p}"}
        expected[f"full-3.1.15-py{p}"] = {f"3.1.15-python{p}", f"3.1-python{p}"}
        expected[f"full-2.20.27-py{p}"] = {
            f"2.20.27-python{p}",
            f"2.20-python{p}",
            f"2-python{p}",
        }
        expected[f"full-3.3.0rc1-py{p}"] = {f"3.3.0rc1-python{p}"}
    expected["full-3.2.1-py3.12"].add("3-latest")
    expected["full-2.20.27-py3.12"].add("2-latest")
    return expected


def prefect3_flavour(the_plan: Plan, variant: str) -> Plan:
    return Plan(images=tuple(i for i in the_plan.images if i.variant == variant))


def test_prefect3_example_exact_tags(prefect3_matrix_path: Path) -> None:
    the_plan = plan(load(prefect3_matrix_path))
    full = prefect3_flavour(the_plan, "full")
    assert tag_map(full) == prefect3_expected()
    assert tag_map(the_plan)["full-3.2.1-py3.12"] == {
        "3.2.1-python3.12",
        "3.2-python3.12",
        "3-python3.12",
        "3-latest",
    }
    # Five versions on four Pythons, in three flavours.
    assert Counter(i.variant for i in the_plan.images) == {
        "full": 20,
        "kubernetes": 20,
        "client": 20,
    }


def test_prefect3_example_rolling_tags(prefect3_matrix_path: Path) -> None:
    the_plan = plan(load(prefect3_matrix_path))
    suffix = {"full": "", "kubernetes": "-kubernetes", "client": "-client"}
    for image in the_plan.images:
        assert set(image.immutable_tags) == {
            f"{image.prefect_version}-python{image.python_version}{suffix[image.variant]}"
        }
    for image in the_plan.images:
        if image.prefect_version in ("3.1.15", "3.2.0", "3.3.0rc1"):
            assert not [t for t in image.tags if t.name.startswith("3-")], image.id
    for python in PREFECT3_PYTHONS:
        for variant, end in suffix.items():
            assert owner(the_plan, f"3-python{python}{end}").prefect_version == "3.2.1"
            assert owner(the_plan, f"3-python{python}{end}").variant == variant
            assert owner(the_plan, f"2-python{python}{end}").prefect_version == "2.20.27"


def test_prefect3_example_every_image_on_amd64_and_arm64(prefect3_matrix_path: Path) -> None:
    the_plan = plan(load(prefect3_matrix_path))
    assert the_plan.images
    for image in the_plan.images:
        assert image.platforms == ("linux/amd64", "linux/arm64"), image.id


def test_prefect3_example_tags_are_unique(prefect3_matrix_path: Path) -> None:
    tags = all_tags(plan(load(prefect3_matrix_path)))
    assert len(tags) == 98
    assert [tag for tag, n in Counter(tags).items() if n > 1] == []


def test_prefect3_example_flavours(prefect3_matrix_path: Path) -> None:
    the_plan = plan(load(prefect3_matrix_path))
    by_variant: dict[str, list[Image]] = {}
    for image in the_plan.images:
        by_variant.setdefault(image.variant, []).append(image)
    assert {(i.package, i.extras) for i in by_variant["client"]} == {("prefect-client", ())}
    assert {(i.package, i.extras) for i in by_variant["kubernetes"]} == {
        ("prefect", ("kubernetes",))
    }
    assert {(i.package, i.extras) for i in by_variant["full"]} == {("prefect", ())}
    assert owner(the_plan, "3.2.1-python3.12-kubernetes").extras == ("kubernetes",)
    assert owner(the_plan, "3.2.1-python3.12-client").package == "prefect-client"
    assert {i.base_image for i in by_variant["client"]} == {
        f"python:{p}-slim" for p in PREFECT3_PYTHONS
    }


# --- per-variant platforms, base image and package -------------------------------------------


def test_variant_overrides_reach_the_images(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        versions=["3.2.1"],
        platforms=["linux/arm64", "linux/amd64"],
        variants={
            "full": {"pythons": ["3.12"]},
            "client": {
                "pythons": ["3.12"],
                "package": "prefect-client",
                "base_image": "mirror.example/python:{python}-bookworm",
                "platforms": ["linux/amd64", "linux/arm/v7"],
            },
        },
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "{version}-python{python}-client", "variant": "client"},
        ],
    )
    full, client = plan(load(path)).images
    # The matrix's order, not a sorted one: it is the order of the index's manifests.
    assert full.platforms == ("linux/arm64", "linux/amd64")
    assert (full.package, full.base_image) == ("prefect", "python:3.12-slim")
    assert client.platforms == ("linux/amd64", "linux/arm/v7")
    assert client.package == "prefect-client"
    assert client.base_image == "mirror.example/python:3.12-bookworm"
    data = client.to_json()
    assert (data["platforms"], data["package"]) == (
        ["linux/amd64", "linux/arm/v7"],
        "prefect-client",
    )


def test_images_default_to_one_platform_and_prefect(shipped_plan: Plan) -> None:
    assert {(i.platforms, i.package) for i in shipped_plan.images} == {
        (("linux/amd64",), "prefect")
    }


def test_image_fields_default_for_existing_constructors() -> None:
    image = Image(
        id="full-3.2.1-py3.12",
        repository="prefecthq/prefect",
        variant="full",
        prefect_version="3.2.1",
        python_version="3.12",
        base_image="python:3.12-slim",
        extras=(),
        tags=(Tag(name="3.2.1-python3.12", rolling=False),),
    )
    assert (image.platforms, image.package) == (("linux/amd64",), "prefect")


# --- plan-time errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "bad"),
    [
        ("latest/{python}", "'latest/3.7'"),
        ("-{version}-python{python}", "'-0.14.9-python3.7'"),
        (".v{version}-python{python}", "'.v0.14.9-python3.7'"),
        ("{version}+python{python}", "'0.14.9+python3.7'"),
        ("{version} python{python}", "'0.14.9 python3.7'"),
    ],
)
def test_template_giving_an_invalid_docker_tag(
    make_matrix: Callable[..., Path], template: str, bad: str
) -> None:
    path = make_matrix(tags=[{"tag": template, "variant": "full"}])
    plan_error(path, f"{path}:", "tags: ", repr(template), bad, "not a valid Docker tag")


def test_rolling_template_giving_an_invalid_docker_tag(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "latest/{python}", "variant": "full", "release": "latest"},
        ]
    )
    plan_error(path, "'latest/{python}'", "'latest/3.7'", "not a valid Docker tag")


def test_tag_longer_than_128_characters(make_matrix: Callable[..., Path]) -> None:
    template = "a" * 120 + "-{version}-python{python}"
    path = make_matrix(tags=[{"tag": template, "variant": "full"}])
    plan_error(path, "not a valid Docker tag", "a" * 120 + "-0.14.9-python3.7")


def test_tag_of_exactly_128_characters(make_matrix: Callable[..., Path]) -> None:
    rendered_tail = "-0.14.10-py3.7"
    template = "a" * (128 - len(rendered_tail)) + "-{version}-py{python}"
    path = make_matrix(versions=["0.14.10"], tags=[{"tag": template, "variant": "full"}])
    (longest, *_) = sorted(all_tags(plan(load(path))), key=len, reverse=True)
    assert len(longest) == 128
    path = make_matrix(versions=["0.14.10"], tags=[{"tag": "b" + template, "variant": "full"}])
    plan_error(path, "not a valid Docker tag")


def test_two_images_same_tag(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "{major}.{minor}-python{python}", "variant": "full"},
        ]
    )
    plan_error(path, "'0.14-python3.7'", "full-0.14.9-py3.7", "full-0.14.10-py3.7")


def test_two_variants_same_rolling_tag(make_matrix: Callable[..., Path]) -> None:
    # Two jobs both owning `core` raced; the last one to finish won.
    path = make_matrix(
        variants={"full": {"pythons": ["3.8"]}, "core": {"pythons": ["3.8"]}},
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "core-{version}", "variant": "core"},
            {"tag": "core", "variant": ["full", "core"], "release": "latest"},
        ],
    )
    plan_error(path, "'core'", "full-0.14.10-py3.8", "core-0.14.10-py3.8")


def test_latest_in_major_without_major_collides(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        versions=["0.14.10", "1.0.0"],
        tags=[
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "stable", "variant": "full", "python": "3.7", "release": "latest-in-major"},
        ],
    )
    plan_error(path, "'stable'", "full-0.14.10-py3.7", "full-1.0.0-py3.7")


@pytest.mark.parametrize("nightly", [False, True])
def test_nightly_tag_colliding_with_a_release_tag(
    make_matrix: Callable[..., Path], nightly: bool
) -> None:
    # A nightly build once landed on `latest`: the clash is refused whichever plan is asked for.
    path = make_matrix(
        nightly=NIGHTLY,
        tags=[
            *RELEASE_RULES,
            {"tag": "latest", "variant": "full", "python": "3.7", "release": "nightly"},
        ],
    )
    plan_error(path, "'latest'", "full-0.14.10-py3.7", "full-nightly-py3.7", nightly=nightly)


def test_image_without_any_tag(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        variants={"full": FULL, "core": {"pythons": ["3.8"]}},
        tags=[{"tag": "{version}-python{python}", "variant": "full"}],
    )
    plan_error(path, "core-0.14.9-py3.8", "gets no tag")


def test_image_without_any_tag_for_one_python(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[{"tag": "{version}", "variant": "full", "python": "default"}])
    plan_error(path, "full-0.14.9-py3.8", "gets no tag")


@pytest.mark.parametrize(
    "second",
    [
        {"tag": "{version}-python{python}", "variant": "full", "release": "latest"},
        {"tag": "{version}-python{python}", "variant": "full", "python": "3.7"},
    ],
    ids=["rolling-and-immutable", "immutable-twice"],
)
def test_one_image_never_lists_a_tag_twice(
    make_matrix: Callable[..., Path], second: dict[str, Any]
) -> None:
    path = make_matrix(tags=[{"tag": "{version}-python{python}", "variant": "full"}, second])
    try:
        the_plan = plan(load(path))
    except MatrixError:
        return  # refusing the matrix is as good as listing the tag once
    for image in the_plan.images:
        names = [t.name for t in image.tags]
        assert len(names) == len(set(names)), f"{image.id}: {names}"
        assert not set(image.rolling_tags) & set(image.immutable_tags), image.id


@pytest.mark.parametrize(
    "rule",
    [
        {"tag": "{version!x}-python{python}", "variant": "full"},
        {"tag": "{version:d}-python{python}", "variant": "full"},
        {"tag": "x{python:d}", "variant": "full", "python": "default"},
    ],
    ids=["bad-conversion", "bad-format-spec", "bad-format-spec-on-python"],
)
def test_template_with_bad_format_spec_is_a_matrix_error(
    make_matrix: Callable[..., Path], rule: dict[str, Any]
) -> None:
    path = make_matrix(tags=[{"tag": "{version}-python{python}", "variant": "full"}, rule])
    with pytest.raises(MatrixError) as info:
        plan(load(path))
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


# --- select ----------------------------------------------------------------------------------


def test_select_glob(shipped_plan: Plan) -> None:
    selected = shipped_plan.select(["full-0.14.10-*"])
    assert [i.id for i in selected.images] == [
        "full-0.14.10-py3.6",
        "full-0.14.10-py3.7",
        "full-0.14.10-py3.8",
    ]


def test_select_union_of_patterns(shipped_plan: Plan) -> None:
    selected = shipped_plan.select(["core-0.14.1?-py3.8", "full-0.14.22-py3.7", "core-*"])
    ids = [i.id for i in selected.images]
    assert "full-0.14.22-py3.7" in ids
    assert {i for i in ids if i.startswith("core-")} == {
        f"core-{v}-py3.8" for v in SHIPPED_VERSIONS
    }
    assert len(ids) == len(set(ids)) == 24


def test_select_keeps_plan_order(shipped_plan: Plan) -> None:
    selected = shipped_plan.select(["*-py3.8"])
    assert [i.id for i in selected.images] == [
        i.id for i in shipped_plan.images if i.python_version == "3.8"
    ]


def test_select_is_case_sensitive(shipped_plan: Plan) -> None:
    with pytest.raises(SelectionError):
        shipped_plan.select(["FULL-*"])


def test_select_nothing_is_the_whole_plan(shipped_plan: Plan) -> None:
    assert shipped_plan.select([]) == shipped_plan


def test_select_pattern_matching_nothing(shipped_plan: Plan) -> None:
    with pytest.raises(SelectionError) as info:
        shipped_plan.select(["full-*", "full-0.13.*"])
    message = str(info.value)
    assert "'full-0.13.*'" in message
    assert "'full-*'" not in message
    assert "\n" not in message
    assert f"ids look like: {shipped_plan.images[0].id}" in message


def test_select_nightly_plan(shipped: Matrix) -> None:
    assert [i.id for i in plan(shipped, nightly=True).select(["full-nightly-*"]).images] == [
        "full-nightly-py3.7"
    ]


# --- scale -----------------------------------------------------------------------------------


def test_large_matrix(make_matrix: Callable[..., Path]) -> None:
    versions = [f"1.{n // 20}.{n % 20}" for n in range(400)]
    random.Random(3).shuffle(versions)
    pythons = ["3.10", "3.11", "3.12", "3.13"]
    path = make_matrix(
        versions=versions,
        variants={"full": {"pythons": pythons, "default_python": "3.12"}},
        tags=[
            {"tag": "latest", "variant": "full", "python": "default", "release": "latest"},
            {"tag": "{major}-python{python}", "variant": "full", "release": "latest-in-major"},
            {
                "tag": "{major}.{minor}-python{python}",
                "variant": "full",
                "release": "latest-in-minor",
            },
            {"tag": "{version}-python{python}", "variant": "full"},
        ],
    )
    the_plan = plan(load(path))
    assert len(the_plan.images) == 1600
    tags = all_tags(the_plan)
    assert len(tags) == 1 + 4 + 20 * 4 + 1600
    assert len(set(tags)) == len(tags)
    assert owner(the_plan, "latest").id == "full-1.19.19-py3.12"
    assert owner(the_plan, "1.7-python3.10").id == "full-1.7.19-py3.10"


def test_tag_dataclass() -> None:
    tag = Tag(name="latest", rolling=True)
    assert tag.rule == 0
    assert tag != Tag(name="latest", rolling=False)

"""publisher.shards: a plan split into one-platform shards for CI runners, and its CLI."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from publisher.cli import main
from publisher.errors import SelectionError
from publisher.matrix import load
from publisher.plan import Image, Plan, plan
from publisher.shards import (
    DEFAULT_RUNNERS,
    EMULATION_RUNNER,
    MAX_SHARDS,
    SHARD_BY,
    Shard,
    exact_glob,
    github_matrix,
    parse_runner,
    shard,
)
from tests.helpers import assert_one_error_line

PLATFORMS = ["linux/amd64", "linux/arm64"]


def generated_matrix(
    versions: int, pythons: int, *, platforms: list[str] = PLATFORMS
) -> dict[str, Any]:
    """VERSIONS releases x PYTHONS Pythons x 4 variants: core, full and kubernetes share a
    core build; client installs prefect-client and so has a core build of its own."""
    pys = [f"3.{9 + n}" for n in range(pythons)]
    default = pys[0]

    def variant(**extra: Any) -> dict[str, Any]:
        return {"pythons": pys, "default_python": default, **extra}

    return {
        "image": "prefecthq/prefect",
        "base_image": "python:{python}-slim",
        "platforms": platforms,
        "versions": [f"3.{n // 10}.{n % 10}" for n in range(versions)],
        "variants": {
            "core": variant(),
            "full": variant(extras=["all"]),
            "kubernetes": variant(extras=["kubernetes"]),
            "client": variant(package="prefect-client"),
        },
        "tags": [
            {"tag": "core-{version}-python{python}", "variant": "core"},
            {"tag": "{version}-python{python}", "variant": "full"},
            {"tag": "{version}-python{python}-kubernetes", "variant": "kubernetes"},
            {"tag": "{version}-python{python}-client", "variant": "client"},
        ],
    }


@pytest.fixture
def make_plan(make_matrix: Callable[..., Path]) -> Callable[..., Plan]:
    def make(versions: int, pythons: int, **kwargs: Any) -> Plan:
        return plan(load(make_matrix(**generated_matrix(versions, pythons, **kwargs))))

    return make


@pytest.fixture
def big_plan(make_plan: Callable[..., Plan]) -> Plan:
    """800 images on 2 platforms: 1,600 platform images to build."""
    the_plan = make_plan(40, 5)
    assert sum(len(image.platforms) for image in the_plan.images) == 1600
    return the_plan


def pairs(the_plan: Plan) -> Counter[tuple[str, str]]:
    return Counter((image.id, p) for image in the_plan.images for p in image.platforms)


def core_group(image: Image) -> tuple[str, str, str, str]:
    return (image.prefect_version, image.python_version, image.base_image, image.package)


def check_shards(the_plan: Plan, shards: tuple[Shard, ...]) -> None:
    """The properties every sharding has, whatever the key and limit."""
    # Every (image, platform) pair in exactly one shard; nothing else in any.
    covered = Counter((image.id, s.platform) for s in shards for image in s.images)
    assert covered == pairs(the_plan)
    # A shard builds its one platform, for images that have it.
    for s in shards:
        assert s.images
        assert all(s.platform in image.platforms for image in s.images)
    # A core group (per platform) sits in one shard only.
    home: dict[tuple[Any, ...], str] = {}
    for s in shards:
        for image in s.images:
            assert home.setdefault((*core_group(image), s.platform), s.name) == s.name
    names = [s.name for s in shards]
    assert len(set(names)) == len(names), Counter(names).most_common(3)
    assert len(shards) <= MAX_SHARDS


@pytest.mark.parametrize("by", SHARD_BY)
def test_every_key_covers_the_plan_once_and_keeps_core_groups(
    make_plan: Callable[..., Plan], by: str
) -> None:
    the_plan = make_plan(3, 2)
    check_shards(the_plan, shard(the_plan, by=by))


def test_keys_give_their_shards(make_plan: Callable[..., Plan]) -> None:
    the_plan = make_plan(3, 2)  # 3 versions, Pythons 3.9 and 3.10, 2 platforms
    assert [s.name for s in shard(the_plan, by="python")] == [
        "py3.9-linux-amd64",
        "py3.9-linux-arm64",
        "py3.10-linux-amd64",
        "py3.10-linux-arm64",
    ]
    assert [s.name for s in shard(the_plan, by="platform")] == ["linux-amd64", "linux-arm64"]
    assert [s.name for s in shard(the_plan, by="version")][:2] == [
        "3.0.0-linux-amd64",
        "3.0.0-linux-arm64",
    ]
    assert len(shard(the_plan, by="version")) == 3 * 2
    by_image = shard(the_plan, by="image")
    # Two core groups per version and Python (prefect, prefect-client), on two platforms.
    assert len(by_image) == 3 * 2 * 2 * 2
    first = by_image[0]
    assert first.name == "core-3.0.0-py3.9-linux-amd64"
    assert [i.id for i in first.images] == [
        "core-3.0.0-py3.9",
        "full-3.0.0-py3.9",
        "kubernetes-3.0.0-py3.9",
    ]


def test_the_default_is_one_shard_per_python_and_platform(make_plan: Callable[..., Plan]) -> None:
    the_plan = make_plan(2, 3)
    assert shard(the_plan) == shard(the_plan, by="python")
    assert len(shard(the_plan)) == 3 * 2


def test_runners_come_from_the_table_and_can_be_overridden(make_plan: Callable[..., Plan]) -> None:
    the_plan = make_plan(1, 1, platforms=["linux/amd64", "linux/arm64", "linux/arm/v7"])
    runners = {s.platform: s.runner for s in shard(the_plan)}
    assert runners == {
        "linux/amd64": "ubuntu-latest",
        "linux/arm64": "ubuntu-24.04-arm",
        "linux/arm/v7": EMULATION_RUNNER,
    }
    assert DEFAULT_RUNNERS["linux/arm64"] == "ubuntu-24.04-arm"
    overridden = shard(the_plan, runners=dict([parse_runner("linux/arm64/v8=self-hosted-arm")]))
    assert {s.platform: s.runner for s in overridden}["linux/arm64"] == "self-hosted-arm"


@pytest.mark.parametrize(
    "text",
    ["linux/arm64", "linux/arm64=", "=ubuntu-latest", "linux/sparc=big-iron", " = "],
)
def test_a_bad_runner_is_refused(text: str) -> None:
    with pytest.raises(SelectionError, match="--runner"):
        parse_runner(text)


@pytest.mark.parametrize("by", SHARD_BY)
@pytest.mark.parametrize("limit", [MAX_SHARDS, 5])  # 5: merged shards too
def test_select_globs_give_back_exactly_the_shards_images(
    make_plan: Callable[..., Plan], by: str, limit: int
) -> None:
    the_plan = make_plan(6, 3)
    for s in shard(the_plan, by=by, max_shards=limit):
        assert the_plan.select(s.select).images == s.images


def test_an_id_with_glob_characters_is_escaped() -> None:
    assert exact_glob("full-1.0-py3.9") == "full-1.0-py3.9"
    fields: dict[str, Any] = {"repository": "r", "variant": "v", "prefect_version": "1"}
    fields |= {"python_version": "3", "base_image": "b", "extras": (), "tags": ()}
    images = [Image(id=i, **fields) for i in ("a*b", "a-b", "a?[b]", "a[?]b")]
    the_plan = Plan(images=tuple(images))
    for image in images:
        assert the_plan.select([exact_glob(image.id)]).images == (image,)


def test_a_plan_too_big_for_one_matrix_is_merged_within_its_platforms(big_plan: Plan) -> None:
    start = time.perf_counter()
    shards = shard(big_plan, by="image")
    elapsed = time.perf_counter() - start
    print(f"sharding 1,600 platform images by image: {elapsed * 1000:.1f} ms")
    assert elapsed < 5  # about 10 ms on a 2-core machine; generous for a loaded CI
    # 40 versions x 5 Pythons x 2 core groups x 2 platforms = 800 groups, over the limit.
    assert len(shards) == MAX_SHARDS
    check_shards(big_plan, shards)
    for platform in PLATFORMS:
        sizes = [len(s.images) for s in shards if s.platform == platform]
        # Both platforms carry the same load, so they get half the shards each ...
        assert len(sizes) == MAX_SHARDS // 2
        # ... and the shards of one platform are balanced to within one core group.
        assert max(sizes) - min(sizes) <= 3
    merged = shards[0].name
    assert merged.startswith("core-3.0.0-py3.9+") and merged.endswith("-linux-amd64")


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
def test_max_shards_is_a_ceiling(make_plan: Callable[..., Plan], limit: int) -> None:
    the_plan = make_plan(5, 3)
    for by in SHARD_BY:
        shards = shard(the_plan, by=by, max_shards=max(limit, 2))
        assert len(shards) <= max(limit, 2)
        check_shards(the_plan, shards)


def test_the_platform_with_more_to_build_gets_more_shards(
    make_matrix: Callable[..., Path],
) -> None:
    data = generated_matrix(4, 2)
    # amd64 builds all four variants, arm64 only core and full: half as many images.
    data["variants"]["client"]["platforms"] = ["linux/amd64"]
    data["variants"]["kubernetes"]["platforms"] = ["linux/amd64"]
    the_plan = plan(load(make_matrix(**data)))
    shards = shard(the_plan, by="image", max_shards=6)
    check_shards(the_plan, shards)
    counts = Counter(s.platform for s in shards)
    assert counts == {"linux/amd64": 4, "linux/arm64": 2}


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_shards": 0}, "--max-shards 0: must be from 1 to 256"),
        ({"max_shards": 257}, "--max-shards 257"),
        ({"max_shards": 1}, "2 platforms"),
        ({"by": "variant"}, "--shard-by 'variant'"),
    ],
)
def test_impossible_shardings_are_refused(
    make_plan: Callable[..., Plan], kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SelectionError) as caught:
        shard(make_plan(1, 1), **kwargs)
    assert fragment in str(caught.value)


def test_an_empty_plan_is_refused() -> None:
    with pytest.raises(SelectionError, match="no images"):
        shard(Plan(images=()))


def test_github_matrix_is_an_include_list(make_plan: Callable[..., Plan]) -> None:
    matrix = github_matrix(shard(make_plan(1, 1, platforms=["linux/arm64"])))
    assert matrix == {
        "include": [
            {
                "name": "py3.9-linux-arm64",
                "select": "core-3.0.0-py3.9 full-3.0.0-py3.9 kubernetes-3.0.0-py3.9 "
                "client-3.0.0-py3.9",
                "platform": "linux/arm64",
                "runner": "ubuntu-24.04-arm",
            }
        ]
    }


# The command line.


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_prints_one_line_of_json(
    capsys: pytest.CaptureFixture[str], prefect3_matrix_path: Path
) -> None:
    code, out, err = run(
        capsys, "plan", "--matrix", prefect3_matrix_path, "--format", "github-matrix"
    )
    assert code == 0, err
    assert out.endswith("\n") and out.count("\n") == 1
    entries = json.loads(out)["include"]
    assert len(entries) == 4 * 2  # Pythons 3.10-3.13, amd64 and arm64
    assert all(entry.keys() == {"name", "select", "platform", "runner"} for entry in entries)
    the_plan = plan(load(prefect3_matrix_path))
    covered = Counter(
        (image_id, entry["platform"]) for entry in entries for image_id in entry["select"].split()
    )
    assert covered == pairs(the_plan)


def test_cli_selects_before_sharding_and_takes_every_option(
    capsys: pytest.CaptureFixture[str], prefect3_matrix_path: Path
) -> None:
    code, out, err = run(
        capsys,
        *("plan", "--matrix", prefect3_matrix_path, "--format", "github-matrix"),
        *("--select", "*-3.2.1-*", "--shard-by", "image", "--max-shards", "3"),
        *("--runner", "linux/amd64=big-x86", "--runner", "linux/arm64=big-arm"),
    )
    assert code == 0, err
    entries = json.loads(out)["include"]
    assert len(entries) == 3
    ids = {i for entry in entries for i in entry["select"].split()}
    assert ids == {i.id for i in plan(load(prefect3_matrix_path)).select(["*-3.2.1-*"]).images}
    runners = {entry["platform"]: entry["runner"] for entry in entries}
    assert runners == {"linux/amd64": "big-x86", "linux/arm64": "big-arm"}


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--shard-by", "image"], ["--shard-by applies only to --format github-matrix"]),
        (["--format", "json", "--max-shards", "3"], ["--max-shards applies only"]),
        (["--format", "github-matrix", "--max-shards", "300"], ["--max-shards 300"]),
        (["--format", "github-matrix", "--runner", "arm64"], ["--runner 'arm64'"]),
        (["--format", "github-matrix", "--select", "nope-*"], ["--select 'nope-*'"]),
        (["--format", "github-matrix", "--nightly"], ["no images"]),
    ],
)
def test_cli_refuses_bad_sharding_in_one_line(
    capsys: pytest.CaptureFixture[str],
    prefect3_matrix_path: Path,
    argv: list[str],
    fragments: list[str],
) -> None:
    code, out, err = run(capsys, "plan", "--matrix", prefect3_matrix_path, *argv)
    assert out == ""
    assert_one_error_line(code, err, *fragments, exit_code=2)

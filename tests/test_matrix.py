"""publisher.matrix: matrix.yaml parsed into frozen dataclasses, or one-line MatrixErrors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from publisher.errors import MatrixError, PublisherError
from publisher.matrix import Matrix, NightlySource, Release, TagRule, Variant, load

FULL = {"pythons": ["3.7", "3.8"], "default_python": "3.7"}
EVERY_PYTHON = {"tag": "{version}-python{python}", "variant": "full"}
MASTER = {"tag": "master", "variant": "full", "python": "3.7", "release": "nightly"}
NIGHTLY = {"repository": "https://github.com/PrefectHQ/prefect.git", "ref": "master"}


def matrix_error(path: Path, *fragments: str) -> str:
    """Load ``path``, expect a MatrixError: one line naming the file and each fragment."""
    with pytest.raises(MatrixError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- what a valid matrix loads into ---------------------------------------------------------


def test_shipped_matrix_loads(shipped_matrix_path: Path) -> None:
    matrix = load(shipped_matrix_path)
    assert isinstance(matrix, Matrix)
    assert matrix.path == shipped_matrix_path
    assert matrix.image == "prefecthq/prefect"
    assert matrix.base_image == "python:{python}-slim"
    assert matrix.source_url == "https://github.com/PrefectHQ/prefect"
    assert matrix.versions == tuple(Version(f"0.14.{n}") for n in range(23))
    assert matrix.variant("full") == Variant(
        name="full",
        description=matrix.variant("full").description,
        pythons=("3.6", "3.7", "3.8"),
        default_python="3.7",
        extras=("all_orchestration_extras",),
    )
    assert matrix.variant("core").pythons == ("3.8",)
    assert matrix.variant("core").default_python == "3.8"
    assert matrix.variant("core").extras == ()
    assert matrix.nightly == NightlySource(
        repository="https://github.com/PrefectHQ/prefect.git", ref="master"
    )
    assert [rule.template for rule in matrix.tags] == [
        "latest",
        "master",
        "master-{date}-{sha}",
        "latest-python{python}",
        "{version}",
        "{version}-python{python}",
        "core",
        "core-{version}",
    ]
    assert [rule.rolling for rule in matrix.tags] == [
        True,
        True,
        False,
        True,
        False,
        False,
        True,
        False,
    ]
    assert [rule.in_docs for rule in matrix.tags] == [
        True,
        True,
        False,
        True,
        True,
        True,
        True,
        True,
    ]


def test_matrix_dataclasses_are_frozen(shipped_matrix_path: Path) -> None:
    matrix = load(shipped_matrix_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        matrix.image = "other/image"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        matrix.tags[0].template = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        matrix.variants[0].pythons = ()  # type: ignore[misc]


def test_minimal_matrix_defaults(make_matrix: Callable[..., Path]) -> None:
    matrix = load(make_matrix())
    assert matrix.nightly is None
    assert matrix.source_url == ""
    (rule,) = matrix.tags
    assert rule.release is Release.EVERY
    assert rule.python == "all"
    assert rule.variants == ("full",)
    assert rule.in_docs is True
    assert rule.rolling is False
    assert rule.origin.startswith(f"{matrix.path}:")


def test_single_python_variant_defaults_to_it(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        variants={"core": {"pythons": ["3.8"]}},
        tags=[{"tag": "core-{version}", "variant": "core"}],
    )
    assert load(path).variant("core").default_python == "3.8"


def test_nightly_ref_defaults_to_master(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        nightly={"repository": "https://github.com/PrefectHQ/prefect.git"},
        tags=[EVERY_PYTHON, MASTER],
    )
    assert load(path).nightly == NightlySource(
        repository="https://github.com/PrefectHQ/prefect.git", ref="master"
    )


@pytest.mark.parametrize(
    ("python", "expected"),
    [
        (None, "all"),
        ("all", "all"),
        ("default", "default"),
        ("3.8", ("3.8",)),
        (["3.7", "3.8"], ("3.7", "3.8")),
    ],
)
def test_rule_python_selector(make_matrix: Callable[..., Path], python: Any, expected: Any) -> None:
    rule: dict[str, Any] = {"tag": "{version}-py{python}", "variant": "full"}
    if python is not None:
        rule["python"] = python
    matrix = load(make_matrix(tags=[rule]))
    assert matrix.tags[0].python == expected


def test_pythons_for_selects_from_the_variant() -> None:
    variant = Variant(
        name="full",
        description="",
        pythons=("3.11", "3.12", "3.13"),
        default_python="3.12",
        extras=(),
    )

    def rule(python: Any) -> TagRule:
        return TagRule(
            template="t{python}", variants=("full",), python=python, release=Release.EVERY
        )

    assert rule("all").pythons_for(variant) == ("3.11", "3.12", "3.13")
    assert rule("default").pythons_for(variant) == ("3.12",)
    assert rule(("3.12",)).pythons_for(variant) == ("3.12",)
    assert rule(("3.13", "3.11")).pythons_for(variant) == ("3.11", "3.13")


@pytest.mark.parametrize(
    ("release", "template", "rolling"),
    [
        (Release.EVERY, "{version}", False),
        (Release.LATEST, "latest", True),
        (Release.LATEST_IN_MAJOR, "{major}-latest", True),
        (Release.LATEST_IN_MINOR, "{major}.{minor}", True),
        (Release.NIGHTLY, "master", True),
        (Release.NIGHTLY, "master-{date}-{sha}", False),
    ],
)
def test_rule_rolling(release: Release, template: str, rolling: bool) -> None:
    rule = TagRule(template=template, variants=("full",), python="all", release=release)
    assert rule.rolling is rolling


def test_rule_origin_is_not_part_of_equality() -> None:
    a = TagRule(
        template="x",
        variants=("full",),
        python="default",
        release=Release.LATEST,
        origin="a.yaml:1",
    )
    b = dataclasses.replace(a, origin="b.yaml:9")
    assert a == b


def test_versions_keep_file_order(make_matrix: Callable[..., Path]) -> None:
    matrix = load(make_matrix(versions=["0.14.10", "0.13.21", "1.0rc1", "0.14.9"]))
    assert [str(v) for v in matrix.versions] == ["0.14.10", "0.13.21", "1.0rc1", "0.14.9"]


def test_rules_for_variant(shipped_matrix_path: Path) -> None:
    matrix = load(shipped_matrix_path)
    core = [r.template for r in matrix.rules_for(matrix.variant("core"))]
    assert core == ["core", "core-{version}"]
    with pytest.raises(KeyError):
        matrix.variant("slim")


def test_one_bare_string_is_a_list_of_one(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        variants={"full": {**FULL, "extras": "all_orchestration_extras"}},
        tags=[{"tag": "{version}-python{python}", "variant": ["full"]}],
    )
    matrix = load(path)
    assert matrix.variant("full").extras == ("all_orchestration_extras",)
    assert matrix.tags[0].variants == ("full",)


def test_platforms_package_and_base_default(make_matrix: Callable[..., Path]) -> None:
    matrix = load(make_matrix())
    assert matrix.platforms == ("linux/amd64",)
    variant = matrix.variant("full")
    assert (variant.package, variant.base_image, variant.platforms) == ("prefect", None, None)
    assert matrix.platforms_of(variant) == ("linux/amd64",)
    assert matrix.base_image_of(variant) == "python:{python}-slim"


def test_platforms_keep_file_order_normalised(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(platforms=["linux/arm64/v8", "linux/amd64", "linux/arm"])
    matrix = load(path)
    assert matrix.platforms == ("linux/arm64", "linux/amd64", "linux/arm/v7")
    assert matrix.platforms_of(matrix.variant("full")) == matrix.platforms


def test_variant_overrides_platforms_base_image_and_package(
    make_matrix: Callable[..., Path],
) -> None:
    path = make_matrix(
        platforms=["linux/amd64", "linux/arm64"],
        variants={
            "full": FULL,
            "client": {
                "pythons": ["3.12"],
                "package": "Prefect_Client",
                "base_image": "mirror.example/python:{python}-bookworm",
                "platforms": ["linux/arm64"],
            },
        },
        tags=[EVERY_PYTHON, {"tag": "{version}-python{python}-client", "variant": "client"}],
    )
    matrix = load(path)
    client = matrix.variant("client")
    assert client.package == "prefect-client"  # PEP 503 form
    assert client.base_image == "mirror.example/python:{python}-bookworm"
    assert client.platforms == ("linux/arm64",)
    assert matrix.platforms_of(client) == ("linux/arm64",)
    assert matrix.base_image_of(client) == "mirror.example/python:{python}-bookworm"
    full = matrix.variant("full")
    assert matrix.platforms_of(full) == ("linux/amd64", "linux/arm64")
    assert matrix.base_image_of(full) == "python:{python}-slim"
    assert full.package == "prefect"


def test_matrix_error_is_a_publisher_error_with_exit_code_2() -> None:
    assert issubclass(MatrixError, PublisherError)
    assert MatrixError.exit_code == 2


# --- the file itself -------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    matrix_error(tmp_path / "nope.yaml", "no such file")


def test_directory(tmp_path: Path) -> None:
    matrix_error(tmp_path, "is a directory")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"image: caf\xe9\n")
    matrix_error(path, "cannot read")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("image: [unclosed\n", (":2: not valid YAML", "expected ','")),
        ("image: a\n  base_image: b\n", (":2: not valid YAML", "mapping values")),
        ("versions:\n\t- 0.14.10\n", ("not valid YAML", "'\\t'")),
        ("image: a\n---\nimage: b\n", ("not valid YAML", "another document")),
    ],
)
def test_broken_yaml(write_yaml: Callable[..., Path], text: str, fragments: tuple[str]) -> None:
    matrix_error(write_yaml(text), *fragments)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(write_yaml: Callable[..., Path], text: str) -> None:
    matrix_error(write_yaml(text), "is empty")


def test_empty_document(write_yaml: Callable[..., Path]) -> None:
    matrix_error(write_yaml("---\n"), "must be a mapping", "empty")


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("- image\n- versions\n", ("the file must be a mapping", "a list")),
        ("hello\n", ("the file must be a mapping", "hello")),
        ("42\n", ("the file must be a mapping", "42")),
    ],
)
def test_top_level_not_a_mapping(
    write_yaml: Callable[..., Path], text: str, fragments: tuple[str]
) -> None:
    matrix_error(write_yaml(text), ":1:", *fragments)


@pytest.mark.parametrize("key", ["image", "base_image", "versions", "variants", "tags"])
def test_missing_required_key(make_matrix: Callable[..., Path], key: str) -> None:
    matrix_error(make_matrix(**{key: None}), f"missing required key {key!r}")


# --- wrong types -----------------------------------------------------------------------------


def test_versions_as_a_string(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(versions="0.14.10"), "versions: ", "must be a list", "0.14.10")


def test_pythons_as_a_mapping(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {"pythons": {"3.7": True}, "default_python": "3.7"}})
    matrix_error(path, "variants.full.pythons: ", "must be a list", "a mapping")


def test_extras_as_a_number(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "extras": 5}})
    matrix_error(path, "variants.full.extras: ", "5 is a number")


def test_extras_as_a_mapping(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "extras": {"aws": True}}})
    matrix_error(path, "variants.full.extras: ", "a mapping")


def test_in_docs_as_a_string(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[{**EVERY_PYTHON, "in_docs": "yes"}])
    matrix_error(path, "tags[0].in_docs: ", "must be true or false", "yes")


def test_image_as_a_list(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(image=["prefecthq/prefect"]), "image: ", "must be a string", "a list")


def test_variants_as_a_list(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(variants=["full"]), "variants: ", "must be a mapping", "a list")


def test_tags_as_a_mapping(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags={"latest": "full"})
    matrix_error(path, "tags: ", "must be a list", "a mapping")


def test_tag_rule_as_a_string(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(tags=["latest"]), "tags[0]: ", "must be a mapping", "latest")


def test_empty_value(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image:
        base_image: "python:{python}-slim"
        versions: ["0.14.10"]
        variants: {full: {pythons: ["3.7"]}}
        tags: [{tag: "{version}", variant: full}]
        """
    )
    matrix_error(path, ":1: image: ", "must be a string", "empty")


# --- unknown and duplicate keys --------------------------------------------------------------


def test_unknown_top_level_key_suggests_the_close_one(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        verions: ["0.14.10"]
        variants: {full: {pythons: ["3.7"]}}
        tags: [{tag: "{version}", variant: full}]
        """
    )
    message = matrix_error(path, ":3: verions: ", "unknown key 'verions'")
    assert "did you mean 'versions'?" in message


def test_unknown_key_without_close_match_lists_known_keys(
    make_matrix: Callable[..., Path],
) -> None:
    message = matrix_error(make_matrix(zzz=1), "zzz: ", "unknown key 'zzz'", "known keys:")
    assert "did you mean" not in message


def test_unknown_key_in_a_variant(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "extra": ["aws"]}})
    matrix_error(path, "variants.full.extra: ", "unknown key 'extra'", "did you mean 'extras'?")


def test_unknown_key_in_a_tag_rule(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[{**EVERY_PYTHON, "relase": "latest"}])
    matrix_error(path, "tags[0].relase: ", "unknown key 'relase'", "did you mean 'release'?")


def test_unknown_key_in_nightly(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(nightly={**NIGHTLY, "branch": "main"}, tags=[EVERY_PYTHON, MASTER])
    matrix_error(path, "nightly.branch: ", "unknown key 'branch'")


def test_duplicate_top_level_key(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        image: prefecthq/other
        base_image: "python:{python}-slim"
        versions: ["0.14.10"]
        variants: {full: {pythons: ["3.7"]}}
        tags: [{tag: "{version}", variant: full}]
        """
    )
    matrix_error(path, ":2: image: ", "given twice")


def test_duplicate_variant(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        versions: ["0.14.10"]
        variants:
          full: {pythons: ["3.7"]}
          full: {pythons: ["3.8"]}
        tags: [{tag: "{version}", variant: full}]
        """
    )
    matrix_error(path, ":6: variants.full: ", "given twice")


def test_duplicate_key_in_a_tag_rule(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        versions: ["0.14.10"]
        variants: {full: {pythons: ["3.7"]}}
        tags:
          - tag: "{version}"
            variant: full
            tag: latest
        """
    )
    matrix_error(path, ":8: tags[0].tag: ", "given twice")


# --- versions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("v0.14.10", "write '0.14.10'"),
        ("0.14.10-rc1", "write '0.14.10rc1'"),
        ("1.0.0RC1", "write '1.0.0rc1'"),
        ("1.0+local", "local version"),
        ("1!2.0", "epoch"),
        ("banana", "not a PEP 440 version"),
    ],
)
def test_invalid_version(make_matrix: Callable[..., Path], text: str, fragment: str) -> None:
    path = make_matrix(versions=["0.14.9", text])
    matrix_error(path, "versions[1]: ", repr(text), fragment)


@pytest.mark.parametrize(
    ("versions", "fragments"),
    [
        (["0.14.10", "0.14.10"], ("versions[1]: ", "'0.14.10' is listed twice")),
        (["1.0", "0.14.9", "1.0.0"], ("versions[2]: ", "'1.0.0' is listed twice", "'1.0'")),
    ],
)
def test_duplicate_version(
    make_matrix: Callable[..., Path], versions: list[str], fragments: tuple[str]
) -> None:
    matrix_error(make_matrix(versions=versions), *fragments)


def test_no_version(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(versions=[]), "versions: ", "lists no version")


def test_unquoted_version_number(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        versions:
          - "0.9.7"
          - 0.10
        variants: {full: {pythons: ["3.7"]}}
        tags: [{tag: "{version}", variant: full}]
        """
    )
    message = matrix_error(path, ":5: versions[1]: ", 'quote it as "0.10"')
    assert "0.1)" in message  # says what YAML made of it


# --- variants and pythons --------------------------------------------------------------------


def test_unquoted_python_3_10(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        versions: ["3.2.1"]
        variants:
          full:
            pythons: ["3.9", 3.10]
            default_python: "3.9"
        tags: [{tag: "{version}-python{python}", variant: full}]
        """
    )
    message = matrix_error(path, ":6: variants.full.pythons[1]: ", '"3.10"', "quote it")
    assert "3.1)" in message


def test_unquoted_default_python(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        versions: ["3.2.1"]
        variants:
          full:
            pythons: ["3.9", "3.10"]
            default_python: 3.10
        tags: [{tag: "{version}-python{python}", variant: full}]
        """
    )
    matrix_error(path, ":7: variants.full.default_python: ", 'quote it as "3.10"')


@pytest.mark.parametrize("python", ["3", "python3.8", "2.7", "3.8.1", "3.x"])
def test_not_a_python_version(make_matrix: Callable[..., Path], python: str) -> None:
    path = make_matrix(variants={"full": {"pythons": ["3.7", python], "default_python": "3.7"}})
    matrix_error(path, "variants.full.pythons[1]: ", repr(python), "is not a Python version")


def test_default_python_not_in_pythons(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {"pythons": ["3.7", "3.8"], "default_python": "3.9"}})
    matrix_error(path, "variants.full.default_python: ", "'3.9'", "3.7, 3.8")


def test_several_pythons_without_default_python(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {"pythons": ["3.7", "3.8"]}})
    matrix_error(path, "variants.full: ", "several pythons", "'default_python'")


def test_python_listed_twice(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {"pythons": ["3.7", "3.7"], "default_python": "3.7"}})
    matrix_error(path, "variants.full.pythons: ", "twice")


def test_no_python(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {"pythons": []}})
    matrix_error(path, "variants.full.pythons: ", "no Python")


def test_no_variant(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(variants={}), "variants: ", "defines no variant")


@pytest.mark.parametrize("name", ["Full", "full-images", "3full", "full_images"])
def test_bad_variant_name(make_matrix: Callable[..., Path], name: str) -> None:
    path = make_matrix(
        variants={name: {"pythons": ["3.8"]}},
        tags=[{"tag": "{version}", "variant": name}],
    )
    matrix_error(path, f"variants.{name}: ", repr(name))


@pytest.mark.parametrize("extra", ["-aws", "aws extras", "aws,gcp"])
def test_bad_extra_name(make_matrix: Callable[..., Path], extra: str) -> None:
    path = make_matrix(variants={"full": {**FULL, "extras": ["github", extra]}})
    matrix_error(path, "variants.full.extras[1]: ", repr(extra), "not a valid extra")


# --- image and base image --------------------------------------------------------------------


@pytest.mark.parametrize(
    "image", ["Prefecthq/Prefect", "prefecthq/prefect:latest", "prefecthq//prefect", "-prefect"]
)
def test_invalid_image_repository(make_matrix: Callable[..., Path], image: str) -> None:
    matrix_error(make_matrix(image=image), "image: ", repr(image), "not a valid image repository")


def test_base_image_without_python(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(base_image="python:3.8-slim")
    matrix_error(path, "base_image: ", "'python:3.8-slim'", "{python}")


def test_base_image_with_unknown_placeholder(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(base_image="python:{python}-{version}")
    matrix_error(path, "base_image: ", "unknown placeholder {version}")


def test_variant_base_image_without_python(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "base_image": "python:3.12-slim"}})
    matrix_error(path, "variants.full.base_image: ", "'python:3.12-slim'", "{python}")


def test_variant_base_image_with_unknown_placeholder(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "base_image": "python:{pyton}-slim"}})
    matrix_error(path, "variants.full.base_image: ", "unknown placeholder {pyton}")


# --- platforms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platform", "fragment"),
    [
        ("amd64", "os/architecture[/variant]"),
        ("linux/AMD64", "lowercase"),
        ("windows/amd64", "unknown os 'windows'"),
        ("linux/aarch64", "unknown architecture 'aarch64'"),
        ("linux/arm/v5", "unknown variant 'v5' of arm"),
    ],
)
def test_bad_platform(make_matrix: Callable[..., Path], platform: str, fragment: str) -> None:
    path = make_matrix(platforms=["linux/amd64", platform])
    matrix_error(path, "platforms[1]: ", repr(platform), fragment)


def test_bad_variant_platform(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "platforms": ["linux/arm64", "linux/mips"]}})
    matrix_error(path, "variants.full.platforms[1]: ", "'linux/mips'", "unknown architecture")


@pytest.mark.parametrize(
    ("platforms", "fragment"),
    [
        (["linux/amd64", "linux/arm64", "linux/amd64"], "'linux/amd64' is listed twice"),
        (
            ["linux/arm64", "linux/arm64/v8"],
            "'linux/arm64/v8' is listed twice (as 'linux/arm64', the same platform)",
        ),
        (["linux/arm", "linux/arm/v7"], "'linux/arm/v7' is listed twice (as 'linux/arm'"),
    ],
)
def test_platform_listed_twice(
    make_matrix: Callable[..., Path], platforms: list[str], fragment: str
) -> None:
    matrix_error(make_matrix(platforms=platforms), f"platforms[{len(platforms) - 1}]: ", fragment)


def test_no_platform(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(platforms=[]), "platforms: ", "lists no platform")


def test_variant_with_no_platform(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "platforms": []}})
    matrix_error(path, "variants.full.platforms: ", "lists no platform")


def test_platforms_as_a_string(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(platforms="linux/amd64"), "platforms: ", "must be a list")


def test_platform_as_a_number(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        platforms: [linux/amd64, 386]
        versions: ["0.14.10"]
        variants: {full: {pythons: ["3.7"]}}
        tags: [{tag: "{version}", variant: full}]
        """
    )
    matrix_error(path, ":3: platforms[1]: ", 'quote it as "386"')


def test_misspelt_platforms_key(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(platform=["linux/amd64"])
    matrix_error(path, "platform: ", "unknown key 'platform'", "did you mean 'platforms'?")


def test_misspelt_variant_platforms_key(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "platfroms": ["linux/arm64"]}})
    matrix_error(path, "variants.full.platfroms: ", "did you mean 'platforms'?")


# --- package ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("package", "canonical"),
    [("prefect-client", "prefect-client"), ("Prefect_Client", "prefect-client"), ("a", "a")],
)
def test_package_is_canonicalised(
    make_matrix: Callable[..., Path], package: str, canonical: str
) -> None:
    path = make_matrix(variants={"full": {**FULL, "package": package}})
    assert load(path).variant("full").package == canonical


@pytest.mark.parametrize(
    "package",
    ["prefect client", "-prefect", "prefect-", "prefect[aws]", "prefect==3.2.1", "préfect"],
)
def test_bad_package(make_matrix: Callable[..., Path], package: str) -> None:
    path = make_matrix(variants={"full": {**FULL, "package": package}})
    matrix_error(path, "variants.full.package: ", repr(package), "not a valid PyPI project name")


def test_nightly_tag_on_a_variant_of_another_package(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        nightly=NIGHTLY,
        variants={"full": {**FULL, "package": "prefect-client"}},
        tags=[EVERY_PYTHON, MASTER],
    )
    matrix_error(path, "tags[1].variant: ", "'prefect-client'", "nightly tag builds 'prefect'")


def test_misspelt_package_key(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(variants={"full": {**FULL, "packages": "prefect-client"}})
    matrix_error(path, "variants.full.packages: ", "did you mean 'package'?")


# --- tag rules -------------------------------------------------------------------------------


def test_rule_names_an_unknown_variant(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[EVERY_PYTHON, {"tag": "{version}-py{python}", "variant": "fulll"}])
    matrix_error(path, "tags[1].variant: ", "'fulll' is not a variant", "full")


def test_rule_with_unknown_release_kind(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[{**EVERY_PYTHON, "release": "newest"}])
    matrix_error(
        path, "tags[0].release: ", "'newest' is not a release kind", "latest-in-major", "nightly"
    )


def test_template_with_unknown_placeholder(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[{"tag": "{version}-py{pyhton}", "variant": "full"}])
    matrix_error(path, "tags[0].tag: ", "'{version}-py{pyhton}'", "unknown placeholder {pyhton}")


@pytest.mark.parametrize("template", ["{version", "{version}}-x{python}", "{}-{python}", "{0}"])
def test_malformed_template(make_matrix: Callable[..., Path], template: str) -> None:
    path = make_matrix(tags=[{"tag": template, "variant": "full"}])
    matrix_error(path, "tags[0].tag: ", repr(template))


def test_sha_in_a_release_rule(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[{"tag": "{version}-{sha}-python{python}", "variant": "full"}])
    matrix_error(path, "tags[0].tag: ", "unknown placeholder {sha}")


def test_version_in_a_nightly_rule(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(nightly=NIGHTLY, tags=[EVERY_PYTHON, {**MASTER, "tag": "{version}-dev"}])
    matrix_error(path, "tags[1].tag: ", "unknown placeholder {version}")


def test_nightly_rule_without_nightly_section(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[EVERY_PYTHON, MASTER])
    matrix_error(path, "tags[1].release: ", "'nightly' section")


def test_rule_without_python_on_several_pythons(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[EVERY_PYTHON, {"tag": "{version}", "variant": "full"}])
    matrix_error(path, "tags[1].tag: ", "'{version}'", "no {python}", "'full'", "python: default")


def test_core_on_two_pythons_needs_python_in_the_tag(make_matrix: Callable[..., Path]) -> None:
    # Two jobs both owning `core` raced; the last one to finish won.
    path = make_matrix(
        variants={"core": {"pythons": ["3.7", "3.8"], "default_python": "3.8"}},
        tags=[
            {"tag": "core", "variant": "core", "release": "latest"},
            {"tag": "core-{version}-python{python}", "variant": "core"},
        ],
    )
    matrix_error(path, "tags[0].tag: ", "'core' has no {python}", "variant 'core'")


def test_rule_without_python_on_one_explicit_python_is_fine(
    make_matrix: Callable[..., Path],
) -> None:
    path = make_matrix(
        tags=[EVERY_PYTHON, {"tag": "{version}", "variant": "full", "python": "3.8"}]
    )
    assert load(path).tags[1].python == ("3.8",)


def test_rule_python_not_in_variant(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[EVERY_PYTHON, {**EVERY_PYTHON, "tag": "x{python}", "python": "3.12"}])
    matrix_error(path, "tags[1].python: ", "3.12", "'full'")


def test_rule_python_not_a_python(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(tags=[{**EVERY_PYTHON, "python": "latest"}])
    matrix_error(path, "tags[0].python: ", "'latest'")


def test_no_tag_rule(make_matrix: Callable[..., Path]) -> None:
    matrix_error(make_matrix(tags=[]), "tags: ", "no tag rule")


def test_immutable_nightly_tag_outside_the_rolling_name(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        nightly=NIGHTLY,
        tags=[EVERY_PYTHON, MASTER, {**MASTER, "tag": "nightly-{date}-{sha}"}],
    )
    matrix_error(path, "'nightly-{date}-{sha}'", "must start with 'master-'")


def test_immutable_nightly_tag_must_extend_with_a_dash(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        nightly=NIGHTLY,
        tags=[EVERY_PYTHON, MASTER, {**MASTER, "tag": "master{date}{sha}"}],
    )
    matrix_error(path, "'master{date}{sha}'", "'master-'")


def test_immutable_nightly_tag_under_the_rolling_name(make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(
        nightly=NIGHTLY,
        tags=[EVERY_PYTHON, MASTER, {**MASTER, "tag": "master-{date}-{sha}", "in_docs": False}],
    )
    rules = load(path).tags
    assert [(r.template, r.rolling, r.in_docs) for r in rules[1:]] == [
        ("master", True, True),
        ("master-{date}-{sha}", False, False),
    ]


def test_error_points_at_the_offending_line(write_yaml: Callable[..., Path]) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        versions:
          - "0.14.9"
          - "0.14.10"
          - "v0.14.11"
        variants: {full: {pythons: ["3.7"]}}
        tags: [{tag: "{version}", variant: full}]
        """
    )
    matrix_error(path, f"{path}:6: versions[2]: 'v0.14.11'")

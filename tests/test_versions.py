"""publisher.versions: canonical PEP 440 parsing, ordering and stability."""

from __future__ import annotations

import random

import pytest
from packaging.version import Version

from publisher.versions import is_stable, parse_version, version_fields


@pytest.mark.parametrize(
    "text",
    ["0.14.10", "0.14.9", "1.0", "1.0rc1", "3.0.0rc1", "2.10.0.dev1", "0.14.10.post1", "1.0a1"],
)
def test_canonical_versions_parse(text: str) -> None:
    version = parse_version(text)
    assert isinstance(version, Version)
    assert str(version) == text


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("v0.14.10", "0.14.10"),
        ("V0.14.10", "0.14.10"),
        ("0.14.10-rc1", "0.14.10rc1"),
        ("1.0.0RC1", "1.0.0rc1"),
        ("1.0-alpha1", "1.0a1"),
        ("0.14.10-post1", "0.14.10.post1"),
        ("0.14.010", "0.14.10"),
        (" 0.14.10", "0.14.10"),
    ],
)
def test_non_canonical_versions_are_rejected_with_the_canonical_form(
    text: str, canonical: str
) -> None:
    with pytest.raises(ValueError) as info:
        parse_version(text)
    message = str(info.value)
    assert repr(text) in message
    assert f"write {canonical!r}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("1.0+local", "local version"),
        ("0.14.10+ubuntu.1", "local version"),
        ("1!2.0", "epoch"),
        ("banana", "not a PEP 440 version"),
        ("", "not a PEP 440 version"),
        ("0.14.x", "not a PEP 440 version"),
    ],
)
def test_versions_no_release_carries_are_rejected(text: str, why: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_version(text)
    message = str(info.value)
    assert repr(text) in message
    assert why in message
    # There is no canonical spelling to suggest for these.
    assert "write " not in message


def test_numeric_not_lexical_ordering() -> None:
    assert parse_version("0.14.10") > parse_version("0.14.9")
    assert parse_version("0.14.22") > parse_version("0.14.3")
    assert parse_version("1.0") > parse_version("0.99.99")


def test_prereleases_sort_before_their_release_and_post_after() -> None:
    ordered = ["1.0.dev1", "1.0a1", "1.0b2", "1.0rc1", "1.0", "1.0.post1", "1.0.1"]
    shuffled = ordered[:]
    random.Random(7).shuffle(shuffled)
    assert [str(v) for v in sorted(parse_version(t) for t in shuffled)] == ordered


def test_trailing_zeros_are_the_same_release() -> None:
    assert parse_version("1.0") == parse_version("1.0.0")
    assert hash(parse_version("1.0")) == hash(parse_version("1.0.0"))


@pytest.mark.parametrize(
    ("text", "stable"),
    [
        ("0.14.10", True),
        ("1.0", True),
        ("0.14.10.post1", True),  # a post release is a re-release of a stable one
        ("1.0rc1", False),
        ("3.0.0rc1", False),
        ("1.0a1", False),
        ("1.0b2", False),
        ("2.10.0.dev1", False),
        ("1.0.post1.dev0", False),
    ],
)
def test_is_stable(text: str, stable: bool) -> None:
    assert is_stable(parse_version(text)) is stable


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("0.14.10", {"version": "0.14.10", "major": "0", "minor": "14", "micro": "10"}),
        ("3.2.1", {"version": "3.2.1", "major": "3", "minor": "2", "micro": "1"}),
        ("1.0rc1", {"version": "1.0rc1", "major": "1", "minor": "0", "micro": "0"}),
        ("3", {"version": "3", "major": "3", "minor": "0", "micro": "0"}),
        ("2.10.0.dev1", {"version": "2.10.0.dev1", "major": "2", "minor": "10", "micro": "0"}),
    ],
)
def test_version_fields(text: str, fields: dict[str, str]) -> None:
    assert version_fields(parse_version(text)) == fields

"""publisher.platforms: platform strings parsed, normalised, and mapped to platform.machine()."""

from __future__ import annotations

import dataclasses

import pytest

from publisher.platforms import DEFAULT_PLATFORMS, Platform, machine_of, normalise


@pytest.mark.parametrize(
    ("text", "os", "architecture", "variant"),
    [
        ("linux/amd64", "linux", "amd64", ""),
        ("linux/arm64", "linux", "arm64", ""),
        ("linux/arm/v7", "linux", "arm", "v7"),
        ("linux/arm/v6", "linux", "arm", "v6"),
        ("linux/386", "linux", "386", ""),
        ("linux/ppc64le", "linux", "ppc64le", ""),
        ("linux/s390x", "linux", "s390x", ""),
        ("linux/riscv64", "linux", "riscv64", ""),
        ("linux/amd64/v3", "linux", "amd64", "v3"),
    ],
)
def test_parse(text: str, os: str, architecture: str, variant: str) -> None:
    platform = Platform.parse(text)
    assert (platform.os, platform.architecture, platform.variant) == (os, architecture, variant)
    assert str(platform) == text


@pytest.mark.parametrize(
    ("text", "normal"),
    [
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64", "linux/amd64"),
    ],
)
def test_normalise_like_containerd(text: str, normal: str) -> None:
    assert normalise(text) == normal
    assert Platform.parse(text) == Platform.parse(normal)


@pytest.mark.parametrize(
    ("text", "machine"),
    [
        ("linux/amd64", "x86_64"),
        ("linux/arm64", "aarch64"),
        ("linux/arm64/v8", "aarch64"),
        ("linux/arm/v7", "armv7l"),
        ("linux/arm", "armv7l"),
        ("linux/arm/v6", "armv6l"),
        ("linux/386", "i686"),
        ("linux/ppc64le", "ppc64le"),
        ("linux/s390x", "s390x"),
        ("linux/riscv64", "riscv64"),
    ],
)
def test_machine(text: str, machine: str) -> None:
    assert Platform.parse(text).machine == machine
    assert machine_of(text) == machine


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("amd64", "os/architecture[/variant]"),
        ("Linux/AMD64", "lowercase"),
        ("linux/amd64/", "os/architecture[/variant]"),
        ("linux/arm/v7/x", "os/architecture[/variant]"),
        ("linux amd64", "os/architecture[/variant]"),
        ("windows/amd64", "unknown os 'windows'"),
        ("darwin/arm64", "unknown os 'darwin'"),
        ("linux/x86_64", "unknown architecture 'x86_64' (known: amd64, arm64"),
        ("linux/aarch64", "unknown architecture 'aarch64'"),
        ("linux/mips64le", "unknown architecture 'mips64le'"),
        ("linux/arm64/v7", "unknown variant 'v7' of arm64 (variants: none)"),
        ("linux/arm/v5", "unknown variant 'v5' of arm (variants: one of v6, v7, v8)"),
        ("linux/386/v2", "unknown variant 'v2' of 386"),
    ],
)
def test_parse_refuses(text: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Platform.parse(text)
    message = str(info.value)
    assert repr(text) in message
    assert fragment in message
    assert "\n" not in message


def test_platform_is_frozen_and_keyword_only() -> None:
    platform = Platform(os="linux", architecture="arm64")
    assert platform.variant == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        platform.os = "windows"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Platform("linux", "arm64")  # type: ignore[misc]


def test_default_platforms() -> None:
    assert DEFAULT_PLATFORMS == ("linux/amd64",)

"""Pinning a base image to one platform: reference parsing (pure) and the lookup against a
real registry holding an index and a single-platform image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from registry_server import run_registry
from tiny_image import push_image

from publisher.bases import Reference, pin
from publisher.errors import BuildError
from publisher.registry import RegistryClient


@pytest.mark.parametrize(
    ("text", "name", "host", "path", "ref"),
    [
        ("python:3.13-slim", "python", "docker.io", "library/python", "3.13-slim"),
        ("python", "python", "docker.io", "library/python", "latest"),
        ("acme/python:3", "acme/python", "docker.io", "acme/python", "3"),
        (
            "localhost:5000/x/python:3.13-slim",
            "localhost:5000/x/python",
            "localhost:5000",
            "x/python",
            "3.13-slim",
        ),
        ("ghcr.io/a/b@sha256:ab", "ghcr.io/a/b", "ghcr.io", "a/b", "sha256:ab"),
        ("localhost/python:1@sha256:cd", "localhost/python", "localhost", "python", "sha256:cd"),
    ],
)
def test_reference_parse(text: str, name: str, host: str, path: str, ref: str) -> None:
    assert Reference.parse(text) == Reference(name=name, host=host, path=path, ref=ref)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with run_registry(tmp_path / "registry") as host:
        yield host


@pytest.mark.registry
def test_pin_picks_the_platform_image_of_an_index(registry: str) -> None:
    amd = push_image(registry, "base/python", "amd", architecture="amd64")
    arm = push_image(registry, "base/python", "arm", architecture="arm64")
    with RegistryClient(registry) as client:
        client.put_index(
            "base/python", "3.13-slim", [("linux/amd64", amd), ("linux/arm64/v8", arm)]
        )

    name = f"{registry}/base/python"
    assert pin(f"{name}:3.13-slim", "linux/amd64") == f"{name}@{amd}"
    assert pin(f"{name}:3.13-slim", "linux/arm64") == f"{name}@{arm}"  # any variant
    with pytest.raises(BuildError, match=r"has no linux/s390x image \(it has: linux/amd64, "):
        pin(f"{name}:3.13-slim", "linux/s390x")


@pytest.mark.registry
def test_pin_accepts_a_single_image_of_the_right_platform_only(registry: str) -> None:
    arm = push_image(registry, "base/python", "arm", architecture="arm64")
    name = f"{registry}/base/python"
    assert pin(f"{name}:arm", "linux/arm64") == f"{name}@{arm}"
    with pytest.raises(BuildError, match="is a single linux/arm64 image, not an index with"):
        pin(f"{name}:arm", "linux/amd64")


@pytest.mark.registry
def test_pin_of_an_unknown_base_is_one_build_error(registry: str) -> None:
    with pytest.raises(BuildError, match=r"cannot read base image .*absent.* for linux/arm64"):
        pin(f"{registry}/base/absent:1", "linux/arm64")

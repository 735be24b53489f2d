"""debs.py without a daemon: the architecture apt is told, the cache per base, and errors.
Fetching for real (apt in the base image, dpkg in the build) is covered end to end: every
e2e publish builds its core images from what it fetches, and test_publish checks that tini
is PID 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from publisher import debs, docker_client
from publisher.errors import BuildError


class FakeApt:
    """Stands in for `docker run` of the fetch script: writes one .deb per package."""

    def __init__(self, code: int = 0, output: str = "") -> None:
        self.calls: list[dict[str, Any]] = []
        self.code = code
        self.output = output

    def __call__(
        self, client: object, image: str, command: list[str], **kw: Any
    ) -> tuple[int, str]:
        self.calls.append({"image": image, "command": command, **kw})
        if self.code == 0:
            (mount,) = kw["volumes"]
            architecture = kw["env"].get("ARCH", "own")
            for package in command[command.index("fetch") + 1 :]:
                (Path(mount) / f"{package}_1.0_{architecture}.deb").write_bytes(b"!<arch>\n")
        return self.code, self.output


@pytest.fixture
def apt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeApt:
    fake = FakeApt()
    monkeypatch.setattr(docker_client, "run", fake)
    monkeypatch.setattr(debs, "CACHE", tmp_path / "cache")
    return fake


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("linux/amd64", "amd64"),
        ("linux/arm64", "arm64"),
        ("linux/arm64/v8", "arm64"),
        ("linux/arm/v7", "armhf"),
        ("linux/arm/v6", "armel"),
        ("linux/386", "i386"),
        ("linux/ppc64le", "ppc64el"),
        ("linux/s390x", "s390x"),
    ],
)
def test_debian_names_the_architecture_its_own_way(platform: str, expected: str) -> None:
    assert debs.debian_architecture(platform) == expected


def test_an_architecture_debian_does_not_build_is_a_clear_error() -> None:
    with pytest.raises(BuildError, match="no Debian architecture is known for linux/arm/v8"):
        debs.debian_architecture("linux/arm/v8")


def test_a_foreign_platform_s_packages_are_fetched_by_the_native_apt(
    apt: FakeApt, tmp_path: Path
) -> None:
    found = debs.fetch(
        object(),  # type: ignore[arg-type]
        image="python@sha256:amd",
        identity="sha256:arm",
        dest=tmp_path / "context" / "debs",
        platform="linux/arm64",
    )
    assert [p.name for p in found] == ["tini_1.0_arm64.deb"]
    assert found[0].parent == tmp_path / "context" / "debs"
    (call,) = apt.calls
    assert call["image"] == "python@sha256:amd"
    assert call["env"] == {"ARCH": "arm64"}
    assert call["command"][-2:] == ["fetch", "tini"]


def test_without_a_platform_the_image_fetches_its_own(apt: FakeApt, tmp_path: Path) -> None:
    debs.fetch(object(), image="base", identity="sha256:b", dest=tmp_path / "d")  # type: ignore[arg-type]
    assert apt.calls[0]["env"] == {}


def test_a_base_s_packages_are_fetched_once(apt: FakeApt, tmp_path: Path) -> None:
    def fetch(identity: str, dest: str, platform: str = "linux/arm64") -> list[str]:
        return [
            p.name
            for p in debs.fetch(
                object(),  # type: ignore[arg-type]
                image="native",
                identity=identity,
                dest=tmp_path / dest,
                platform=platform,
            )
        ]

    assert fetch("sha256:one", "a") == fetch("sha256:one", "b") == ["tini_1.0_arm64.deb"]
    assert len(apt.calls) == 1
    # Another base, or the same base for another platform, is fetched for itself.
    fetch("sha256:two", "c")
    fetch("sha256:one", "d", platform="linux/amd64")
    assert len(apt.calls) == 3


def test_a_failed_fetch_names_the_packages_and_caches_nothing(apt: FakeApt, tmp_path: Path) -> None:
    apt.code, apt.output = 100, "Reading package lists...\nE: Unable to locate package tini\n"

    def fetch() -> list[Path]:
        return debs.fetch(
            object(),  # type: ignore[arg-type]
            image="native",
            identity="sha256:one",
            dest=tmp_path / "d",
            platform="linux/arm64",
        )

    with pytest.raises(BuildError) as raised:
        fetch()
    assert str(raised.value) == (
        "cannot fetch tini for arm64 with the apt of native: "
        "Reading package lists... | E: Unable to locate package tini"
    )
    assert list((tmp_path / "cache").iterdir()) == []
    # The next run tries again.
    apt.code = 0
    assert [p.name for p in fetch()] == ["tini_1.0_arm64.deb"]
    assert len(apt.calls) == 2

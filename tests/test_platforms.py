"""What a Python on each platform reports as its machine."""

from __future__ import annotations

import pytest

from publisher.platforms import machine_of


@pytest.mark.parametrize(
    ("platform", "machine"),
    [
        ("linux/amd64", "x86_64"),
        ("linux/arm64", "aarch64"),
        ("linux/arm64/v8", "aarch64"),
        ("linux/arm/v7", "armv7l"),
        ("linux/arm/v6", "armv6l"),
        ("linux/386", "i686"),
        ("linux/ppc64le", "ppc64le"),
        ("linux/s390x", "s390x"),
    ],
)
def test_machine_of(platform: str, machine: str) -> None:
    assert machine_of(platform) == machine

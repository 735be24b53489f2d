"""Image platforms (``linux/amd64``, ``linux/arm/v7``): parsed, checked and normalised.

Pure. The matrix uses :func:`Platform.parse` to refuse a platform Docker would not build
for; the smoke test uses :attr:`Platform.machine` to check that an image really runs on
the platform it claims (``platform.machine()`` inside it).

Spellings are normalised as containerd normalises them (``linux/arm64/v8`` is
``linux/arm64``, ``linux/arm`` is ``linux/arm/v7``, ``linux/amd64/v1`` is ``linux/amd64``),
so one platform has one name in the plan, the docs and the image index, and two spellings
of it in a matrix are caught as a duplicate.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PLATFORM = "linux/amd64"
DEFAULT_PLATFORMS: tuple[str, ...] = (DEFAULT_PLATFORM,)

OPERATING_SYSTEMS = ("linux",)

# architecture -> (the variants it may have, ``platform.machine()`` for each; "" = none).
# The smoke test compares platform.machine() (uname -m): an image that says arm64 but runs
# x86_64 code was built from the wrong base.
_ARCHITECTURES: dict[str, dict[str, str]] = {
    "amd64": {"": "x86_64", "v2": "x86_64", "v3": "x86_64", "v4": "x86_64"},
    "arm64": {"": "aarch64"},
    "arm": {"v6": "armv6l", "v7": "armv7l", "v8": "armv8l"},
    "386": {"": "i686"},
    "ppc64le": {"": "ppc64le"},
    "s390x": {"": "s390x"},
    "riscv64": {"": "riscv64"},
}
ARCHITECTURES = tuple(_ARCHITECTURES)

# Spellings that name the same platform as a shorter or more explicit one.
_ALIASES = {
    ("amd64", "v1"): ("amd64", ""),
    ("arm64", "v8"): ("arm64", ""),
    ("arm", ""): ("arm", "v7"),
}

_SHAPE = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(?:/[a-z0-9_]+)?$")


@dataclass(frozen=True, kw_only=True)
class Platform:
    """One OCI platform; ``variant`` is "" when the architecture has none."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``os/arch[/variant]``, lowercase; normalised. ValueError says what is wrong."""
        if not _SHAPE.match(text):
            raise ValueError(
                f"{text!r} is not a platform; write os/architecture[/variant] in lowercase, "
                f"e.g. {DEFAULT_PLATFORM!r} or 'linux/arm/v7'"
            )
        os_name, architecture, *rest = text.split("/")
        variant = rest[0] if rest else ""
        if os_name not in OPERATING_SYSTEMS:
            raise ValueError(
                f"{text!r}: unknown os {os_name!r} (known: {', '.join(OPERATING_SYSTEMS)})"
            )
        if architecture not in _ARCHITECTURES:
            raise ValueError(
                f"{text!r}: unknown architecture {architecture!r} "
                f"(known: {', '.join(ARCHITECTURES)})"
            )
        architecture, variant = _ALIASES.get((architecture, variant), (architecture, variant))
        if variant not in _ARCHITECTURES[architecture]:
            known = [v for v in _ARCHITECTURES[architecture] if v]
            allowed = f"one of {', '.join(known)}" if known else "none"
            raise ValueError(
                f"{text!r}: unknown variant {variant!r} of {architecture} (variants: {allowed})"
            )
        return cls(os=os_name, architecture=architecture, variant=variant)

    def __str__(self) -> str:
        parts = [self.os, self.architecture, *([self.variant] if self.variant else [])]
        return "/".join(parts)

    @property
    def machine(self) -> str:
        """What ``platform.machine()`` reports in a Python running on this platform."""
        return _ARCHITECTURES[self.architecture][self.variant]


def normalise(text: str) -> str:
    """The one spelling of a platform (``linux/arm64/v8`` -> ``linux/arm64``)."""
    return str(Platform.parse(text))


def machine_of(platform: str) -> str:
    """``uname -m`` on ``platform``: linux/arm64 -> aarch64, linux/arm/v7 -> armv7l."""
    return Platform.parse(platform).machine


def platform_of(machine: str) -> str:
    """The platform a daemon on ``machine`` (``uname -m``) runs natively: x86_64 ->
    linux/amd64, aarch64 -> linux/arm64. ValueError for a machine no platform runs as."""
    for architecture, variants in _ARCHITECTURES.items():
        for variant, name in variants.items():
            if name == machine:
                return normalise(f"linux/{architecture}" + (f"/{variant}" if variant else ""))
    raise ValueError(f"no platform runs as machine {machine!r}")

"""Platform names ("linux/arm64") and what a program running on one reports. Pure."""

from __future__ import annotations

DEFAULT_PLATFORM = "linux/amd64"

# platform.machine() of a Python on each architecture (uname -m), which the smoke test
# compares: an image that says arm64 but runs x86_64 code was built from the wrong base.
_MACHINES = {
    "amd64": "x86_64",
    "arm64": "aarch64",
    "386": "i686",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def machine_of(platform: str) -> str:
    """``uname -m`` on ``platform``: linux/arm64 -> aarch64, linux/arm/v7 -> armv7l."""
    _os, _, rest = platform.partition("/")
    architecture, _, variant = rest.partition("/")
    if architecture == "arm":
        return f"armv{variant.removeprefix('v') or '7'}l"
    return _MACHINES.get(architecture, architecture)

"""Prefect release versions: PEP 440 parsing, ordering and stability.

Prefect versions are PEP 440 (``3.0.0rc1``, ``1.0rc1``, ``2.10.0.dev1``), which semver
rejects, so ordering uses :mod:`packaging.version`. A version must be written in its
canonical form: ``v0.14.10`` or ``0.14.10-rc1`` would parse, but the tag a user types
would then differ from the one we publish, which is how tags that "did not exist" were
made in the past.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version


def parse_version(text: str) -> Version:
    """Parse a canonical PEP 440 release version or raise ValueError saying why."""
    try:
        version = Version(text)
    except InvalidVersion:
        raise ValueError(f"{text!r} is not a PEP 440 version") from None
    if version.local is not None:
        raise ValueError(f"{text!r} has a local version label, which no release carries")
    if version.epoch:
        # Epochs are legal PEP 440 but Prefect never used one, and "1!2.0" cannot be a tag.
        raise ValueError(f"{text!r} has an epoch, which no release carries")
    if str(version) != text:
        raise ValueError(f"{text!r} is not written canonically; write {str(version)!r}")
    return version


def is_stable(version: Version) -> bool:
    """Stable releases may own rolling tags; a, b, rc and dev releases never do."""
    return not (version.is_prerelease or version.is_devrelease)


def version_fields(version: Version) -> dict[str, str]:
    """Placeholders a tag template may use for a release."""
    major, minor, micro = (*version.release, 0, 0)[:3]
    return {
        "version": str(version),
        "major": str(major),
        "minor": str(minor),
        "micro": str(micro),
    }

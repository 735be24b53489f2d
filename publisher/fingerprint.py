"""Fingerprints of an image's build inputs, stored as a label on the image.

The fingerprint covers everything that decides what gets built *before* anything is
resolved or built: the Dockerfile and context files, the build arguments, the base
image's identity and, for a full image, its core image's fingerprint. Reading it back
from the registry costs one manifest and one config request, so a republish of
unchanged images needs neither a build nor a package resolution.

The packages pip resolved to are recorded beside it (LABEL_PACKAGES) but are not part
of it: a released image is not rebuilt because a dependency published a new version
since, which is what keeps an immutable tag immutable. ``--force`` rebuilds anyway.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

LABEL_FINGERPRINT = "io.prefect.publisher.fingerprint"
LABEL_PACKAGES = "io.prefect.publisher.packages"

# Bumped when the meaning of the inputs changes (a new build step outside the files).
FORMAT = "1"


def of_inputs(
    *,
    files: Mapping[str, bytes],
    buildargs: Mapping[str, str],
    base: str,
    parent: str | None = None,
) -> str:
    payload = {
        "format": FORMAT,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
        "buildargs": dict(sorted(buildargs.items())),
        "base": base,
        "parent": parent,
    }
    encoded = json.dumps(payload, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def of_packages(wheels: Iterable[Path]) -> str:
    """The resolved package set, by wheel file name (name, version and tags)."""
    names = "\n".join(sorted(w.name for w in wheels))
    return "sha256:" + hashlib.sha256(names.encode()).hexdigest()

"""Where a platform image waits in the registry until its index is written.

The daemon pushes by tag only, so each platform image of a multi-platform release is pushed
under a staging tag first; the index that lists them is then written under the release's
tags, and only then do those tags exist. Staging tags start with a prefix no planned tag
may use, so they never name a release. Registries on the distribution API cannot delete a
tag without deleting the manifest the index needs, so staging tags stay; being derived from
the anchor tag, a rerun or a --replace overwrites them rather than adding more.
"""

from __future__ import annotations

import hashlib

PREFIX = "_stage-"
_MAX_TAG = 128


def staging_tag(anchor: str, platform: str) -> str:
    """The staging tag of one platform image of the image whose first tag is ``anchor``."""
    suffix = "-" + platform.replace("/", "-")
    tag = PREFIX + anchor + suffix
    if len(tag) <= _MAX_TAG:
        return tag
    # Too long for a tag: the anchor's hash still names exactly one image.
    return PREFIX + hashlib.sha256(anchor.encode()).hexdigest()[:32] + suffix


def is_staging(tag: str) -> bool:
    return tag.startswith(PREFIX)

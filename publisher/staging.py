"""Tags that name images on their way to a release, never a release.

Every image is uploaded under one such tag, ``upload.UPLOAD_TAG``, and is known by its
digest from then on. A shard that builds only some platforms of an image also names each
of its platform images with a tag of its own, derived from the image's anchor tag: the
record in the registry from which `promote`, on another machine, writes the index. Staging
tags start with a prefix no planned tag may use. Registries on the distribution API cannot
delete a tag without deleting the manifest an index needs, so staging tags stay; being
derived from the anchor, a rerun or a --replace overwrites them rather than adding more.
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

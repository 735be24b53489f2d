"""What a publish will do to each planned tag, decided from what the registry holds. Pure.

The registry is the record of what was released:
- an immutable tag that exists is never overwritten, unless its image is named by
  ``--replace`` (no-clobber); a published image's missing immutable aliases are added;
- a rolling tag never moves to an older release than the one it names now (no-downgrade),
  unless ``--allow-downgrade``; nightly tags follow their ref and are exempt.
Publishing, ``publish --dry-run`` and ``publisher diff`` all decide here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from packaging.version import InvalidVersion, Version

from .errors import SelectionError
from .plan import Image, Plan


class Action(str, Enum):
    CREATE = "create"
    KEEP = "keep"
    ADD_ALIAS = "add alias"
    MOVE = "move"
    REPLACE = "replace"
    KEEP_NEWER = "keep: the registry holds a newer release"
    KEEP_OTHER = "keep: names another image (--replace moves it)"
    STALE_KEPT = "stale (kept)"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, kw_only=True)
class Holdings:
    """What the destination's tags name now: tag -> digest, None when absent."""

    digests: Mapping[str, str | None]

    def of(self, tag: str) -> str | None:
        return self.digests.get(tag)


@dataclass(frozen=True, kw_only=True)
class Work:
    """One planned image and what the registry says must happen to it."""

    image: Image
    published: str | None  # the digest its immutable tags name, when published
    replace: bool = False  # rebuild and move its immutable tags (--replace)

    @property
    def build(self) -> bool:
        return self.published is None or self.replace


def work_list(plan: Plan, holdings: Holdings, replace: Sequence[str] = ()) -> list[Work]:
    """Each image with its published digest; ``replace`` globs name images to rebuild."""
    _check_globs(plan, replace)
    return [
        Work(
            image=image,
            published=published_digest(image, holdings),
            replace=any(fnmatch.fnmatchcase(image.id, p) for p in replace),
        )
        for image in plan.images
    ]


def published_digest(image: Image, holdings: Holdings) -> str | None:
    """The image is published when any of its immutable tags exists; the first one found
    names it (a tag rule added later only adds aliases)."""
    for tag in image.immutable_tags:
        digest = holdings.of(tag)
        if digest is not None:
            return digest
    return None


def immutable_action(work: Work, tag: str, holdings: Holdings) -> Action:
    now = holdings.of(tag)
    if work.replace:
        return Action.REPLACE if now is not None else Action.CREATE
    if work.published is None:
        return Action.CREATE
    if now is None:
        return Action.ADD_ALIAS
    if now != work.published:
        return Action.KEEP_OTHER
    return Action.KEEP


def rolling_action(
    image: Image,
    *,
    now: str | None,
    now_version: str | None,
    target: str | None,
    allow_downgrade: bool = False,
) -> Action:
    """``target`` is the digest the tag would name (None: an image still to be built);
    ``now_version`` the Prefect version label of the image it names now."""
    if now is None:
        return Action.CREATE
    if target is not None and now == target:
        return Action.KEEP
    if image.nightly or allow_downgrade:
        return Action.MOVE
    if _newer(now_version, image.prefect_version):
        return Action.KEEP_NEWER
    return Action.MOVE


def _newer(held: str | None, planned: str) -> bool:
    """True when the release a tag names now is newer than the planned one.

    An unreadable version counts as older: the tag moves, as it would have before.
    """
    if held is None:
        return False
    try:
        return Version(held) > Version(planned)
    except InvalidVersion:
        return False


def _check_globs(plan: Plan, patterns: Sequence[str]) -> None:
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(image.id, pattern) for image in plan.images):
            raise SelectionError(f"--replace {pattern!r} matches no planned image")

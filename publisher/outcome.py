"""What happened to each planned image, and the one place that decides how that changes.

A run moves every image through a few states; `Outcome.advance` refuses any step the
table below does not allow, so a status can never say more than what really happened
(an image is never "pushed" without having been "tested" first, say).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .plan import Image


class Status(str, Enum):
    PLANNED = "planned"
    DRY_RUN = "dry run"
    PUBLISHED = "published"  # the registry already holds it: kept, not rebuilt
    TESTED = "tested"  # built (or found built on this daemon) and smoke-tested
    FAILED = "failed"
    # tested (maybe uploaded under the staging tag), but another image failed, so no tag
    # was written
    NOT_PUSHED = "not released"
    BUILT = "built"  # tagged in the local daemon only (`publisher build`)
    # pushed under staging tags only (a platform shard): `promote` writes its tags
    STAGED = "staged"
    PUSHED = "pushed"
    REPLACED = "replaced"  # pushed over the immutable tags of an earlier image

    def __str__(self) -> str:
        return self.value


_NEXT: dict[Status, frozenset[Status]] = {
    Status.PLANNED: frozenset(
        # STAGED: `promote` found every platform image staged by the shards
        {Status.DRY_RUN, Status.PUBLISHED, Status.TESTED, Status.FAILED, Status.STAGED}
    ),
    Status.TESTED: frozenset(
        {
            Status.NOT_PUSHED,
            Status.BUILT,
            Status.STAGED,
            Status.PUSHED,
            Status.REPLACED,
            Status.FAILED,
        }
    ),
    Status.STAGED: frozenset({Status.PUSHED}),
    Status.PUBLISHED: frozenset(),
    Status.DRY_RUN: frozenset(),
    Status.FAILED: frozenset(),
    Status.NOT_PUSHED: frozenset(),
    Status.BUILT: frozenset(),
    Status.PUSHED: frozenset(),
    Status.REPLACED: frozenset(),
}


@dataclass
class Outcome:
    image: Image
    status: Status = Status.PLANNED
    error: str = ""
    local_id: str = ""
    # platform -> local image id, for an image built for named platforms (one index)
    parts: dict[str, str] = field(default_factory=dict)
    # platform -> digest in the registry, uploaded while other images built, not yet tagged
    uploaded: dict[str, str] = field(default_factory=dict)
    size: int = 0
    digest: str = ""
    seconds: float = 0.0

    def advance(self, status: Status, *, error: str = "") -> None:
        if status not in _NEXT[self.status]:
            raise ValueError(f"{self.image.id}: cannot go from {self.status} to {status}")
        self.status = status
        self.error = error

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED

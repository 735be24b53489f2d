"""Read-only views of a destination: `publisher status` and `publisher diff`.

status: for each planned image, is it missing, published, or stale (published from
inputs that differ from today's: the inputs are recorded in its labels, so it says which).
diff: for each planned tag, what the registry holds now and what a publish would make
of it. Neither writes anything; both decide with the same code as `publish` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import bases, changes, labels
from .changes import Action, Holdings, Work
from .inputs import Inputs
from .inputs import changes as input_changes
from .plan import Image, Plan
from .platforms import DEFAULT_PLATFORM
from .publish import Options, Registry, survey, version_of
from .recipe import Sources, recipe_for

# base image reference -> its identity (registry digest or local id), as the build sees it
BaseIdentity = Callable[[str], str]


@dataclass(frozen=True, kw_only=True)
class ImageStatus:
    image: Image
    state: str  # "missing", "published" or "stale"
    digest: str | None = None
    version: str | None = None
    causes: tuple[str, ...] = ()
    # what the registry holds: the platforms its index lists, () for a single image
    platforms: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image.id,
            "state": self.state,
            "digest": self.digest,
            "version": self.version,
            "platforms": list(self.platforms),
            "planned_platforms": list(self.image.platforms),
            "changes": list(self.causes),
        }


@dataclass(frozen=True, kw_only=True)
class Today:
    """What an image would be built from today."""

    sources: Sources
    base_for: Callable[[Image], str]
    base_identity: BaseIdentity
    # (base, platform) -> "NAME@DIGEST" of the base's image for that platform (bases.pin)
    pin_base: Callable[[str, str], str] = bases.pin


def status(registry: Registry, repo: str, the_plan: Plan, today: Today) -> list[ImageStatus]:
    holdings = survey(registry, repo, [t for i in the_plan.images for t in i.immutable_tags])
    return [_status_of(registry, repo, image, holdings, today) for image in the_plan.images]


def _status_of(
    registry: Registry, repo: str, image: Image, holdings: Holdings, today: Today
) -> ImageStatus:
    digest = changes.published_digest(image, holdings)
    if digest is None:
        return ImageStatus(image=image, state="missing")
    held = registry.platform_images(repo, digest)
    found = registry.labels(repo, digest)
    if image.platforms == (DEFAULT_PLATFORM,) and held is None:
        base = today.base_for(image)
        causes = _changes(found, image, base, today.base_identity(base), today)
    else:
        causes = _platform_changes(registry, repo, image, digest, held, today)
    return ImageStatus(
        image=image,
        state="stale" if causes else "published",
        digest=digest,
        version=found.get(labels.VERSION),
        causes=tuple(causes),
        platforms=tuple(held or ()),
    )


def _changes(
    found: dict[str, str], image: Image, base: str, base_id: str, today: Today
) -> list[str]:
    recorded = Inputs.from_label(found.get(labels.INPUTS))
    if recorded is None:
        return ["its build inputs are not recorded in its labels"]
    now = recipe_for(image, base=base, base_id=base_id, sources=today.sources)
    return input_changes(recorded, now.inputs)


def _platform_changes(
    registry: Registry,
    repo: str,
    image: Image,
    digest: str,
    held: dict[str, str] | None,
    today: Today,
) -> list[str]:
    """Each planned platform's image against today's inputs for that platform."""
    if held is None:
        return [
            f"published for one platform, planned for {', '.join(image.platforms)} "
            "(--replace rebuilds it as an index)"
        ]
    causes = []
    if list(held) != list(image.platforms):
        causes.append(f"platforms {', '.join(held)} -> {', '.join(image.platforms)}")
    for platform in image.platforms:
        if platform not in held:
            continue
        found = registry.labels(repo, held[platform])
        pinned = today.pin_base(today.base_for(image), platform)
        base_id = pinned.rsplit("@", 1)[1]
        causes += [
            f"{platform}: {cause}" for cause in _changes(found, image, pinned, base_id, today)
        ]
    return causes


@dataclass(frozen=True, kw_only=True)
class TagChange:
    tag: str
    image: Image
    action: Action
    now: str | None  # digest
    now_version: str | None = None
    after: str | None = None  # digest; None while the image is still to be built
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "image": self.image.id,
            "action": self.action.value,
            "now": self.now,
            "now_version": self.now_version,
            "after": self.after,
            "after_version": self.image.prefect_version,
            "platforms": list(self.image.platforms),
            "detail": self.detail,
        }


def diff(
    registry: Registry,
    repo: str,
    work: list[Work],
    holdings: Holdings,
    *,
    allow_downgrade: bool = False,
    stale: dict[str, ImageStatus] | None = None,
) -> list[TagChange]:
    rows: list[TagChange] = []
    for item in work:
        image = item.image
        after = None if item.build else item.published
        state = (stale or {}).get(image.id)
        for tag in image.immutable_tags:
            action = changes.immutable_action(item, tag, holdings)
            detail = ""
            if action is Action.KEEP and state is not None and state.state == "stale":
                action, detail = Action.STALE_KEPT, "; ".join(state.causes)
            rows.append(
                TagChange(
                    tag=tag,
                    image=image,
                    action=action,
                    now=holdings.of(tag),
                    after=after,
                    detail=detail,
                )
            )
        for tag in image.rolling_tags:
            now = holdings.of(tag)
            held = None
            if now is not None and now != after:
                held = version_of(registry, repo, now)
            action = changes.rolling_action(
                image, now=now, now_version=held, target=after, allow_downgrade=allow_downgrade
            )
            rows.append(
                TagChange(
                    tag=tag, image=image, action=action, now=now, now_version=held, after=after
                )
            )
    return rows


def release_diff(
    registry: Registry, repo: str, the_plan: Plan, options: Options, today: Today | None
) -> list[TagChange]:
    """What `publish` with ``options`` would do to every planned tag; ``today`` (None
    without a daemon to identify base images) adds which kept images are stale."""
    holdings = survey(registry, repo, [t.name for i in the_plan.images for t in i.tags])
    work = changes.work_list(the_plan, holdings, options.replace)
    stale = None
    if today is not None:
        stale = {s.image.id: s for s in status(registry, repo, the_plan, today)}
    return diff(
        registry, repo, work, holdings, allow_downgrade=options.allow_downgrade, stale=stale
    )


def diff_table_rows(rows: list[TagChange]) -> list[tuple[str, str, str, str]]:
    """(tag, image, action, now -> after) for the table view."""

    def side(digest: str | None, version: str | None, new: bool = False, platforms: int = 0) -> str:
        if digest is None and new:
            what = f"new index of {platforms} platforms" if platforms > 1 else "new image"
            return what + (f" ({version})" if version else "")
        if digest is None:
            return "-"
        return digest.removeprefix("sha256:")[:12] + (f" ({version})" if version else "")

    table = []
    for row in rows:
        now = side(row.now, row.now_version)
        after = side(
            row.after, row.image.prefect_version, new=True, platforms=len(row.image.platforms)
        )
        if row.action in (Action.KEEP, Action.KEEP_NEWER, Action.KEEP_OTHER):
            change = now
        elif row.action is Action.STALE_KEPT:
            change = f"{now}: {row.detail}"
        else:
            change = f"{now} -> {after}"
        table.append((row.tag, row.image.id, str(row.action), change))
    return table

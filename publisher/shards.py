"""Plan -> shards: parts of a plan that CI runners build side by side, one platform each.

Pure. A shard is a set of images and the one platform it builds them for; a CI job runs
``publisher publish --no-rolling --platform PLATFORM --select ID...`` for each shard, and
one ``publisher promote`` afterwards writes the indexes and moves the rolling tags.

Every (image, platform) pair of the plan is in exactly one shard. Images that share a core
build (same Prefect version, Python, base image and package: a variant with extras is
built FROM that core) are never split across shards, whatever the shard key, since
apart they would each build the core again. So ``image`` sharding shards by that core
group, not by single image.

GitHub refuses a matrix of more than 256 entries. When the key gives more shards than
allowed, shards of the same platform are merged, whole, into balanced bins (by image
count); two platforms are never merged, since a job builds one platform.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import SelectionError
from .plan import Image, Plan
from .platforms import normalise

SHARD_BY = ("python", "platform", "version", "image")
# GitHub Actions' limit on the jobs one matrix may generate.
MAX_SHARDS = 256

# The runner label each platform builds on: GitHub's hosted runners, native where GitHub
# has one. --runner PLATFORM=LABEL overrides an entry (e.g. a self-hosted runner).
DEFAULT_RUNNERS: Mapping[str, str] = MappingProxyType(
    {"linux/amd64": "ubuntu-latest", "linux/arm64": "ubuntu-24.04-arm"}
)
# Platforms without a native hosted runner build under QEMU emulation on this one.
EMULATION_RUNNER = "ubuntu-latest"

# What fnmatch reads as wildcards; an id holding one is escaped so it selects only itself.
_GLOB_CHARS = "*?["


@dataclass(frozen=True, kw_only=True)
class Shard:
    """Images built on one runner for one platform, in plan order."""

    name: str
    platform: str
    runner: str
    images: tuple[Image, ...]

    @property
    def select(self) -> tuple[str, ...]:
        """``--select`` globs that match exactly this shard's images: their escaped ids."""
        return tuple(exact_glob(image.id) for image in self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "select": " ".join(self.select),
            "platform": self.platform,
            "runner": self.runner,
        }


def shard(
    the_plan: Plan,
    *,
    by: str = "python",
    max_shards: int = MAX_SHARDS,
    runners: Mapping[str, str] | None = None,
) -> tuple[Shard, ...]:
    """Split the plan into shards of one platform each, by ``by`` (one of SHARD_BY), at
    most ``max_shards`` of them. ``runners`` overrides DEFAULT_RUNNERS per platform."""
    if by not in SHARD_BY:
        raise SelectionError(f"--shard-by {by!r}: must be one of {', '.join(SHARD_BY)}")
    if not 1 <= max_shards <= MAX_SHARDS:
        raise SelectionError(
            f"--max-shards {max_shards}: must be from 1 to {MAX_SHARDS} "
            "(GitHub runs at most 256 jobs from one matrix)"
        )
    if not the_plan.images:
        raise SelectionError("the plan has no images: there is nothing to shard")
    order = {image.id: n for n, image in enumerate(the_plan.images)}

    # (platform, key) -> images, in plan order; every key is a function of the core
    # group, so a core group never spans two units.
    units: dict[tuple[str, Hashable], list[Image]] = {}
    for image in the_plan.images:
        for platform in image.platforms:
            units.setdefault((platform, _key(image, by)), []).append(image)
    platforms = list(dict.fromkeys(platform for platform, _ in units))
    if len(platforms) > max_shards:
        raise SelectionError(
            f"--max-shards {max_shards}: the plan has {len(platforms)} platforms "
            f"({', '.join(platforms)}) and a shard builds one platform only"
        )
    groups = list(units.values())  # unit n's images
    by_platform = {p: [n for n, (q, _) in enumerate(units) if q == p] for p in platforms}
    bins = _allocate({p: [len(groups[n]) for n in ns] for p, ns in by_platform.items()}, max_shards)

    found: list[tuple[int, Shard]] = []  # (the first unit's index, the shard)
    for platform, members in by_platform.items():
        for packed in _pack([len(groups[n]) for n in members], bins[platform]):
            first = members[packed[0]]
            images = sorted(
                (image for i in packed for image in groups[members[i]]),
                key=lambda image: order[image.id],
            )
            label = _label(groups[first][0], by)
            if len(packed) > 1:  # only ever for a key with a label: platform has one unit
                label = f"{label}+{len(packed) - 1}"
            made = Shard(
                name=f"{label}-{_slug(platform)}" if label else _slug(platform),
                platform=platform,
                runner=runner_for(platform, runners or {}),
                images=tuple(images),
            )
            found.append((first, made))
    # Key order first, then platform: py3.12-linux-amd64, py3.12-linux-arm64, py3.13-...
    return tuple(s for _, s in sorted(found, key=lambda pair: pair[0]))


def github_matrix(shards: Sequence[Shard]) -> dict[str, Any]:
    """The object a workflow hands to ``strategy.matrix``: ``{"include": [...]}``."""
    return {"include": [s.to_json() for s in shards]}


def runner_for(platform: str, overrides: Mapping[str, str]) -> str:
    """The runner label for a platform: an override, else DEFAULT_RUNNERS, else the
    emulation runner."""
    return overrides.get(platform) or DEFAULT_RUNNERS.get(platform, EMULATION_RUNNER)


def parse_runner(text: str) -> tuple[str, str]:
    """``PLATFORM=LABEL`` (``linux/arm64=my-arm-runner``) -> (normalised platform, label)."""
    platform, sep, label = text.partition("=")
    if not sep or not label.strip():
        raise SelectionError(
            f"--runner {text!r}: write PLATFORM=LABEL, e.g. linux/arm64=ubuntu-24.04-arm"
        )
    try:
        return normalise(platform.strip()), label.strip()
    except ValueError as exc:
        raise SelectionError(f"--runner {text!r}: {exc}") from None


def exact_glob(image_id: str) -> str:
    """A glob matching ``image_id`` alone under fnmatch (``[*]`` is a literal ``*``)."""
    return "".join(f"[{c}]" if c in _GLOB_CHARS else c for c in image_id)


def _key(image: Image, by: str) -> Hashable:
    if by == "python":
        return image.python_version
    if by == "version":
        return image.prefect_version
    if by == "image":
        # The core group, as build.groups_of groups images (the platform is added apart).
        return (image.prefect_version, image.python_version, image.base_image, image.package)
    return ()


def _label(image: Image, by: str) -> str:
    """The readable part of a shard name; unique among one platform's units."""
    if by == "python":
        return f"py{image.python_version}"
    if by == "version":
        # A nightly's version is its git ref, which may hold a "/"; its ids say "nightly".
        return "nightly" if image.nightly else image.prefect_version
    if by == "image":
        return image.id  # the group's first image: each image is in one group per platform
    return ""


def _slug(platform: str) -> str:
    return platform.replace("/", "-")


def _allocate(weights: Mapping[str, list[int]], limit: int) -> dict[str, int]:
    """How many shards each platform gets: all its units when the total fits the limit;
    else one each, then one at a time to the platform with the heaviest shards on
    average (D'Hondt), never more than it has units. ``limit`` >= the platforms."""
    if sum(len(w) for w in weights.values()) <= limit:
        return {p: len(w) for p, w in weights.items()}
    bins = dict.fromkeys(weights, 1)
    load = {p: sum(w) for p, w in weights.items()}
    for _ in range(limit - len(weights)):
        # Never empty: fewer bins than the limit, which is fewer than the units.
        open_ = [p for p in weights if bins[p] < len(weights[p])]
        heaviest = max(open_, key=lambda p: load[p] / bins[p])
        bins[heaviest] += 1
    return bins


def _pack(weights: list[int], count: int) -> list[list[int]]:
    """Unit indexes packed into ``count`` bins of about equal weight (longest first, each
    into the lightest bin), each bin's indexes ascending; no bin is empty."""
    if count >= len(weights):
        return [[n] for n in range(len(weights))]
    heap = [(0, b) for b in range(count)]
    bins: list[list[int]] = [[] for _ in range(count)]
    for n in sorted(range(len(weights)), key=lambda n: -weights[n]):
        load, b = heapq.heappop(heap)
        bins[b].append(n)
        heapq.heappush(heap, (load + weights[n], b))
    return [sorted(members) for members in bins]

"""Matrix -> plan: the images to build and the tags each one gets.

Pure: no Docker, no network, no clock. The plan is the single source of truth for
building, pushing and the docs table, so a tag appears in the docs exactly when the
publisher would push it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

from .errors import MatrixError, SelectionError
from .matrix import DEFAULT_PACKAGE, TAG_RE, Matrix, Release, TagRule, Variant
from .platforms import DEFAULT_PLATFORMS
from .staging import PREFIX as STAGING_PREFIX
from .staging import is_staging
from .versions import is_stable, version_fields


@dataclass(frozen=True, kw_only=True)
class Tag:
    name: str
    rolling: bool
    rule: int = 0  # index of the rule in the matrix's `tags`, which is the docs row order


@dataclass(frozen=True, kw_only=True)
class Revision:
    """The commit a nightly image is built from."""

    sha: str
    date: str  # YYYYMMDD, the commit's date in UTC

    @property
    def short(self) -> str:
        return self.sha[:7]


# Used to show nightly tags before a ref is resolved (``plan --nightly``).
UNRESOLVED = Revision(sha="SHA", date="YYYYMMDD")


@dataclass(frozen=True, kw_only=True)
class Image:
    """One cell of the matrix: a (variant, Prefect version, Python) image and its tags."""

    id: str
    repository: str
    variant: str
    prefect_version: str  # a release version, or the nightly ref ("master")
    python_version: str
    base_image: str
    extras: tuple[str, ...]
    tags: tuple[Tag, ...]
    nightly: bool = False
    # One image index per tag, with a manifest for each, in this (the matrix's) order.
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    # The PyPI distribution installed (PEP 503 form): "prefect", "prefect-client".
    package: str = DEFAULT_PACKAGE

    @property
    def immutable_tags(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags if not t.rolling)

    @property
    def rolling_tags(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tags if t.rolling)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "repository": self.repository,
            "variant": self.variant,
            "prefect_version": self.prefect_version,
            "python_version": self.python_version,
            "base_image": self.base_image,
            "extras": list(self.extras),
            "tags": [t.name for t in self.tags],
            "immutable_tags": list(self.immutable_tags),
            "rolling_tags": list(self.rolling_tags),
            "nightly": self.nightly,
            "platforms": list(self.platforms),
            "package": self.package,
        }


@dataclass(frozen=True, kw_only=True)
class Plan:
    images: tuple[Image, ...]

    def select(self, patterns: Sequence[str]) -> Plan:
        """Keep the images whose id matches any glob; a pattern matching nothing is an error."""
        if not patterns:
            return self
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(image.id, pattern) for image in self.images):
                sample = ", ".join(image.id for image in self.images[:3])
                raise SelectionError(
                    f"--select {pattern!r} matches no image (ids look like: {sample})"
                )
        return Plan(
            images=tuple(
                image
                for image in self.images
                if any(fnmatch.fnmatchcase(image.id, p) for p in patterns)
            )
        )

    def to_json(self) -> dict[str, Any]:
        return {"images": [image.to_json() for image in self.images]}


def image_id(variant: str, version: str, python: str) -> str:
    """``{variant}-{version}-py{python}``: e.g. ``full-0.14.10-py3.7``, ``full-nightly-py3.7``."""
    return f"{variant}-{version}-py{python}"


def plan(matrix: Matrix, *, nightly: bool = False, revision: Revision | None = None) -> Plan:
    """Expand the matrix. Ownership is checked over release and nightly images together,
    so a nightly tag can never shadow a release tag, whichever of the two is planned."""
    releases = _release_images(matrix)
    nightlies = _nightly_images(matrix, revision or UNRESOLVED)
    _check_single_owner(matrix, [*releases, *nightlies])
    return Plan(images=tuple(nightlies if nightly else releases))


def owners(rule_release: Release, versions: Iterable[Version]) -> frozenset[Version]:
    """The versions a release kind gives its tag to."""
    versions = list(versions)
    if rule_release is Release.EVERY:
        return frozenset(versions)
    if rule_release is Release.NIGHTLY:
        return frozenset()
    stable = [v for v in versions if is_stable(v)]
    if rule_release is Release.LATEST:
        return frozenset([max(stable)] if stable else [])
    width = 1 if rule_release is Release.LATEST_IN_MAJOR else 2
    best: dict[tuple[int, ...], Version] = {}
    for version in stable:
        key = (*version.release, 0, 0)[:width]
        if key not in best or version > best[key]:
            best[key] = version
    return frozenset(best.values())


def _release_images(matrix: Matrix) -> list[Image]:
    owned = {kind: owners(kind, matrix.versions) for kind in Release}
    images: list[Image] = []
    for variant in matrix.variants:
        rules = [r for r in matrix.rules_for(variant) if r.release is not Release.NIGHTLY]
        for version in matrix.versions:
            fields = version_fields(version)
            for python in variant.pythons:
                tags = [
                    _render(rule, {**fields, "python": python}, matrix)
                    for rule in rules
                    if version in owned[rule.release] and python in rule.pythons_for(variant)
                ]
                images.append(_image(matrix, variant, str(version), python, tags, nightly=False))
    return images


def _nightly_images(matrix: Matrix, revision: Revision) -> list[Image]:
    if matrix.nightly is None:
        return []
    images: list[Image] = []
    for variant in matrix.variants:
        rules = [r for r in matrix.rules_for(variant) if r.release is Release.NIGHTLY]
        for python in variant.pythons:
            fields = {"python": python, "date": revision.date, "sha": revision.short}
            tags = [_render(r, fields, matrix) for r in rules if python in r.pythons_for(variant)]
            if tags:
                images.append(
                    _image(matrix, variant, matrix.nightly.ref, python, tags, nightly=True)
                )
    return images


def _image(
    matrix: Matrix,
    variant: Variant,
    version: str,
    python: str,
    tags: list[Tag],
    *,
    nightly: bool,
) -> Image:
    ident = image_id(variant.name, "nightly" if nightly else version, python)
    if not tags:
        # A cell nobody can pull is a mistake in the rules, not something to build quietly.
        raise MatrixError(f"{matrix.path}: image {ident} gets no tag from any rule in 'tags'")
    if not nightly and all(tag.rolling for tag in tags):
        # Whether a release image is published is read from its immutable tag; with none,
        # every publish would rebuild it and push straight over a rolling tag.
        raise MatrixError(
            f"{matrix.path}: image {ident} gets only rolling tags "
            f"({', '.join(t.name for t in tags)}); give it an immutable one, e.g. "
            "'{version}-python{python}' or 'core-{version}'"
        )
    names = [tag.name for tag in tags]
    for name in names:
        if names.count(name) > 1:
            rules = [matrix.tags[t.rule].origin for t in tags if t.name == name]
            raise MatrixError(
                f"{matrix.path}: image {ident} gets tag {name!r} from two rules "
                f"({' and '.join(rules)}); a tag comes from exactly one rule"
            )
    return Image(
        id=ident,
        repository=matrix.image,
        variant=variant.name,
        prefect_version=version,
        python_version=python,
        base_image=matrix.base_image_of(variant).format(python=python),
        extras=variant.extras,
        tags=tuple(tags),
        nightly=nightly,
        platforms=matrix.platforms_of(variant),
        package=variant.package,
    )


def _render(rule: TagRule, fields: dict[str, str], matrix: Matrix) -> Tag:
    name = rule.template.format(**fields)
    if not TAG_RE.match(name):
        raise MatrixError(
            f"{rule.origin or matrix.path}: tags: {rule.template!r} gives {name!r}, "
            "which is not a valid Docker tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})"
        )
    if is_staging(name):
        raise MatrixError(
            f"{rule.origin or matrix.path}: tags: {rule.template!r} gives {name!r}; tags "
            f"starting with {STAGING_PREFIX!r} are reserved for images being published"
        )
    return Tag(name=name, rolling=rule.rolling, rule=matrix.tags.index(rule))


def _check_single_owner(matrix: Matrix, images: list[Image]) -> None:
    owner: dict[str, str] = {}
    for image in images:
        for tag in image.tags:
            first = owner.setdefault(tag.name, image.id)
            if first != image.id:
                raise MatrixError(
                    f"{matrix.path}: tag {tag.name!r} would belong to both {first} and "
                    f"{image.id}; every tag needs exactly one image"
                )

"""The release matrix: ``matrix.yaml`` parsed once, at the edge, into frozen dataclasses.

Nothing past :func:`load` sees a raw dict. Every problem in the file is reported as one
line naming the file, the line, the key and the offending value.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Literal

from packaging.utils import canonicalize_name
from packaging.version import Version

from .platforms import DEFAULT_PLATFORMS, normalise
from .versions import parse_version
from .yamlnodes import Node, compose

PYTHON_RE = re.compile(r"^3\.\d{1,2}$")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*$")
EXTRA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# PEP 508's project name, the form canonicalize_name (PEP 503) is defined on.
PACKAGE_RE = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
DEFAULT_PACKAGE = "prefect"
# Docker's reference grammar for a tag.
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
REPOSITORY_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")

RELEASE_FIELDS = frozenset({"version", "major", "minor", "micro", "python"})
NIGHTLY_FIELDS = frozenset({"date", "sha", "python"})


class Release(str, Enum):
    """Which releases a tag rule gives its tag to."""

    EVERY = "every"  # each listed version, prereleases included: the tag never moves
    LATEST = "latest"  # only the highest stable version
    LATEST_IN_MAJOR = "latest-in-major"  # the highest stable version of each major
    LATEST_IN_MINOR = "latest-in-minor"  # the highest stable patch of each major.minor
    NIGHTLY = "nightly"  # the image built from the nightly source ref


PythonSelector = Literal["all", "default"] | tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TagRule:
    """One line of the alias policy: which images get which tag."""

    template: str
    variants: tuple[str, ...]
    python: PythonSelector
    release: Release
    in_docs: bool = True
    # "matrix.yaml:42", so plan-time errors can point at the rule that caused them.
    origin: str = field(default="", compare=False)

    @property
    def rolling(self) -> bool:
        """A rolling tag may later name another image; an immutable one never does."""
        if self.release is Release.NIGHTLY:
            return "{sha}" not in self.template
        return self.release is not Release.EVERY

    def pythons_for(self, variant: Variant) -> tuple[str, ...]:
        if self.python == "all":
            return variant.pythons
        if self.python == "default":
            return (variant.default_python,)
        return tuple(p for p in variant.pythons if p in self.python)


@dataclass(frozen=True, kw_only=True)
class Variant:
    """An image flavour: which package and extras are installed, on which Pythons."""

    name: str
    description: str
    pythons: tuple[str, ...]
    default_python: str
    extras: tuple[str, ...]
    # The PyPI distribution installed, in its PEP 503 form ("prefect-client").
    package: str = DEFAULT_PACKAGE
    # What the variant itself says; None takes the matrix's (Matrix.base_image_of and
    # Matrix.platforms_of resolve them), so a variant records the file, not a copy of it.
    base_image: str | None = None
    platforms: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class NightlySource:
    """Where nightly images are built from."""

    repository: str
    ref: str


@dataclass(frozen=True, kw_only=True)
class Matrix:
    path: Path
    image: str
    base_image: str
    source_url: str
    dockerfiles: Path
    versions: tuple[Version, ...]
    variants: tuple[Variant, ...]
    tags: tuple[TagRule, ...]
    nightly: NightlySource | None
    # Normalised (publisher.platforms), in the order the file lists them.
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise KeyError(name)

    def rules_for(self, variant: Variant) -> tuple[TagRule, ...]:
        return tuple(rule for rule in self.tags if variant.name in rule.variants)

    def base_image_of(self, variant: Variant) -> str:
        """The variant's base image template, else the matrix's."""
        return variant.base_image if variant.base_image is not None else self.base_image

    def platforms_of(self, variant: Variant) -> tuple[str, ...]:
        """The variant's platforms, else the matrix's."""
        return variant.platforms if variant.platforms is not None else self.platforms


def load(path: Path | str) -> Matrix:
    """Parse and validate a matrix file."""
    path = Path(path)
    root = compose(path)
    top = root.mapping(
        required={"image", "base_image", "versions", "variants", "tags"},
        optional={"source", "nightly", "dockerfiles", "platforms"},
    )
    image = top["image"].string()
    if not REPOSITORY_RE.match(image):
        raise top["image"].error(f"{image!r} is not a valid image repository name")
    base_image = _base_image(top["base_image"])
    platforms = _platforms(top["platforms"]) if "platforms" in top else DEFAULT_PLATFORMS
    source_url = top["source"].string() if "source" in top else ""
    # Relative to the matrix file, so the matrix builds the same from any working directory.
    dockerfiles = path.parent / (
        top["dockerfiles"].string() if "dockerfiles" in top else "dockerfiles"
    )
    versions = _versions(top["versions"])
    variants = _variants(top["variants"])
    nightly = _nightly(top["nightly"]) if "nightly" in top else None
    rules = _rules(top["tags"], variants, has_nightly=nightly is not None)
    return Matrix(
        path=path,
        image=image,
        base_image=base_image,
        source_url=source_url,
        dockerfiles=dockerfiles,
        versions=versions,
        variants=variants,
        tags=rules,
        nightly=nightly,
        platforms=platforms,
    )


def _base_image(node: Node) -> str:
    base_image = _template(node, allowed={"python"})
    if "{python}" not in base_image:
        raise node.error(
            f"{base_image!r} must contain {{python}}, or every Python would get the same base"
        )
    return base_image


def _platforms(node: Node) -> tuple[str, ...]:
    """Normalised, in the order written: the order of the image index's manifests."""
    items = node.sequence()
    if not items:
        raise node.error(f"lists no platform; list at least one, e.g. {DEFAULT_PLATFORMS[0]!r}")
    seen: dict[str, str] = {}
    for item in items:
        text = item.string()
        try:
            platform = normalise(text)
        except ValueError as exc:
            raise item.error(str(exc)) from None
        if platform in seen:
            same = "" if seen[platform] == text else f" (as {seen[platform]!r}, the same platform)"
            raise item.error(f"{text!r} is listed twice{same}")
        seen[platform] = text
    return tuple(seen)


def _package(node: Node) -> str:
    text = node.string()
    if not PACKAGE_RE.match(text):
        raise node.error(f"{text!r} is not a valid PyPI project name (e.g. 'prefect-client')")
    return str(canonicalize_name(text))


def _versions(node: Node) -> tuple[Version, ...]:
    items = node.sequence()
    if not items:
        raise node.error("lists no version; list at least one Prefect release")
    seen: dict[Version, str] = {}
    out: list[Version] = []
    for item in items:
        text = item.string()
        try:
            version = parse_version(text)
        except ValueError as exc:
            raise item.error(str(exc)) from None
        if version in seen:
            raise item.error(f"{text!r} is listed twice (as {seen[version]!r} too)")
        seen[version] = text
        out.append(version)
    return tuple(out)


def _python(node: Node) -> str:
    value = node.string()
    if not PYTHON_RE.match(value):
        raise node.error(f'{value!r} is not a Python version like "3.8"')
    return value


def _variants(node: Node) -> tuple[Variant, ...]:
    out: list[Variant] = []
    for name, child in node.items():
        if not NAME_RE.match(name):
            raise child.error(f"variant name {name!r} must be lowercase letters and digits")
        fields = child.mapping(
            required={"pythons"},
            optional={
                "default_python",
                "extras",
                "description",
                "package",
                "base_image",
                "platforms",
            },
        )
        pythons = [_python(p) for p in fields["pythons"].sequence()]
        if not pythons:
            raise fields["pythons"].error("lists no Python version")
        if len(set(pythons)) != len(pythons):
            raise fields["pythons"].error("lists a Python version twice")
        if "default_python" in fields:
            default = _python(fields["default_python"])
            if default not in pythons:
                raise fields["default_python"].error(
                    f"{default!r} is not one of this variant's pythons ({', '.join(pythons)})"
                )
        elif len(pythons) == 1:
            default = pythons[0]
        else:
            raise child.error("lists several pythons, so it needs a 'default_python'")
        extras: list[str] = []
        for extra_node in fields["extras"].strings() if "extras" in fields else []:
            extra = extra_node.string()
            if not EXTRA_RE.match(extra):
                raise extra_node.error(f"{extra!r} is not a valid extra name")
            extras.append(extra)
        description = fields["description"].string() if "description" in fields else ""
        out.append(
            Variant(
                name=name,
                description=description,
                pythons=tuple(pythons),
                default_python=default,
                extras=tuple(extras),
                package=_package(fields["package"]) if "package" in fields else DEFAULT_PACKAGE,
                base_image=_base_image(fields["base_image"]) if "base_image" in fields else None,
                platforms=_platforms(fields["platforms"]) if "platforms" in fields else None,
            )
        )
    if not out:
        raise node.error("defines no variant")
    return tuple(out)


def _nightly(node: Node) -> NightlySource:
    fields = node.mapping(required={"repository"}, optional={"ref"})
    return NightlySource(
        repository=fields["repository"].string(),
        ref=fields["ref"].string() if "ref" in fields else "master",
    )


def _template(node: Node, *, allowed: frozenset[str] | set[str]) -> str:
    value = node.string()
    try:
        fields = [
            (n, spec, conv) for _, n, spec, conv in string.Formatter().parse(value) if n is not None
        ]
    except ValueError as exc:
        raise node.error(f"{value!r} is not a valid template: {exc}") from None
    names = {name for name, _, _ in fields}
    for name, spec, conversion in fields:
        if spec or conversion:
            # Every placeholder is a plain string; "{version:d}" would only fail at plan time.
            raise node.error(f"{value!r}: write {{{name}}} without a format spec or conversion")
    for name in sorted(names):
        if name not in allowed:
            known = ", ".join("{" + n + "}" for n in sorted(allowed))
            raise node.error(f"{value!r} uses unknown placeholder {{{name}}} (known: {known})")
    return value


def _rules(node: Node, variants: tuple[Variant, ...], *, has_nightly: bool) -> tuple[TagRule, ...]:
    by_name = {v.name: v for v in variants}
    items = node.sequence()
    if not items:
        raise node.error("lists no tag rule")
    rules: list[TagRule] = []
    for item in items:
        fields = item.mapping(
            required={"tag", "variant"}, optional={"python", "release", "in_docs"}
        )
        release_text = fields["release"].string() if "release" in fields else "every"
        try:
            release = Release(release_text)
        except ValueError:
            known = ", ".join(r.value for r in Release)
            raise fields["release"].error(
                f"{release_text!r} is not a release kind (known: {known})"
            ) from None
        if release is Release.NIGHTLY and not has_nightly:
            raise fields["release"].error("a nightly tag needs a top-level 'nightly' section")
        allowed = NIGHTLY_FIELDS if release is Release.NIGHTLY else RELEASE_FIELDS
        template = _template(fields["tag"], allowed=allowed)

        variant_names: list[str] = []
        for vnode in fields["variant"].strings():
            name = vnode.string()
            if name not in by_name:
                raise vnode.error(f"{name!r} is not a variant (variants: {', '.join(by_name)})")
            if release is Release.NIGHTLY and by_name[name].package != DEFAULT_PACKAGE:
                # The nightly builds prefect's own wheel from the source; installing it as
                # another package would fail at build time, after the ref was fetched.
                raise vnode.error(
                    f"variant {name!r} installs {by_name[name].package!r}; a nightly tag "
                    f"builds {DEFAULT_PACKAGE!r} from source, so it needs a variant of that"
                )
            variant_names.append(name)

        python: PythonSelector = "all"
        if "python" in fields:
            pnode = fields["python"]
            texts = [p.string() for p in pnode.strings()]
            if texts in (["all"], ["default"]):
                python = "all" if texts == ["all"] else "default"
            else:
                explicit = tuple(_python(p) for p in pnode.strings())
                for name in variant_names:
                    missing = [p for p in explicit if p not in by_name[name].pythons]
                    if missing:
                        raise pnode.error(
                            f"Python {missing[0]} is not one of variant {name!r}'s pythons"
                        )
                python = explicit
        rule = TagRule(
            template=template,
            variants=tuple(variant_names),
            python=python,
            release=release,
            in_docs=fields["in_docs"].boolean() if "in_docs" in fields else True,
            origin=f"{item.path}:{item.line}",
        )
        for name in variant_names:
            if "{python}" not in template and len(rule.pythons_for(by_name[name])) > 1:
                raise fields["tag"].error(
                    f"{template!r} has no {{python}} but applies to several pythons of "
                    f"variant {name!r}; restrict it with 'python: default'"
                )
        rules.append(rule)
    _check_nightly_names(items, rules)
    return tuple(rules)


def _check_nightly_names(items: list[Node], rules: list[TagRule]) -> None:
    """An immutable nightly tag lives under a rolling nightly name (``master-...``).

    That keeps every nightly build's tags in one namespace, apart from release tags.
    """
    rolling = [r.template for r in rules if r.release is Release.NIGHTLY and r.rolling]
    for item, rule in zip(items, rules, strict=True):
        nested = any(rule.template.startswith(name + "-") for name in rolling)
        if rule.release is Release.NIGHTLY and not rule.rolling and rolling and not nested:
            raise item.error(
                f"immutable nightly tag {rule.template!r} must start with {rolling[0] + '-'!r}"
            )

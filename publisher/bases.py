"""A base image pinned to one platform: the digest its index lists for that platform.

A multi-platform build names its base by that digest, never by tag: a local tag holds one
platform only, and a build FROM the tag right after another platform's pull silently used
the other platform's base. The digest is also the base's identity in the fingerprint, so
an update of the base on one platform makes that platform's images stale.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BuildError, RegistryError
from .registry import RegistryClient

DOCKER_HUB = "docker.io"


@dataclass(frozen=True, kw_only=True)
class Reference:
    """``[HOST/]PATH[:TAG][@DIGEST]`` split the way Docker splits it."""

    name: str  # as written, without tag or digest ("python", "localhost:5000/x/python")
    host: str  # the registry ("docker.io" when the name has none)
    path: str  # the repository inside it ("library/python")
    ref: str  # the tag or digest to resolve ("3.13-slim", "sha256:...")

    @classmethod
    def parse(cls, text: str) -> Reference:
        name, _, digest = text.partition("@")
        last_slash = name.rfind("/")
        colon = name.rfind(":")
        tag = ""
        if colon > last_slash:
            name, tag = name[:colon], name[colon + 1 :]
        first, _, rest = name.partition("/")
        # Docker's rule: the first component is a registry host when it looks like one.
        if rest and ("." in first or ":" in first or first == "localhost"):
            host, path = first, rest
        else:
            host, path = DOCKER_HUB, name if "/" in name else f"library/{name}"
        return cls(name=name, host=host, path=path, ref=digest or tag or "latest")


def pin(reference: str, platform: str) -> str:
    """``NAME@DIGEST`` of ``reference``'s image for ``platform`` (BuildError if it has none)."""
    base = Reference.parse(reference)
    try:
        with RegistryClient.from_docker_config(base.host) as registry:
            images = registry.platform_images(base.path, base.ref)
            if images is None:
                config = registry.image_config(base.path, base.ref)
                found = "/".join(
                    str(p)
                    for p in (config.get("os"), config.get("architecture"), config.get("variant"))
                    if p
                )
                if not _matches(found, platform):
                    raise BuildError(
                        f"base image {reference} is a single {found or 'unknown'} image, "
                        f"not an index with {platform}"
                    )
                digest = registry.manifest(base.path, base.ref).digest
            else:
                digest = next((d for p, d in images.items() if _matches(p, platform)), "")
                if not digest:
                    raise BuildError(
                        f"base image {reference} has no {platform} image "
                        f"(it has: {', '.join(images) or 'none'})"
                    )
    except RegistryError as exc:
        raise BuildError(f"cannot read base image {reference} for {platform}: {exc}") from None
    return f"{base.name}@{digest}"


def _matches(listed: str, wanted: str) -> bool:
    # A request without a variant accepts any ("linux/arm64" matches linux/arm64/v8).
    return listed == wanted or (wanted.count("/") == 1 and listed.startswith(wanted + "/"))

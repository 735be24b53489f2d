"""A multi-platform base image in a test registry, like ``python:3.13-slim`` on Docker Hub.

The bootstrap loads one local image per platform (a local tag holds one platform only):
``push_base_index`` pushes each to the registry and PUTs an OCI image index over them under
one tag, so that the tag resolves per platform as the official images' tags do.  The index is
PUT with plain HTTP requests: the Docker SDK cannot write one, and the publisher's own
registry client is what the tests test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import requests

from tests.tiny_image import push_manifest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# What dockerd 20.10 pushes (Docker schema 2), and the OCI equivalent.
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
TIMEOUT = 30


@dataclass(frozen=True, kw_only=True)
class BaseIndex:
    """An index pushed by ``push_base_index``."""

    reference: str  # HOST:PORT/REPOSITORY:TAG, the index's tag
    repository: str  # HOST:PORT/REPOSITORY
    digest: str  # the index's own digest
    platforms: Mapping[str, str]  # "linux/arm64" -> digest of that platform's manifest

    def pinned(self, platform: str) -> str:
        """``HOST:PORT/REPOSITORY@sha256:...``: the base of ``platform`` alone.

        Build FROM this rather than the tag: a local tag holds one platform only, and a build
        for another platform without pull=True would silently use it.
        """
        return f"{self.repository}@{self.platforms[platform]}"


def push_base_index(
    client: docker.DockerClient,
    registry: str,
    images: Mapping[str, str],
    *,
    repository: str = "publisher-test/python",
    tag: str,
) -> BaseIndex:
    """Push ``images`` (platform "linux/arm64" -> local image) to ``registry`` (HOST:PORT, no
    auth) as ``REPOSITORY:TAG-linux-arm64`` etc., then PUT an OCI index of them as
    ``REPOSITORY:TAG``.

    Each image's config must say the platform it is pushed for (ValueError otherwise): the
    index would lie.
    """
    base = f"http://{registry}/v2/{repository}"
    entries: list[dict[str, Any]] = []
    digests: dict[str, str] = {}
    for platform, image in images.items():
        os_name, architecture = platform.split("/")
        platform_tag = f"{tag}-{platform.replace('/', '-')}"
        _push(client, image, f"{registry}/{repository}", platform_tag)
        body, media_type = _get_manifest(f"{base}/manifests/{platform_tag}")
        config = _get_json(f"{base}/blobs/{json.loads(body)['config']['digest']}")
        found = f"{config.get('os')}/{config.get('architecture')}"
        if found != platform:
            raise ValueError(f"{image} is {found}, not {platform}")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        digests[platform] = digest
        entries.append(
            {
                "mediaType": media_type,
                "size": len(body),
                "digest": digest,
                "platform": {"architecture": architecture, "os": os_name},
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    digest = push_manifest(registry, repository, tag, index, OCI_INDEX)
    return BaseIndex(
        reference=f"{registry}/{repository}:{tag}",
        repository=f"{registry}/{repository}",
        digest=digest,
        platforms=digests,
    )


def _push(client: docker.DockerClient, image: str, remote: str, tag: str) -> None:
    """Push local ``image`` as ``remote:tag``; the local tag made for it goes afterwards."""
    if not client.images.get(image).tag(remote, tag):
        raise RuntimeError(f"could not tag {image} as {remote}:{tag}")
    try:
        for line in client.images.push(remote, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise RuntimeError(f"pushing {image} to {remote}:{tag}: {line['error']}")
    finally:
        client.images.remove(f"{remote}:{tag}")  # the tag only: `image` keeps the layers


def _get_manifest(url: str) -> tuple[bytes, str]:
    """The manifest's exact bytes (its digest is theirs) and media type."""
    response = requests.get(url, headers={"Accept": ", ".join(MANIFEST_TYPES)}, timeout=TIMEOUT)
    response.raise_for_status()
    media_type = response.headers["Content-Type"].split(";")[0].strip()
    if media_type not in MANIFEST_TYPES:
        raise RuntimeError(f"{url} answered {media_type}, not an image manifest")
    return response.content, media_type


def _get_json(url: str) -> dict[str, Any]:
    response = requests.get(url, timeout=TIMEOUT)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data

"""Upload a tiny image (one layer, one config) through the registry's HTTP API itself.

No Docker daemon is needed: tests that exercise the registry client push these.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import requests

from publisher.registry import DOCKER_MANIFEST, OCI_MANIFEST

Auth = tuple[str, str] | None


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(host: str, repo: str, data: bytes, *, auth: Auth = None) -> str:
    digest = sha256(data)
    started = requests.post(f"http://{host}/v2/{repo}/blobs/uploads/", auth=auth, timeout=10)
    assert started.status_code == 202, started.text
    location = requests.compat.urljoin(f"http://{host}/", started.headers["Location"])
    separator = "&" if "?" in location else "?"
    done = requests.put(
        f"{location}{separator}digest={digest}",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        auth=auth,
        timeout=10,
    )
    assert done.status_code == 201, done.text
    return digest


def push_manifest(
    host: str, repo: str, ref: str, document: dict[str, Any], media_type: str, *, auth: Auth = None
) -> str:
    # indent=3 makes bytes no re-serialisation would reproduce, so digests prove byte copies.
    raw = json.dumps(document, indent=3).encode()
    response = requests.put(
        f"http://{host}/v2/{repo}/manifests/{ref}",
        data=raw,
        headers={"Content-Type": media_type},
        auth=auth,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.headers["Docker-Content-Digest"] == sha256(raw)
    return sha256(raw)


def push_image(
    host: str,
    repo: str,
    ref: str,
    *,
    labels: dict[str, str] | None = None,
    architecture: str = "amd64",
    oci: bool = False,
    auth: Auth = None,
) -> str:
    layer = f"layer for {architecture}".encode()
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {"Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
    }
    config_raw = json.dumps(config).encode()
    config_type = (
        "application/vnd.oci.image.config.v1+json"
        if oci
        else "application/vnd.docker.container.image.v1+json"
    )
    layer_type = (
        "application/vnd.oci.image.layer.v1.tar"
        if oci
        else "application/vnd.docker.image.rootfs.diff.tar"
    )
    media_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {
            "mediaType": config_type,
            "size": len(config_raw),
            "digest": push_blob(host, repo, config_raw, auth=auth),
        },
        "layers": [
            {
                "mediaType": layer_type,
                "size": len(layer),
                "digest": push_blob(host, repo, layer, auth=auth),
            }
        ],
    }
    return push_manifest(host, repo, ref, manifest, media_type, auth=auth)

"""A thin, synchronous client for the Docker Registry HTTP API v2 (OCI distribution).

It does only what publishing needs: resolve tags to digests, read manifests and
image configs, upload an image's blobs and manifest (push.py), and re-point tags by
PUTting an existing manifest's exact bytes (so a retag never moves a blob and never
changes a digest). Every failure is
one of the project's registry errors with a one-line message.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from publisher.errors import RegistryAuthError, RegistryError
from publisher.registry_auth import Auth
from publisher.registry_auth import Credentials as Credentials
from publisher.registry_http import Request, Transport, error_message, json_object, one_line

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_MEDIA_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
# Without an explicit Accept, registries fall back to (or refuse with) schema 1,
# whose bytes and digest differ from what was pushed.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

# Docker Hub's API lives on another host than the name users write in image references.
_API_HOSTS = {"docker.io": "registry-1.docker.io", "index.docker.io": "registry-1.docker.io"}
# Seconds to wait for a registry to answer; overridable for slow or far-away registries.
TIMEOUT_ENV = "PUBLISHER_REGISTRY_TIMEOUT"
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, kw_only=True)
class Manifest:
    digest: str
    media_type: str
    # The exact bytes: re-serialising the JSON would change the digest.
    raw: bytes = field(repr=False)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def default_timeout() -> float:
    """PUBLISHER_REGISTRY_TIMEOUT seconds when set, else 30: one request's connect and read."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value <= 3600:
        raise RegistryError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds in (0, 3600]")
    return value


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class RegistryClient:
    """One registry, one session; counts the requests it sends and their body bytes."""

    def __init__(
        self,
        host: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool | None = None,
        timeout: float | None = None,
        retries: int = 3,
    ) -> None:
        hostname = urlsplit(f"//{host}").hostname or host
        # Like the Docker daemon: plain HTTP is assumed only for loopback unless asked for.
        if insecure is None:
            insecure = _is_loopback(hostname)
        api_host = _API_HOSTS.get(host.lower(), host)
        self.host = host
        self.base_url = f"{'http' if insecure else 'https'}://{api_host}"
        self.credentials = credentials
        self.timeout = default_timeout() if timeout is None else timeout
        self.retries = retries
        self._transport = Transport(host, timeout=self.timeout, retries=retries)
        self._auth = Auth(self._transport, credentials)
        # Manifests by digest never change: a publication copying one image to several
        # tags reads it once (manifest GETs count against pull limits; HEADs do not).
        self._by_digest: dict[tuple[str, str], Manifest] = {}

    @classmethod
    def from_docker_config(cls, host: str, **kw: Any) -> RegistryClient:
        """Use the credentials `docker login` stored for ``host`` (DOCKER_CONFIG is honoured)."""
        import docker.auth  # deferred: the docker SDK is heavy and only this path needs it
        import docker.errors

        try:
            entry = docker.auth.resolve_authconfig(docker.auth.load_config(), registry=host)
        except docker.errors.DockerException as exc:
            raise RegistryAuthError(
                f"cannot read credentials for registry {host} from the docker config: "
                + one_line(str(exc), 200)
            ) from exc
        credentials = None
        if entry:
            # Plain "auths" entries use lower-case keys, credential stores capitalised ones.
            # An IdentityToken (OAuth refresh token) alone is not supported: no credentials.
            username = entry.get("username") or entry.get("Username")
            password = entry.get("password") or entry.get("Password")
            if username and password is not None:
                credentials = Credentials(username=username, password=password)
        return cls(host, credentials=credentials, **kw)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> None:
        self._call(Request(method="GET", url="/v2/"), operation="ping", scope="", expect={200})

    def digest(self, repo: str, ref: str) -> str | None:
        """The digest ``repo:ref`` resolves to, or None when the tag does not exist."""
        response = self._call(
            Request(
                method="HEAD",
                url=f"/v2/{repo}/manifests/{ref}",
                headers={"Accept": MANIFEST_ACCEPT},
            ),
            operation=f"resolve {repo}:{ref}",
            scope=_pull(repo),
            expect={200, 404},
        )
        if response.status_code == 404:
            return None
        reported = response.headers.get("Docker-Content-Digest")
        if reported:
            return reported
        # The header is optional in the OCI spec; hashing the body is the fallback.
        return self.manifest(repo, ref).digest

    def manifest(self, repo: str, ref: str) -> Manifest:
        cached = self._by_digest.get((repo, ref))
        if cached is not None:
            return cached
        response = self._call(
            Request(
                method="GET",
                url=f"/v2/{repo}/manifests/{ref}",
                headers={"Accept": MANIFEST_ACCEPT},
            ),
            operation=f"read manifest {repo}:{ref}",
            scope=_pull(repo),
            expect={200, 404},
        )
        if response.status_code == 404:
            raise RegistryError(f"manifest {repo}:{ref} not found on registry {self.host}")
        raw = response.content
        digest = sha256_digest(raw)
        reported = response.headers.get("Docker-Content-Digest", "")
        expected = ref if ref.startswith("sha256:") else reported
        if expected.startswith("sha256:") and expected != digest:
            raise RegistryError(
                f"manifest {repo}:{ref} from registry {self.host} hashes to {digest}, "
                f"not {expected}"
            )
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if not media_type or media_type in ("application/json", "application/octet-stream"):
            document = json_object(raw, f"manifest {repo}:{ref}")
            media_type = str(document.get("mediaType", media_type))
        found = Manifest(digest=digest, media_type=media_type, raw=raw)
        self._by_digest[(repo, digest)] = found
        return found

    def put_manifest(self, repo: str, tag: str, manifest: Manifest) -> str:
        actual = sha256_digest(manifest.raw)
        if manifest.digest != actual:
            raise RegistryError(
                f"refusing to push {repo}:{tag}: manifest bytes hash to {actual}, "
                f"not {manifest.digest}"
            )
        response = self._call(
            Request(
                method="PUT",
                url=f"/v2/{repo}/manifests/{tag}",
                headers={"Content-Type": manifest.media_type},
                data=manifest.raw,
            ),
            operation=f"push manifest {repo}:{tag}",
            scope=_push(repo),
            expect={200, 201, 202},
        )
        reported = response.headers.get("Docker-Content-Digest") or actual
        if reported != manifest.digest:
            raise RegistryError(
                f"registry {self.host} stored {repo}:{tag} as {reported}, "
                f"expected {manifest.digest}"
            )
        return reported

    def copy_tag(self, repo: str, source_ref: str, tag: str) -> str:
        """Point ``tag`` at ``source_ref``'s manifest; the blobs are already in ``repo``."""
        if source_ref.startswith("sha256:") and self.digest(repo, tag) == source_ref:
            return source_ref
        source = self.manifest(repo, source_ref)
        if not source_ref.startswith("sha256:") and self.digest(repo, tag) == source.digest:
            return source.digest
        return self.put_manifest(repo, tag, source)

    def tags(self, repo: str) -> list[str]:
        """All tags of ``repo``, sorted; [] when the repository does not exist."""
        found: set[str] = set()
        url: str | None = f"{self.base_url}/v2/{repo}/tags/list"
        seen_urls: set[str] = set()
        while url is not None and url not in seen_urls:
            seen_urls.add(url)
            response = self._call(
                Request(method="GET", url=url),
                operation=f"list tags of {repo}",
                scope=_pull(repo),
                expect={200, 404},
            )
            if response.status_code == 404:
                return []
            found.update(json_object(response.content, f"tag list of {repo}").get("tags") or [])
            next_link = response.links.get("next", {}).get("url")
            url = urljoin(response.url, next_link) if next_link else None
        return sorted(found)

    def image_config(self, repo: str, ref: str, *, platform: str | None = None) -> dict[str, Any]:
        """The image config JSON; ``platform`` chooses within an index or manifest list
        (None: linux/amd64 when listed, else the first: the platform images of one planned
        image carry the same version labels)."""
        manifest = self.manifest(repo, ref)
        document = json_object(manifest.raw, f"manifest {repo}:{ref}")
        if manifest.media_type in INDEX_MEDIA_TYPES or "manifests" in document:
            child = _select_platform(document, platform, f"{repo}:{ref}")
            manifest = self.manifest(repo, child)
            document = json_object(manifest.raw, f"manifest {repo}@{child}")
        config_digest = (document.get("config") or {}).get("digest")
        if manifest.media_type not in IMAGE_MEDIA_TYPES or not config_digest:
            raise RegistryError(
                f"{repo}:{ref} on registry {self.host} is a {manifest.media_type or 'untyped'} "
                "manifest, not an image manifest with a config"
            )
        response = self._call(
            Request(method="GET", url=f"/v2/{repo}/blobs/{config_digest}"),
            operation=f"read image config of {repo}:{ref}",
            scope=_pull(repo),
            expect={200},
        )
        if config_digest.startswith("sha256:") and sha256_digest(response.content) != config_digest:
            raise RegistryError(f"image config {config_digest} of {repo}:{ref} is corrupt")
        return json_object(response.content, f"image config of {repo}:{ref}")

    def platform_images(self, repo: str, ref: str) -> dict[str, str] | None:
        """platform ("linux/arm64") -> digest of each image an index lists, in its order;
        None when ``ref`` names a single image manifest."""
        manifest = self.manifest(repo, ref)
        if manifest.media_type not in INDEX_MEDIA_TYPES:
            return None
        document = json_object(manifest.raw, f"manifest {repo}:{ref}")
        return {
            _platform_name(entry.get("platform") or {}): str(entry.get("digest"))
            for entry in document.get("manifests") or []
        }

    def put_index(self, repo: str, tag: str, images: Sequence[tuple[str, str]]) -> str:
        """PUT an OCI image index of ``images`` ((platform, manifest digest), in order, each
        already in ``repo``) under ``tag``; return its digest.

        Each descriptor carries the media type and size of the manifest as the registry
        holds it (read back here), so a client verifying the index finds exact matches.
        """
        entries = []
        for platform, digest in images:
            child = self.manifest(repo, digest)
            if child.media_type not in IMAGE_MEDIA_TYPES:
                raise RegistryError(
                    f"{repo}@{digest} is a {child.media_type or 'untyped'} manifest, "
                    f"not an image for {platform}"
                )
            entries.append(
                {
                    "mediaType": child.media_type,
                    "digest": child.digest,
                    "size": len(child.raw),
                    "platform": _platform_document(platform),
                }
            )
        raw = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2
        ).encode()
        index = Manifest(digest=sha256_digest(raw), media_type=OCI_INDEX, raw=raw)
        self._by_digest[(repo, index.digest)] = index
        return self.put_manifest(repo, tag, index)

    def labels(self, repo: str, ref: str) -> dict[str, str]:
        config = self.image_config(repo, ref).get("config") or {}
        return {str(key): str(value) for key, value in (config.get("Labels") or {}).items()}

    def blob_exists(self, repo: str, digest: str) -> bool:
        response = self._call(
            Request(method="HEAD", url=f"/v2/{repo}/blobs/{digest}"),
            operation=f"check blob {digest} in {repo}",
            scope=_pull(repo),
            expect={200, 404},
        )
        return response.status_code == 200

    def put_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Upload ``data`` as the blob ``digest`` of ``repo``, in one request after the
        upload is opened (the registry checks the digest against what it received)."""
        operation = f"upload blob {digest} to {repo}"
        opened = self._call(
            Request(method="POST", url=f"/v2/{repo}/blobs/uploads/"),
            operation=operation,
            scope=_push(repo),
            expect={202},
        )
        location = opened.headers.get("Location")
        if not location:
            raise RegistryError(f"registry {self.host} opened no upload for {operation}")
        self._call(
            Request(
                method="PUT",
                # Relative to the registry (distribution) or absolute (some registries).
                url=urljoin(self.base_url + "/", location),
                headers={"Content-Type": "application/octet-stream"},
                data=data,
                params=[("digest", digest)],
            ),
            operation=operation,
            scope=_push(repo),
            expect={201},
        )

    @property
    def requests_made(self) -> int:
        return self._transport.requests_made

    @property
    def bytes_sent(self) -> int:
        return self._transport.bytes_sent

    def _call(
        self, request: Request, *, operation: str, scope: str, expect: set[int]
    ) -> requests.Response:
        """Send ``request`` (its url may be a path on this registry), answering one challenge."""
        if "://" not in request.url:
            request = replace(request, url=self.base_url + request.url)
        headers = request.headers
        response = self._transport.send(
            replace(request, headers={**headers, **self._auth.header(scope)})
        )
        if response.status_code == 401:
            # Once per request: a second 401 means the credentials themselves are wrong.
            self._auth.authenticate(response, scope, operation)
            response = self._transport.send(
                replace(request, headers={**headers, **self._auth.header(scope)})
            )
        if response.status_code in (401, 403):
            raise self._auth.error(response.status_code, operation, error_message(response))
        if response.status_code not in expect:
            raise RegistryError(
                f"registry {self.host} answered {response.status_code} to {operation}: "
                + self._auth.redact(one_line(error_message(response)))
            )
        return response


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _push(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _platform_document(platform: str) -> dict[str, str]:
    os_name, _, rest = platform.partition("/")
    architecture, _, variant = rest.partition("/")
    found = {"architecture": architecture, "os": os_name}
    if variant:
        found["variant"] = variant
    return found


def _platform_name(entry: dict[str, Any]) -> str:
    return "/".join(
        str(part)
        for part in (entry.get("os"), entry.get("architecture"), entry.get("variant"))
        if part
    )


def _select_platform(index: dict[str, Any], platform: str | None, what: str) -> str:
    entries = index.get("manifests") or []
    if platform is None:
        listed = [_platform_name(entry.get("platform") or {}) for entry in entries]
        platform = "linux/amd64" if "linux/amd64" in listed or not listed else listed[0]
    os_name, _, rest = platform.partition("/")
    architecture, _, variant = rest.partition("/")
    available = []
    for entry in entries:
        entry_platform = entry.get("platform") or {}
        found = (entry_platform.get("os"), entry_platform.get("architecture"))
        available.append(_platform_name(entry_platform))
        # A request without a variant accepts any ("linux/arm64" matches arm64/v8).
        if found == (os_name, architecture) and variant in ("", entry_platform.get("variant")):
            return str(entry["digest"])
    raise RegistryError(
        f"{what} has no image for platform {platform} (it has: {', '.join(available) or 'none'})"
    )

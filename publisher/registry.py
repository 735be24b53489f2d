"""A thin, synchronous client for the Docker Registry HTTP API v2 (OCI distribution).

It does only what publishing needs: resolve tags to digests, read manifests and
image configs, and re-point tags by PUTting an existing manifest's exact bytes
(so a retag never moves a blob and never changes a digest). Every failure is
one of the project's registry errors with a one-line message.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3.exceptions

from publisher.errors import RegistryAuthError, RegistryError, RegistryUnreachable

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
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# Seconds to wait for a registry to answer; overridable for slow or far-away registries.
TIMEOUT_ENV = "PUBLISHER_REGISTRY_TIMEOUT"
DEFAULT_TIMEOUT = 30.0
_BACKOFF_SECONDS = 0.25
_MAX_RETRY_AFTER_SECONDS = 10.0
_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]+))')
_ERRNO_TEXT = re.compile(r"\[(?:Errno -?\d+|SSL: \w+)\] [^'\"()\]]+")


@dataclass(frozen=True, kw_only=True)
class Manifest:
    digest: str
    media_type: str
    # The exact bytes: re-serialising the JSON would change the digest.
    raw: bytes = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class Credentials:
    username: str
    password: str = field(repr=False)


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


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _connection_failure(exc: requests.RequestException, timeout: float) -> str:
    # requests wraps urllib3 which wraps the OSError; its "[Errno N] text" is
    # the part a user can act on, the rest is pool and URL noise.
    if isinstance(exc, requests.Timeout):
        return f"timed out after {timeout:g}s"
    found = _ERRNO_TEXT.search(str(exc))
    reason = found.group(0).strip() if found else _one_line(f"{type(exc).__name__}: {exc}", 200)
    if isinstance(exc, requests.exceptions.SSLError):
        # The usual cause is an HTTPS request to a plain-HTTP registry.
        reason += " (TLS failed: if the registry speaks plain HTTP, mark it insecure)"
    return reason


def _never_connected(exc: requests.RequestException) -> bool:
    # Refused, unresolvable or TLS-failing hosts will not heal within a short
    # back-off, so retrying them only delays the error the user needs to see.
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    inner = exc.args[0] if exc.args else None
    return isinstance(getattr(inner, "reason", None), urllib3.exceptions.NewConnectionError)


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
        message = body["errors"][0]["message"]
    except (ValueError, LookupError, TypeError):
        return response.reason or "no error message"
    return str(message)


class RegistryClient:
    """One registry, one session; counts requests and body bytes for benchmarks."""

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
        self.requests_made = 0
        self.bytes_sent = 0
        self._session = requests.Session()
        self._basic = False
        self._tokens: dict[str, str] = {}

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
                + _one_line(str(exc), 200)
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
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ping(self) -> None:
        self._call("GET", "/v2/", operation="ping", scope="", expect={200})

    def digest(self, repo: str, ref: str) -> str | None:
        """The digest ``repo:ref`` resolves to, or None when the tag does not exist."""
        response = self._call(
            "HEAD",
            f"/v2/{repo}/manifests/{ref}",
            operation=f"resolve {repo}:{ref}",
            scope=_pull(repo),
            headers={"Accept": MANIFEST_ACCEPT},
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
        response = self._call(
            "GET",
            f"/v2/{repo}/manifests/{ref}",
            operation=f"read manifest {repo}:{ref}",
            scope=_pull(repo),
            headers={"Accept": MANIFEST_ACCEPT},
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
            media_type = str(_json(raw, f"manifest {repo}:{ref}").get("mediaType", media_type))
        return Manifest(digest=digest, media_type=media_type, raw=raw)

    def put_manifest(self, repo: str, tag: str, manifest: Manifest) -> str:
        actual = sha256_digest(manifest.raw)
        if manifest.digest != actual:
            raise RegistryError(
                f"refusing to push {repo}:{tag}: manifest bytes hash to {actual}, "
                f"not {manifest.digest}"
            )
        response = self._call(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            operation=f"push manifest {repo}:{tag}",
            scope=_push(repo),
            headers={"Content-Type": manifest.media_type},
            data=manifest.raw,
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
                "GET", url, operation=f"list tags of {repo}", scope=_pull(repo), expect={200, 404}
            )
            if response.status_code == 404:
                return []
            found.update(_json(response.content, f"tag list of {repo}").get("tags") or [])
            next_link = response.links.get("next", {}).get("url")
            url = urljoin(response.url, next_link) if next_link else None
        return sorted(found)

    def image_config(self, repo: str, ref: str, *, platform: str = "linux/amd64") -> dict[str, Any]:
        """The image config JSON; ``platform`` chooses within an index or manifest list."""
        manifest = self.manifest(repo, ref)
        document = _json(manifest.raw, f"manifest {repo}:{ref}")
        if manifest.media_type in INDEX_MEDIA_TYPES or "manifests" in document:
            child = _select_platform(document, platform, f"{repo}:{ref}")
            manifest = self.manifest(repo, child)
            document = _json(manifest.raw, f"manifest {repo}@{child}")
        config_digest = (document.get("config") or {}).get("digest")
        if manifest.media_type not in IMAGE_MEDIA_TYPES or not config_digest:
            raise RegistryError(
                f"{repo}:{ref} on registry {self.host} is a {manifest.media_type or 'untyped'} "
                "manifest, not an image manifest with a config"
            )
        response = self._call(
            "GET",
            f"/v2/{repo}/blobs/{config_digest}",
            operation=f"read image config of {repo}:{ref}",
            scope=_pull(repo),
            expect={200},
        )
        if config_digest.startswith("sha256:") and sha256_digest(response.content) != config_digest:
            raise RegistryError(f"image config {config_digest} of {repo}:{ref} is corrupt")
        return _json(response.content, f"image config of {repo}:{ref}")

    def labels(self, repo: str, ref: str) -> dict[str, str]:
        config = self.image_config(repo, ref).get("config") or {}
        return {str(key): str(value) for key, value in (config.get("Labels") or {}).items()}

    def blob_exists(self, repo: str, digest: str) -> bool:
        response = self._call(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            operation=f"check blob {digest} in {repo}",
            scope=_pull(repo),
            expect={200, 404},
        )
        return response.status_code == 200

    def _call(
        self,
        method: str,
        path_or_url: str,
        *,
        operation: str,
        scope: str,
        expect: set[int],
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
    ) -> requests.Response:
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        response = self._send(
            method, url, headers={**(headers or {}), **self._auth_header(scope)}, data=data
        )
        if response.status_code == 401:
            # Once per request: a second 401 means the credentials themselves are wrong.
            self._authenticate(response, scope, operation)
            response = self._send(
                method, url, headers={**(headers or {}), **self._auth_header(scope)}, data=data
            )
        if response.status_code in (401, 403):
            raise self._auth_error(response.status_code, operation, _error_message(response))
        if response.status_code not in expect:
            raise RegistryError(
                f"registry {self.host} answered {response.status_code} to {operation}: "
                + self._redact(_one_line(_error_message(response)))
            )
        return response

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        params: list[tuple[str, str]] | None = None,
        auth: tuple[str, str] | None = None,
        target: str | None = None,
    ) -> requests.Response:
        """One request, retried on 429/5xx and on dropped connections.

        Every request is safe to repeat: reads, and manifest PUTs of exact bytes (the same
        bytes give the same digest). urllib3's Retry could do this only with overrides
        (to spare read timeouts, to cap Retry-After), would not retry a body cut short
        after the headers, and would hide the attempts from the request counts.
        """
        for attempt in range(self.retries + 1):
            self.requests_made += 1
            self.bytes_sent += len(data or b"")
            try:
                response = self._session.request(
                    method,
                    url,
                    headers=headers,
                    data=data,
                    params=params,
                    auth=auth,
                    timeout=self.timeout,
                    allow_redirects=True,
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                # A read timeout already cost `timeout` seconds; repeating it would
                # multiply the wait, so only broken connections are retried.
                retryable = not _never_connected(exc) and not isinstance(exc, requests.Timeout)
                if retryable and attempt < self.retries:
                    time.sleep(_BACKOFF_SECONDS * 2**attempt)
                    continue
                reason = _connection_failure(exc, self.timeout)
                where = target or f"registry {self.host}"
                raise RegistryUnreachable(f"cannot reach {where}: {reason}") from exc
            # Redirects (blob storage) are followed inside requests; count them too.
            self.requests_made += len(response.history)
            if response.status_code not in _TRANSIENT_STATUSES or attempt == self.retries:
                return response
            time.sleep(_retry_delay(response, attempt))
        raise AssertionError("unreachable: the loop returns or raises")

    def _auth_header(self, scope: str) -> dict[str, str]:
        token = self._tokens.get(scope)
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.credentials is not None:
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def _authenticate(self, response: requests.Response, scope: str, operation: str) -> None:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, _, rest = challenge.strip().partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None or self._basic:
                raise self._auth_error(401, operation, _error_message(response))
            # Registries with Basic auth want it on every request: send it up front from now on.
            self._basic = True
            return
        if scheme.lower() != "bearer":
            raise self._auth_error(401, operation, f"unsupported challenge {scheme or 'none'!r}")
        params: dict[str, list[str]] = {}
        for key, quoted, bare in _AUTH_PARAM.findall(rest):
            params.setdefault(key.lower(), []).append(quoted or bare)
        realm = (params.get("realm") or [""])[0]
        if not realm:
            raise self._auth_error(401, operation, "Bearer challenge without a realm")
        # The registry names the scope it wants (e.g. pull,push on a PUT); ask for exactly that.
        query = [("service", service) for service in params.get("service", [])]
        query += [("scope", wanted) for wanted in params.get("scope", [scope] if scope else [])]
        auth = None
        if self.credentials is not None:
            auth = (self.credentials.username, self.credentials.password)
        realm_host = urlsplit(realm).netloc or realm
        token_response = self._send(
            "GET", realm, params=query, auth=auth, target=f"token service {realm_host}"
        )
        if token_response.status_code in (401, 403):
            raise self._auth_error(
                token_response.status_code, operation, f"token service {realm_host} refused"
            )
        if token_response.status_code != 200:
            raise RegistryError(
                f"token service {realm_host} for registry {self.host} answered "
                f"{token_response.status_code} to {operation}"
            )
        body = _json(token_response.content, f"token from {realm_host}")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service {realm_host} returned no token for {operation}")
        self._tokens[scope] = token

    def _auth_error(self, status: int, operation: str, detail: str) -> RegistryAuthError:
        who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
        return RegistryAuthError(
            f"registry {self.host} refused {who} ({status}) for {operation}: "
            + self._redact(_one_line(detail))
        )

    def _redact(self, text: str) -> str:
        # Registry messages are not ours; make sure none can echo the password back.
        if self.credentials is not None and self.credentials.password:
            return text.replace(self.credentials.password, "***")
        return text


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def _push(repo: str) -> str:
    return f"repository:{repo}:pull,push"


def _json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return document


def _retry_delay(response: requests.Response, attempt: int) -> float:
    retry_after = response.headers.get("Retry-After", "")
    if retry_after.isdigit():
        return min(float(retry_after), _MAX_RETRY_AFTER_SECONDS)
    return float(_BACKOFF_SECONDS * 2**attempt)


def _select_platform(index: dict[str, Any], platform: str, what: str) -> str:
    os_name, _, rest = platform.partition("/")
    architecture, _, variant = rest.partition("/")
    available = []
    for entry in index.get("manifests") or []:
        entry_platform = entry.get("platform") or {}
        found = (entry_platform.get("os"), entry_platform.get("architecture"))
        available.append("/".join(filter(None, (*found, entry_platform.get("variant")))))
        # A request without a variant accepts any ("linux/arm64" matches arm64/v8).
        if found == (os_name, architecture) and variant in ("", entry_platform.get("variant")):
            return str(entry["digest"])
    raise RegistryError(
        f"{what} has no image for platform {platform} (it has: {', '.join(available) or 'none'})"
    )

"""The thin executor over the Docker daemon: connect, build, inspect, run, push.

Everything that talks to dockerd goes through here, so the rest of the package stays
testable without one, and daemon errors become one-line PublisherErrors.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import docker
import requests
import urllib3
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from . import buildkit as buildkit_progress
from .errors import BuildError, DockerUnavailable

# Builds stream nothing while pip installs a large wheel set; a short read timeout
# would abort a healthy build.
BUILD_TIMEOUT = 1800


# What the SDK raises when the daemon goes away in the middle of a stream.
CONNECTION_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError)


def lost(exc: BaseException) -> DockerUnavailable:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DockerUnavailable(f"lost the Docker daemon at {daemon_address()}: {reason}")


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect() -> docker.DockerClient:
    """A client for the daemon DOCKER_HOST names, or DockerUnavailable in one line."""
    try:
        probe = docker.from_env(timeout=10)
        probe.ping()
        probe.close()
        return docker.from_env(timeout=BUILD_TIMEOUT)
    except (DockerException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DockerUnavailable(
            f"cannot reach the Docker daemon at {daemon_address()}: {reason} "
            "(is dockerd running? DOCKER_HOST names the daemon to use)"
        ) from None


def image_identity(client: docker.DockerClient, reference: str) -> str:
    """A stable identity for a base image: its registry digest when it has one, else its id.

    A pulled image and the same image looked up remotely give the same answer, so a
    fingerprint does not change because a builder's cache was emptied.
    """
    try:
        image = client.images.get(reference)
    except ImageNotFound:
        image = None
    except APIError as exc:
        raise BuildError(f"cannot inspect base image {reference}: {exc.explanation}") from None
    if image is not None:
        digests = image.attrs.get("RepoDigests") or []
        return str(digests[0].split("@", 1)[1]) if digests else str(image.id)
    try:
        return str(client.images.get_registry_data(reference).id)
    except (APIError, NotFound) as exc:
        raise BuildError(
            f"base image {reference} is not on this machine and cannot be looked up: "
            f"{_explain(exc)}"
        ) from None


def machine(client: docker.DockerClient) -> str:
    """The daemon's own machine (``uname -m``: x86_64, aarch64)."""
    try:
        return str(client.info().get("Architecture", ""))
    except APIError as exc:
        raise BuildError(f"cannot ask the daemon what it runs on: {_explain(exc)}") from None
    except CONNECTION_ERRORS as exc:
        raise lost(exc) from None


def has_image(client: docker.DockerClient, reference: str) -> bool:
    try:
        client.images.get(reference)
        return True
    except ImageNotFound:
        return False


def image_id(client: docker.DockerClient, reference: str) -> str:
    try:
        return str(client.images.get(reference).id)
    except (ImageNotFound, APIError) as exc:
        raise BuildError(f"cannot inspect image {reference}: {_explain(exc)}") from None


def labels(client: docker.DockerClient, reference: str) -> dict[str, str]:
    try:
        found = client.images.get(reference).labels or {}
    except (ImageNotFound, APIError) as exc:
        raise BuildError(f"cannot inspect image {reference}: {_explain(exc)}") from None
    return {str(key): str(value) for key, value in found.items()}


def ensure_image(
    client: docker.DockerClient, reference: str, auth: dict[str, str] | None = None
) -> None:
    """Pull ``reference`` unless the daemon already has it."""
    if has_image(client, reference):
        return
    try:
        client.images.pull(reference, auth_config=auth)
    except (APIError, NotFound) as exc:
        raise BuildError(f"cannot pull base image {reference}: {_explain(exc)}") from None


@dataclass(frozen=True, kw_only=True)
class BuildRequest:
    """One image to build: its context, Dockerfile, arguments, labels, tag."""

    context: Path
    dockerfile: str
    buildargs: dict[str, str]
    labels: dict[str, str]
    tag: str
    platform: str | None = None  # "linux/arm64": run the build's steps on that platform


def build(
    client: docker.DockerClient, request: BuildRequest, *, on_line: Callable[[str], None]
) -> str:
    """Build and tag an image with the daemon's BuildKit; return its id.

    The SDK's ``build`` speaks only to the classic builder, so the context goes to the same
    endpoint through the SDK's API client with ``version=2``, which runs the build on the
    daemon's BuildKit with the posted tar as its context (no session, no buildx). For a
    core image's 224 MB context the classic builder took 17-22 s and BuildKit 8 s
    (docs/benchmarks.md). A daemon without BuildKit builds with the classic builder, which
    can build a full image but not a core: its Dockerfile mounts tini's .deb (`RUN --mount`).
    """
    with context_tar(request.context, request.dockerfile) as body:
        try:
            return _stream_build(client, request, body, on_line, buildkit=True)
        except _NoBuildKit:
            body.seek(0)
            return _stream_build(client, request, body, on_line, buildkit=False)


@contextmanager
def context_tar(context: Path, dockerfile: str) -> Iterator[IO[bytes]]:
    """The build context as an uncompressed tar in a temporary file, the Dockerfile first.

    GNU format, owner root: BuildKit tells a posted tar from a posted Dockerfile by its
    first header, and took the SDK's tar, which opens with a PAX header (its float mtimes),
    for a Dockerfile. Uncompressed, because the daemon unpacks it at once on this machine.
    """
    body = tempfile.TemporaryFile()  # noqa: SIM115 (closed below, or by the caller's with)
    try:
        with tarfile.open(fileobj=body, mode="w", format=tarfile.GNU_FORMAT) as archive:
            archive.add(context / dockerfile, arcname=dockerfile, filter=_as_root)
            for path in sorted(context.iterdir()):
                if path.name != dockerfile:
                    archive.add(path, arcname=path.name, filter=_as_root)
        body.seek(0)
        yield body
    finally:
        body.close()


def _as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class _NoBuildKit(Exception):
    """The daemon cannot build with BuildKit (Windows daemons, BuildKit disabled)."""


def _stream_build(
    client: docker.DockerClient,
    request: BuildRequest,
    body: IO[bytes],
    on_line: Callable[[str], None],
    *,
    buildkit: bool,
) -> str:
    image_id = ""
    last_lines: list[str] = []
    progress = buildkit_progress.Progress()
    try:
        for chunk in _post_build(client, request, body, buildkit=buildkit):
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                tail = " | ".join((progress.tail or last_lines)[-3:])
                raise BuildError(f"{detail.strip()}{f' (after: {tail})' if tail else ''}")
            aux = chunk.get("aux")
            if chunk.get("id") == "moby.buildkit.trace" and isinstance(aux, str):
                try:
                    for line in progress.lines(aux):
                        on_line(line)
                except buildkit_progress.MalformedTrace:
                    pass  # progress only: the build's result does not depend on it
                continue
            text = chunk.get("stream", "")
            for line in text.splitlines():
                if line.strip():
                    last_lines.append(line.strip())
                    on_line(line.rstrip())
            if isinstance(aux, dict) and "ID" in aux:
                image_id = str(aux["ID"])
    except APIError as exc:
        if buildkit and "buildkit" in _explain(exc).lower():
            raise _NoBuildKit() from None
        raise BuildError(f"the daemon refused the build: {_explain(exc)}") from None
    except CONNECTION_ERRORS as exc:
        raise lost(exc) from None
    if not image_id:
        image_id = str(client.images.get(request.tag).id)
    return image_id


def _post_build(
    client: docker.DockerClient, request: BuildRequest, body: IO[bytes], *, buildkit: bool
) -> Iterator[dict[str, Any]]:
    """POST /build with ``body`` as the context; the decoded progress messages."""
    if not buildkit:
        yield from client.api.build(
            fileobj=body,
            custom_context=True,
            dockerfile=request.dockerfile,
            buildargs=request.buildargs,
            labels=request.labels,
            tag=request.tag,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            platform=request.platform,
        )
        return
    params = {
        "version": "2",
        "t": request.tag,
        "dockerfile": request.dockerfile,
        "buildargs": json.dumps(request.buildargs),
        "labels": json.dumps(request.labels),
    }
    if request.platform:
        params["platform"] = request.platform
    # The SDK's own request helpers (private, so untyped): the same session, timeouts and
    # error mapping as its build(), which has no parameter for the builder version.
    api: Any = client.api
    response = api._post(
        api._url("/build"),
        params=params,
        data=body,
        headers={"Content-Type": "application/x-tar"},
        stream=True,
    )
    api._raise_for_status(response)
    yield from api._stream_helper(response, decode=True)


def run(
    client: docker.DockerClient,
    image: str,
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    volumes: dict[str, dict[str, str]] | None = None,
    user: str | None = None,
    network_mode: str = "host",  # so an index or registry on the host's loopback answers
) -> tuple[int, str]:
    """Run a container to completion; return its exit code and combined output."""
    try:
        container = client.containers.create(
            image,
            command,
            environment=env or {},
            network_mode=network_mode,
            volumes=volumes or {},
            user=user or "",
        )
    except (APIError, ImageNotFound) as exc:
        raise BuildError(f"cannot run {image}: {_explain(exc)}") from None
    try:
        container.start()
        status = container.wait(timeout=900)
        output = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
        return int(status.get("StatusCode", 1)), output
    except CONNECTION_ERRORS as exc:
        raise lost(exc) from None
    finally:
        try:
            container.remove(force=True)
        except (DockerException, *CONNECTION_ERRORS):
            pass  # the daemon is gone or the container already is; the error above says so


def _explain(exc: Exception) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return str(text).splitlines()[0] if text else type(exc).__name__

"""Resolving an image's Python packages into its build context, outside the build.

Containers built by the classic builder cannot be trusted with the index: a URL with a
password passed as a build argument is recorded in the image history. So the packages
are resolved before the build, by the target interpreter itself: pip runs in a throwaway
container of the cell's base image (its Python, its platform, its environment markers;
pip on the host cannot evaluate markers for another Python), with the index pip would
use (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, or --index-url) passed in its
environment, and writes wheels into the build context. The build then installs offline
from those wheels, and no index URL or credential reaches any image layer.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from packaging.utils import canonicalize_name

from . import docker_client
from .errors import BuildError

# A credential in a URL ("https://user:secret@host/") is never echoed back to the user.
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_SHA = re.compile(r"\b[0-9a-f]{40}\b")
_PIP_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prefect-publisher" / "pip"


@dataclass(frozen=True, kw_only=True)
class IndexOptions:
    """Where pip looks for packages; empty means "as pip is configured"."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    def pip_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


def redact(text: str) -> str:
    """Hide credentials embedded in URLs."""
    return _CREDENTIALS.sub("***@", text)


@dataclass(frozen=True, kw_only=True)
class PipRequest:
    """What to resolve: requirements, a local wheel they may name, projects to leave out.

    ``local_wheel`` is mounted at /source so a requirement can name it as
    ``prefect @ file:///source/NAME``. Projects named in ``exclude`` are left out (the
    parent image already has them).
    """

    requirements: tuple[str, ...]
    local_wheel: Path | None = None
    exclude: tuple[str, ...] = ()


def download(
    client: docker.DockerClient,
    request: PipRequest,
    *,
    base_image: str,
    dest: Path,
    index: IndexOptions,
) -> list[Path]:
    """Resolve the request with the base image's own pip; wheels land in ``dest``.

    First ``pip install --dry-run --report`` says what pip would add to the base image
    (packages the base already satisfies are left out, so an image never carries a second
    copy of them); then exactly those pins are fetched as wheels.
    """
    requirements = request.requirements
    dest.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {key: os.environ[key] for key in _PIP_ENV if os.environ.get(key)}
    env.update(
        {
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_ROOT_USER_ACTION": "ignore",
            "PIP_CACHE_DIR": "/cache",
            "HOME": "/tmp",
            # A dead index would otherwise cost minutes of back-off per request.
            "PIP_RETRIES": "2",
            "PIP_TIMEOUT": "30",
        }
    )
    mounts = {
        str(dest.resolve()): {"bind": "/wheels", "mode": "rw"},
        str(CACHE): {"bind": "/cache", "mode": "rw"},
    }
    if request.local_wheel is not None:
        mounts[str(request.local_wheel.resolve().parent)] = {"bind": "/source", "mode": "ro"}

    def pip(*args: str) -> tuple[int, str]:
        return docker_client.run(
            client,
            base_image,
            ["pip", *args, *index.pip_args()],
            env=env,
            volumes=mounts,
            user=f"{os.getuid()}:{os.getgid()}",
        )

    what = " ".join(requirements)
    report = dest / "report.json"
    code, output = pip(
        "install", "--dry-run", "--quiet", "--report", "/wheels/report.json", *requirements
    )
    fetch = ["wheel", "--wheel-dir", "/wheels"]
    if code != 0 and "--report" in output and "no such option" in output:
        # pip older than 22.2 (as in python:3.6 images): fetch the whole closure instead.
        fetch += requirements
    elif code != 0:
        raise BuildError(f"cannot resolve {what} with {base_image}: {_pip_reason(output)}")
    else:
        pins = _pins(json.loads(report.read_text()), request.exclude)
        report.unlink()
        if not pins:
            return []
        fetch += ["--no-deps", *pins]
    code, output = pip(*fetch)
    if code != 0:
        raise BuildError(f"cannot fetch wheels for {what} with {base_image}: {_pip_reason(output)}")
    return sorted(dest.glob("*.whl"))


def _pins(report: dict[str, Any], exclude: Sequence[str] = ()) -> list[str]:
    """Exact requirements for what a pip installation report says it would install."""
    pins = []
    skip = {canonicalize_name(name) for name in exclude}
    for item in report.get("install", []):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if canonicalize_name(name) in skip:
            continue
        url = str(item.get("download_info", {}).get("url", ""))
        # A locally built wheel (a nightly) is named by its file, not looked up by version.
        pins.append(
            f"{name} @ {url}" if url.startswith("file:///source/") else f"{name}=={version}"
        )
    return pins


def revision_of(wheels: Sequence[Path], project: str = "prefect") -> str | None:
    """The git commit a project's wheel was built from, when its build recorded one.

    Prefect's builds write it into a generated module (``_build_info.py`` in 3.x,
    versioneer's ``_version.py`` before).
    """
    prefix = project.replace("-", "_") + "-"
    for wheel in wheels:
        if not wheel.name.lower().startswith(prefix):
            continue
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(("/_build_info.py", "/_version.py")):
                    match = _SHA.search(archive.read(name).decode("utf-8", "replace"))
                    if match:
                        return match.group(0)
    return None


def _pip_reason(output: str) -> str:
    """pip's own one-line explanation, credentials removed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    chosen = errors[0] if errors else (lines[-1] if lines else "pip failed without a message")
    return redact(chosen.removeprefix("ERROR: "))

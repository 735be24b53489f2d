"""Resolving an image's Python packages, and installing them into its build context,
outside the build.

A build cannot be trusted with the index: a URL with a password passed as a build
argument is recorded in the history of the image a RUN uses it in. So the packages
are resolved before the build, by the target interpreter itself: pip runs in a throwaway
container of the cell's base image (its Python, its platform, its environment markers;
pip on the host cannot evaluate markers for another Python), with the index pip would
use (PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, or --index-url) passed in its
environment, and fetches the wheels. They are then installed, offline, by the same
image's pip (``install``) into the trees whose archives the Dockerfiles add: no index URL
or credential reaches any image layer.

For a foreign platform both run natively instead, in the base's image for the daemon's
platform, with pip told the foreign image's tags and markers (target.py): under QEMU they
took over 20 minutes.
"""

from __future__ import annotations

import email.parser
import json
import os
import re
import shutil
import threading
import urllib.parse
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from packaging.utils import canonicalize_name

from . import cache, docker_client
from .errors import BuildError
from .installs import link_or_copy
from .target import PIP_WRAPPER, Target, constraints

# A credential in a URL ("https://user:secret@host/") is never echoed back to the user.
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_SHA = re.compile(r"\b[0-9a-f]{40}\b")
_PIP_ENV = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST")
CACHE = cache.folder("pip")
# Wheels fetched by the URL and hash a resolution gave (``_fetch``), by their sha256.
STORE = cache.folder("wheels")


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
    parent image already has them). ``constraints`` ("name==version") hold projects at the
    versions a parent image will have, when the resolution runs before that image exists.
    ``installed`` are wheels the parent image will have installed: pip is shown them as
    installed (``_as_installed``), so it reads their metadata from disk instead of
    downloading every one of them from the index again to read it there.
    """

    requirements: tuple[str, ...]
    local_wheel: Path | None = None
    exclude: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    installed: tuple[Path, ...] = ()


def download(
    client: docker.DockerClient,
    request: PipRequest,
    *,
    base_image: str,
    dest: Path,
    index: IndexOptions,
    target: Target | None = None,
) -> list[Path]:
    """Resolve the request with the base image's own pip; wheels land in ``dest``.

    First ``pip install --dry-run --report`` says what pip would add to the base image
    (packages the base already satisfies are left out, so an image never carries a second
    copy of them); then exactly those files are fetched, by the URL and hash pip resolved
    (``_FETCH``), and whatever that cannot fetch is fetched by pin with ``pip wheel``.

    With a ``target``, ``base_image`` is the native image of the foreign one the target
    describes, and its pip resolves as the foreign one's would (target.py): with the
    foreign image's tags and markers, keeping what that image has installed.
    """
    requirements = request.requirements
    exclude = request.exclude
    dest.mkdir(parents=True, exist_ok=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {key: os.environ[key] for key in _PIP_ENV if os.environ.get(key)}
    env.update(_QUIET_PIP)
    # A dead index would otherwise cost minutes of back-off per request.
    env.update({"PIP_CACHE_DIR": "/cache", "PIP_RETRIES": "2", "PIP_TIMEOUT": "30"})
    mounts = {
        str(dest.resolve()): {"bind": "/wheels", "mode": "rw"},
        str(CACHE): {"bind": "/cache", "mode": "rw"},
    }
    if request.local_wheel is not None:
        mounts[str(request.local_wheel.resolve().parent)] = {"bind": "/source", "mode": "ro"}
    scratch = [dest / "report.json"]
    options: list[str] = []
    where = f"with {base_image}"
    pins = list(request.constraints)
    if target is not None:
        where = f"for {target.platform} with the {target.native_platform} pip of {base_image}"
        pins += constraints(target.foreign, target.native, request.exclude)
    if pins:
        (dest / "constraints.txt").write_text("".join(f"{pin}\n" for pin in pins))
        scratch.append(dest / "constraints.txt")
        options = ["--constraint", "/wheels/constraints.txt"]
    if target is not None:
        # What the foreign image has, pip there would have kept: not the image's to add.
        exclude = (*exclude, *target.foreign.installed)
        # An sdist would be built for the native platform here.
        options += ["--only-binary", ":all:"]
        scratch.append(_write_target(dest, target))

    def run(
        command: list[str], *, image: str, more: dict[str, str] | None = None
    ) -> tuple[int, str]:
        return docker_client.run(
            client,
            image,
            command,
            env={**env, **(more or {})},
            volumes=mounts,
            user=f"{os.getuid()}:{os.getgid()}",
        )

    def pip(*args: str, more: dict[str, str] | None = None) -> tuple[int, str]:
        command = [*_pip_command(target), *args, *options, *index.pip_args()]
        return run(command, image=base_image, more=more)

    what = " ".join(requirements)
    installed = dest / "installed"
    try:
        more = {}
        if request.installed:
            _as_installed(request.installed, installed)
            # pip looks for installed packages on sys.path.
            more["PYTHONPATH"] = "/wheels/installed"
        code, output = pip(
            "install",
            *("--dry-run", "--quiet", "--report", "/wheels/report.json", *requirements),
            more=more,
        )
        fetch = ["wheel", "--wheel-dir", "/wheels"]
        if code != 0 and "--report" in output and "no such option" in output:
            # pip older than 22.2 (as in python:3.6 images): fetch the whole closure instead.
            fetch += requirements
        elif code != 0:
            raise BuildError(f"cannot resolve {what} {where}: {_pip_reason(output)}")
        else:
            wanted = _wanted(json.loads(scratch[0].read_text()), exclude)
            if not wanted:
                return []
            scratch += [dest / _FETCH_LIST, dest / _FETCH_LEFT]
            left = _fetch(lambda *args: run([*args], image=base_image), dest, wanted)
            if not left:
                return sorted(dest.glob("*.whl"))
            fetch += ["--no-deps", *left]
        code, output = pip(*fetch)
        if code != 0:
            raise BuildError(f"cannot fetch wheels for {what} {where}: {_pip_reason(output)}")
    finally:
        for path in scratch:
            path.unlink(missing_ok=True)
        shutil.rmtree(installed, ignore_errors=True)
    return sorted(dest.glob("*.whl"))


# What pip's resolver reads of an installed distribution. pip 23.0 (python:3.11-slim's)
# with its importlib metadata backend parses an installed METADATA file again at every
# lookup, some 140 times per distribution in one resolution: with the long descriptions
# in, a resolution against a core's ~100 installed packages took 7-10 s, as long as one
# that downloads them all, and 4.6 s without (pip 25: 1.1-1.3 s either way).
_INSTALLED_FIELDS = (
    "Metadata-Version",
    "Name",
    "Version",
    "Requires-Python",
    "Requires-Dist",
    "Provides-Extra",
)


def _as_installed(wheels: Sequence[Path], folder: Path) -> None:
    """Lay out the wheels' distributions in ``folder`` as pip finds installed ones on
    sys.path (NAME-VERSION.dist-info/METADATA), with only the metadata its resolver reads.
    A wheel without metadata is left out: pip then fetches it from the index."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            name = next(
                (
                    inner
                    for inner in archive.namelist()
                    if inner.count("/") == 1 and inner.endswith(".dist-info/METADATA")
                ),
                None,
            )
            if name is None:
                continue
            message = email.parser.BytesHeaderParser().parsebytes(archive.read(name))
        lines = [
            f"{field}: {' '.join(str(value).split())}"
            for field in _INSTALLED_FIELDS
            for value in message.get_all(field, [])
        ]
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogateescape")


def install(
    client: docker.DockerClient,
    *,
    image: str,
    wheels: Path,
    dest: Path,
    staging: str | None = None,
    target: Target | None = None,
) -> None:
    """Install the wheels of the folder ``wheels`` (and its pinned requirements.txt) under
    ``dest`` as ``image``'s pip installs them with ``--root``: the system's site- or
    dist-packages and /usr/local/bin, scripts pointing at its Python, byte-compiled.

    Offline and --no-deps: the resolution already happened. With a ``target``, ``image`` is
    the native image of the foreign one the target describes, and the tree is the one the
    foreign image's pip would write. ``dest`` is mounted where the build's install stage
    used to stage it (/staging/NAME, NAME being ``staging`` or else ``dest``'s name), so the
    byte code records the same paths wherever ``dest`` is.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if not any(wheels.glob("*.whl")):
        return
    root = f"/staging/{staging or dest.name}"
    written = _write_target(wheels, target)
    try:
        code, output = docker_client.run(
            client,
            image,
            [
                *_pip_command(target, always=True),
                "install",
                *("--no-cache-dir", "--no-index", "--no-deps", "--no-warn-script-location"),
                *("--ignore-installed", "--find-links", "/wheels", "--root", root),
                *("--requirement", "/wheels/requirements.txt"),
            ],
            env={**_QUIET_PIP, "PIP_NO_INPUT": "1"},
            volumes={
                str(wheels.resolve()): {"bind": "/wheels", "mode": "ro"},
                str(dest.resolve()): {"bind": root, "mode": "rw"},
            },
            user=f"{os.getuid()}:{os.getgid()}",
            network_mode="none",
        )
    finally:
        written.unlink(missing_ok=True)
    if code != 0:
        where = f" for {target.platform}" if target is not None else ""
        raise BuildError(f"cannot install {dest.name}{where} with {image}: {_pip_reason(output)}")


_QUIET_PIP = {
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_ROOT_USER_ACTION": "ignore",
    "HOME": "/tmp",
}


def _pip_command(target: Target | None, *, always: bool = False) -> list[str]:
    """pip, or pip through the wrapper that makes it work for ``target`` (and byte-compile
    reproducibly: ``always`` uses it without a target too)."""
    if target is None and not always:
        return ["pip"]
    return ["python", "-c", PIP_WRAPPER, "/wheels/target.json"]


def _write_target(folder: Path, target: Target | None) -> Path:
    path = folder / "target.json"
    path.write_text(target.to_json() if target is not None else "{}")
    return path


@dataclass(frozen=True)
class Wanted:
    """One file a pip installation report says pip would install, and how to ask for it."""

    pin: str  # for pip: name==version, or name @ URL for a locally built wheel
    url: str  # where the resolution found it ("" when the report does not say)
    sha256: str  # its hash, when the index gave one ("" otherwise)


def _wanted(report: dict[str, Any], exclude: Sequence[str] = ()) -> list[Wanted]:
    """What a pip installation report says it would install, but ``exclude``."""
    wanted = []
    skip = {canonicalize_name(name) for name in exclude}
    for item in report.get("install", []):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if canonicalize_name(name) in skip:
            continue
        info = item.get("download_info", {})
        url = str(info.get("url", ""))
        # A locally built wheel (a nightly) is named by its file, not looked up by version.
        pin = f"{name} @ {url}" if url.startswith("file:///source/") else f"{name}=={version}"
        sha256 = str(info.get("archive_info", {}).get("hashes", {}).get("sha256", ""))
        wanted.append(Wanted(pin=pin, url=url, sha256=sha256))
    return wanted


def _pins(report: dict[str, Any], exclude: Sequence[str] = ()) -> list[str]:
    """Exact requirements for what a pip installation report says it would install."""
    return [entry.pin for entry in _wanted(report, exclude)]


# Fetches the files a dry run resolved, by the URLs and hashes in its report, with the
# image's Python and its standard library only. pip's own second pass (`pip wheel
# --no-deps` of the pins) asks the index for every project's page again and, from an index
# that sends no caching headers (pypiserver), downloads every file again: 3.2-5.3 core-s
# for prefect's ~100 wheels against 0.9 for this (docs/benchmarks.md). The first file it
# cannot fetch (an index that wants the credential pip had, a proxy or certificate only
# pip is told of, a wrong hash) ends it; pip then fetches that one and the rest by pin.
_FETCH = r"""
import hashlib, json, os, sys, urllib.parse, urllib.request
listing, left_file = sys.argv[1], sys.argv[2]
folder = os.path.dirname(listing)
with open(listing) as file:
    wanted = json.load(file)
left, failed = [], False
for entry in wanted:
    if failed or not entry["file"]:
        left.append(entry["pin"])
        continue
    path = os.path.join(folder, entry["file"])
    try:
        digest = hashlib.sha256()
        with urllib.request.urlopen(entry["url"], timeout=30) as response:
            with open(path, "wb") as out:
                for block in iter(lambda: response.read(1 << 20), b""):
                    digest.update(block)
                    out.write(block)
        if entry["sha256"] and digest.hexdigest() != entry["sha256"]:
            raise ValueError("sha256 %s, not %s" % (digest.hexdigest(), entry["sha256"]))
    except Exception as exc:
        print("left to pip: %s: %s" % (entry["pin"], exc), file=sys.stderr)
        if os.path.exists(path):
            os.unlink(path)
        left.append(entry["pin"])
        failed = True
with open(left_file, "w") as file:
    json.dump(left, file)
"""
_FETCH_LIST, _FETCH_LEFT = "fetch.json", "left.json"


def _fetch(run: Callable[..., tuple[int, str]], dest: Path, wanted: Sequence[Wanted]) -> list[str]:
    """Fetch ``wanted`` into ``dest``: from ``STORE`` what an earlier resolution fetched with
    the same hash, the rest with ``_FETCH`` run by ``run(*command)`` in a container that has
    ``dest`` as /wheels. The pins left for pip."""
    listing = []
    for entry in wanted:
        file = _wheel_file(entry.url)
        if file and entry.sha256 and _from_store(entry.sha256, dest / file):
            continue
        listing.append({"pin": entry.pin, "url": entry.url, "sha256": entry.sha256, "file": file})
    if not any(item["file"] for item in listing):
        return [item["pin"] for item in listing]
    (dest / _FETCH_LIST).write_text(json.dumps(listing))
    code, _ = run("python", "-c", _FETCH, f"/wheels/{_FETCH_LIST}", f"/wheels/{_FETCH_LEFT}")
    left_file = dest / _FETCH_LEFT
    if code != 0 or not left_file.is_file():
        # Whatever went wrong (an image without `python`), pip can still do all of it.
        for item in listing:
            if item["file"]:
                (dest / item["file"]).unlink(missing_ok=True)
        return [item["pin"] for item in listing]
    left = [str(pin) for pin in json.loads(left_file.read_text())]
    for item in listing:
        if item["file"] and item["sha256"] and item["pin"] not in left:
            _to_store(dest / item["file"], item["sha256"])
    return left


def _from_store(sha256: str, target: Path) -> bool:
    """Put the stored file of this hash at ``target``; False when there is none."""
    stored = STORE / sha256
    if not stored.is_file():
        return False
    link_or_copy(stored, target)
    return True


def _to_store(path: Path, sha256: str) -> None:
    """Keep a file whose hash the fetch checked, for every later resolution (whole or not at
    all: a reader meanwhile, or a run killed halfway, never sees part of one)."""
    stored = STORE / sha256
    if stored.exists():
        return
    scratch = STORE / f".{sha256}.{os.getpid()}.{threading.get_ident()}"
    try:
        STORE.mkdir(parents=True, exist_ok=True)
        link_or_copy(path, scratch)
        scratch.replace(stored)
    except OSError:
        # Only not kept: that costs a later resolution a download, and must not fail this one.
        scratch.unlink(missing_ok=True)


def _wheel_file(url: str) -> str:
    """The file name a wheel's URL gives it, or "" when the URL is not a wheel's that the
    standard library can fetch (an sdist is built into a wheel by pip)."""
    parsed = urllib.parse.urlsplit(url)
    name = urllib.parse.unquote(parsed.path.rsplit("/", 1)[-1])
    if parsed.scheme not in ("http", "https", "file") or not name.endswith(".whl"):
        return ""
    if "/" in name or name.startswith("."):
        return ""
    return name


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

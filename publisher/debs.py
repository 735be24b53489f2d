"""The core image's system packages (tini), fetched outside the build by the base's own apt.

The core Dockerfile installs the .deb files of its ``debs/`` context folder with dpkg, so
the build runs no `apt-get update`. For a foreign platform that step ran under QEMU and
took about two minutes per base (apt parsing Debian's package lists, emulated); here the
same apt runs natively, in the base's image for the daemon's platform (same tag, same
Debian suite), told to act as the foreign architecture. It verifies what it downloads
against the suite's signed lists, as apt-get install would.

What a base gets is kept on disk under its identity: a base image never changes, so the
packages fetched for it are fetched once, as the builder's cache used to keep the layer of
the `apt-get install` it ran once per base.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import docker

from . import cache, docker_client
from .errors import BuildError
from .platforms import Platform

# What the core image installs from Debian: tini reaps zombies and forwards signals to the
# flow run (core.Dockerfile's ENTRYPOINT). Debian's current tini is what we want, so it is
# not pinned.
PACKAGES = ("tini",)

CACHE = cache.folder("debs")

# OCI architecture (and variant) -> Debian's name for it.
_DEBIAN_ARCHITECTURES = {
    ("amd64", ""): "amd64",
    ("arm64", ""): "arm64",
    ("arm", "v7"): "armhf",
    ("arm", "v6"): "armel",
    ("386", ""): "i386",
    ("ppc64le", ""): "ppc64el",
    ("s390x", ""): "s390x",
    ("riscv64", ""): "riscv64",
}

# apt as an unprivileged user with its own lists and cache (the image's are empty in slim
# images and not the caller's to write), for the architecture in $ARCH when there is one.
_SCRIPT = r"""
options="-qq -o Dir::State::Lists=/tmp/apt/lists -o Dir::Cache=/tmp/apt/cache
 -o Debug::NoLocking=1 -o APT::Sandbox::User=$(id -un 2>/dev/null || id -u)"
if [ -n "${ARCH:-}" ]; then
    options="$options -o APT::Architecture=$ARCH -o APT::Architectures::=$ARCH"
fi
mkdir -p /tmp/apt/lists/partial /tmp/apt/cache/archives/partial
cd /debs
apt-get $options update
apt-get $options download "$@"
"""


def debian_architecture(platform: str) -> str:
    """Debian's name for an OCI platform's architecture (``linux/arm/v7`` is ``armhf``)."""
    parsed = Platform.parse(platform)
    found = _DEBIAN_ARCHITECTURES.get((parsed.architecture, parsed.variant))
    if found is None:
        raise BuildError(f"no Debian architecture is known for {platform}")
    return found


def fetch(
    client: docker.DockerClient,
    *,
    image: str,
    identity: str,
    dest: Path,
    platform: str | None = None,
    packages: tuple[str, ...] = PACKAGES,
) -> list[Path]:
    """Copy the .deb files of ``packages`` for the base known as ``identity`` into ``dest``,
    downloading them with ``image``'s apt the first time. With a ``platform``, apt fetches
    that platform's packages (``image`` may be of another one: the native image of the same
    base); without, the image's own."""
    architecture = debian_architecture(platform) if platform else ""
    key = hashlib.sha256(f"{identity}\0{architecture}\0{' '.join(packages)}".encode()).hexdigest()
    cached = CACHE / key[:32]
    if not cached.is_dir():
        _download(client, image=image, architecture=architecture, packages=packages, to=cached)
    dest.mkdir(parents=True, exist_ok=True)
    found = []
    for deb in sorted(cached.glob("*.deb")):
        shutil.copy2(deb, dest / deb.name)
        found.append(dest / deb.name)
    return found


def _download(
    client: docker.DockerClient,
    *,
    image: str,
    architecture: str,
    packages: tuple[str, ...],
    to: Path,
) -> None:
    to.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded beside the cache entry and renamed into place: an interrupted download
    # leaves no entry that looks complete.
    scratch = Path(tempfile.mkdtemp(prefix=".fetch-", dir=to.parent))
    try:
        code, output = docker_client.run(
            client,
            image,
            ["sh", "-ec", _SCRIPT, "fetch", *packages],
            env={"ARCH": architecture} if architecture else {},
            volumes={str(scratch.resolve()): {"bind": "/debs", "mode": "rw"}},
            user=f"{os.getuid()}:{os.getgid()}",
        )
        what = f"{' '.join(packages)}{f' for {architecture}' if architecture else ''}"
        if code != 0:
            tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
            raise BuildError(f"cannot fetch {what} with the apt of {image}: {tail}")
        if len(list(scratch.glob("*.deb"))) < len(packages):
            raise BuildError(f"the apt of {image} fetched no .deb for some of {what}")
        try:
            scratch.rename(to)
        except OSError:
            if not to.is_dir():  # else another run fetched the same packages meanwhile
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

"""Images the publisher makes from layers it archived itself, loaded into the daemon.

A core image is its parent, the base with tini and the entrypoint (built by BuildKit from
core.Dockerfile), plus two layers of installed packages: prefect's dependencies, then
prefect. An image with extras is its core plus one layer of what the extras add. Those
layers are archives the publisher wrote (build.py installs the wheels outside any
build). Posted to BuildKit for ``ADD``, each archive was unpacked, diffed and written
back as a layer, and the image then had to be read back out of the daemon to be pushed.
Here the publisher writes the image's config itself (the parent's, with the new layers'
diff ids, history and the image's labels) and loads config and new layers with `POST
/images/load`: the daemon unpacks each new layer once and reads no file for the
parent's layers, which it holds. For a core's two layers that took 5.5 s and 4.8 core-s
against BuildKit's 12-13 s and 7.2 (docs/benchmarks.md).

What was loaded is kept for the run (`Assemblies`): its config and the layer archives,
so that push.py uploads an image it made from those, not from a save of the image.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import docker

from . import cache, docker_client, push
from .errors import BuildError

CONFIGS = cache.folder("configs")  # configs of parents read from the daemon, by image id
# Describe the build of the parent's last step, not this image: dropped from the child.
_PARENT_ONLY = ("container", "container_config", "moby.buildkit.buildinfo.v1")
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Layer:
    """A layer archive the publisher wrote: its sha256 is the layer's diff id."""

    diff_id: str
    path: Path
    created_by: str  # the image history's line for it


@dataclass(frozen=True)
class Assembled:
    """An image made here: its config's bytes (whose sha256 is its id), the image it
    was made on, and the layers it added to that parent."""

    config: bytes
    parent: str
    layers: tuple[Layer, ...]

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()

    @property
    def diff_ids(self) -> list[str]:
        return list(json.loads(self.config)["rootfs"]["diff_ids"])


def child_config(
    parent: bytes, layers: Sequence[Layer], *, labels: Mapping[str, str], created: str
) -> bytes:
    """The config of ``parent`` with ``layers`` on top and ``labels`` added to its own.

    What ``FROM parent`` plus an ``ADD`` of each layer and the build's labels gives:
    environment, entrypoint, command, user and platform are the parent's."""
    try:
        document: dict[str, Any] = json.loads(parent)
        rootfs = document["rootfs"]
        diff_ids = list(rootfs["diff_ids"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BuildError(f"the parent's config is not an image config: {exc}") from None
    for key in _PARENT_ONLY:
        document.pop(key, None)
    rootfs["diff_ids"] = [*diff_ids, *(layer.diff_id for layer in layers)]
    document["history"] = [
        *(document.get("history") or []),
        *({"created": created, "created_by": layer.created_by} for layer in layers),
    ]
    config = document.setdefault("config", {})
    config["Labels"] = {**(config.get("Labels") or {}), **labels}
    document["created"] = created
    return json.dumps(document, separators=(",", ":")).encode()


def load(client: docker.DockerClient, image: Assembled, tag: str) -> None:
    """Load ``image`` into the daemon as ``tag``; its parent must be there already."""
    read, write = os.pipe()
    failed: list[BaseException] = []

    def archive() -> None:
        # Written while the daemon reads it: no second copy of the layers on disk here.
        try:
            with os.fdopen(write, "wb", buffering=_BLOCK) as out:
                write_archive(out, image, tag)
        except BaseException as exc:  # handed to the caller, which reports it
            failed.append(exc)

    writer = threading.Thread(target=archive, name="load-archive", daemon=True)
    writer.start()
    try:
        with os.fdopen(read, "rb") as source:
            client.images.load(source)
    except docker.errors.ImageLoadError as exc:
        raise BuildError(f"the daemon did not load {tag}: {exc}") from None
    except docker.errors.APIError as exc:
        raise BuildError(f"the daemon did not load {tag}: {exc.explanation or exc}") from None
    except docker_client.CONNECTION_ERRORS as exc:
        raise docker_client.lost(exc) from None
    finally:
        writer.join()
    if failed:
        raise BuildError(f"cannot write the archive of {tag}: {failed[0]}")
    loaded = docker_client.image_id(client, tag)
    if loaded != image.id:
        raise BuildError(f"the daemon loaded {tag} as {loaded}, not as {image.id}")


def write_archive(out: BinaryIO, image: Assembled, tag: str) -> None:
    """``image`` as `docker load` reads it: config, manifest.json, then the new layers.

    The manifest names every layer, but the archive holds only the new ones: the daemon
    skips a layer whose chain it has without opening its file (dockerd 20.10)."""
    diff_ids = image.diff_ids
    new = {layer.diff_id: layer for layer in image.layers}
    names = [f"{index}/layer.tar" for index in range(len(diff_ids))]
    config_name = image.id.removeprefix("sha256:") + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": names}]).encode()
    for name, data in ((config_name, image.config), ("manifest.json", manifest)):
        _member(out, name, len(data))
        out.write(data)
        _pad(out, len(data))
    for index, diff_id in enumerate(diff_ids):
        if diff_id not in new:
            continue
        with new[diff_id].path.open("rb") as layer:
            size = os.fstat(layer.fileno()).st_size
            _member(out, names[index], size)
            shutil.copyfileobj(layer, out, _BLOCK)
        _pad(out, size)
    out.write(bytes(2 * tarfile.BLOCKSIZE))


def _member(out: BinaryIO, name: str, size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    out.write(info.tobuf(tarfile.GNU_FORMAT))


def _pad(out: BinaryIO, size: int) -> None:
    out.write(bytes(-size % tarfile.BLOCKSIZE))


def archive_layer(
    entries: Mapping[str, Path], path: Path, created_by: str, *, mtime: int
) -> Layer | None:
    """The layer of ``entries`` (path in the image, without a leading /, and the file,
    folder or link it is), written to ``path`` in their order, owner root, timed
    ``mtime``, and hashed as it is written; no entries make no layer. No entry for /
    itself, which would restamp it.

    One time for all: pip writes files with the time it installed them, so the same
    dependencies installed again (a later run, another machine) would make a new layer,
    with a new diff id to load and upload, where they now make the same one. Byte code
    stays valid: its sources were compiled with this time already (target.PIP_WRAPPER).
    """
    if not entries:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        hashing = _Hashing(file)
        # tarfile writing an archive calls only write() and tell().
        sink = cast(BinaryIO, hashing)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.GNU_FORMAT) as out:
            for name, source in entries.items():
                found = os.lstat(source)
                if stat.S_ISREG(found.st_mode):
                    info = _entry(name, found, mtime, tarfile.REGTYPE)
                    info.size = found.st_size
                    with open(source, "rb") as content:
                        out.addfile(info, content)
                elif stat.S_ISDIR(found.st_mode):
                    out.addfile(_entry(name, found, mtime, tarfile.DIRTYPE))
                elif stat.S_ISLNK(found.st_mode):
                    info = _entry(name, found, mtime, tarfile.SYMTYPE)
                    info.linkname = os.readlink(source)
                    out.addfile(info)
                else:
                    raise BuildError(f"{source}: not a file, folder or link, cannot be in a layer")
    digest = "sha256:" + hashing.sha256.hexdigest()
    return Layer(diff_id=digest, path=path, created_by=created_by)


def _entry(name: str, found: os.stat_result, mtime: int, kind: bytes) -> tarfile.TarInfo:
    # Made here rather than by TarFile.gettarinfo, which looks up each file's owner and
    # group by name only for them to be replaced by root.
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(found.st_mode)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


class _Hashing:
    """A file that hashes what is written to it: the archive is read once, not twice."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self._written = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self._written += len(data)
        return self.file.write(data)

    def tell(self) -> int:  # tarfile asks where the archive starts
        return self._written


class Assemblies:
    """The images made in this run and the parents they were made on, for the lanes
    that make them and the uploader that pushes them. Layer archives stay in ``folder``
    until the run ends: an image's push may need its parent's (a core not published
    itself under its full images)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._made: dict[str, Assembled] = {}
        self._saved: dict[str, push.Saved] = {}  # by image id
        self._lock = threading.Lock()
        self._saving: dict[str, threading.Lock] = {}
        self._files = itertools.count()

    def new_file(self, name: str) -> Path:
        """A path of its own in the run's folder, for a layer archive named ``name``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder / f"{next(self._files)}-{name}"

    def add(self, image: Assembled) -> None:
        with self._lock:
            self._made[image.id] = image
        # A later run making an image with extras of this one, kept by this daemon, reads
        # its config here instead of saving the whole image.
        _keep(image.id, image.config)

    def get(self, image_id: str) -> Assembled | None:
        with self._lock:
            return self._made.get(image_id)

    def chain(self, image_id: str) -> tuple[list[Assembled], str]:
        """The images made here from ``image_id`` down, and the image at the bottom that
        was not made here (a BuildKit build or a pulled image)."""
        made: list[Assembled] = []
        current = image_id
        while (found := self.get(current)) is not None:
            made.append(found)
            current = found.parent
        return made, current

    def config_of(self, client: docker.DockerClient, image_id: str) -> bytes:
        """The config of an image, as its id's bytes: made here, read before (kept by id
        in CONFIGS, checked against the id on reading), or read from the daemon."""
        made = self.get(image_id)
        if made is not None:
            return made.config
        kept = cache.read_json(CONFIGS / image_id.removeprefix("sha256:"))
        if isinstance(kept, dict) and isinstance(kept.get("config"), str):
            found = str(kept["config"]).encode()
            if "sha256:" + hashlib.sha256(found).hexdigest() == image_id:
                return found
        config = self.saved(client, image_id).config
        _keep(image_id, config)
        return config

    def saved(self, client: docker.DockerClient, image_id: str) -> push.Saved:
        """An image not made here, saved from the daemon once in this run (push.save):
        its config and layer archives, checked against its id."""
        with self._lock:
            lock = self._saving.setdefault(image_id, threading.Lock())
        with lock:
            if image_id not in self._saved:
                folder = self.folder / f"saved-{image_id.removeprefix('sha256:')[:16]}"
                shutil.rmtree(folder, ignore_errors=True)
                self._saved[image_id] = push.save(client, image_id, folder)
            return self._saved[image_id]


def _keep(image_id: str, config: bytes) -> None:
    cache.write_json(CONFIGS / image_id.removeprefix("sha256:"), {"config": config.decode()})

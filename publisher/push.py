"""Pushing a local image to a registry from its layer archives, not with the daemon's push.

The daemon's push compresses every layer it has not pushed before with Go's gzip at
its default level, one layer per core, and that was the largest part of the daemon's
work in a publish (docs/benchmarks.md). An image the publisher made (assemble.py) is
pushed from the config and layer archives it was made of; the layers below them, which
it did not make (the base's, tini's, the entrypoint's), are saved from the daemon once
in a run, and only when the registry lacks one of them. Any other image is saved from
the daemon (its config and uncompressed layer tars, `docker save`). Each layer is
compressed with
zlib-ng at level 5 (a third of zlib's CPU at level 6 for 1.5% more bytes), and blobs and
manifest are uploaded over the registry API. A full image pushed to an empty registry
took 15.6-17.3 core-seconds of the machine this way and 29-32 by the daemon, for the
same bytes.

The pushed manifest names the image's own config, so its digest is the id of the image
that was tested; each saved layer is checked against the config's diff ids before it is
compressed. What a layer compressed to is recorded by its diff id (``RECORD``), so a
layer already in the registry (a base's, or a core's under its full images) is found
with one HEAD instead of being compressed again; gzip's output at a fixed level is the
same for the same tar, so a lost record costs only the CPU.

What this gives up: the daemon records a registry digest (RepoDigests) for an image it
pushed, and not for one pushed this way, so a later build on a released core that this
machine uploaded pulls it once (its layers are downloaded, then found to be the local
ones); and an image not made here is read whole from the daemon, its layers already in
the registry too (7-8 core-seconds for a 400 MB image whose layers all were).
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import docker
from zlib_ng import zlib_ng

from . import cache, docker_client
from .errors import RegistryError
from .registry import DOCKER_MANIFEST, Manifest, sha256_digest

if TYPE_CHECKING:
    from .assemble import Assembled, Assemblies

RECORD = cache.folder("layers")  # diff id -> the blob its layer compressed to
LEVEL = 5
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
_BLOCK = 1 << 20


class Blobs(Protocol):
    """What pushing needs of a registry (RegistryClient)."""

    def blob_exists(self, repo: str, digest: str) -> bool: ...

    def put_blob(self, repo: str, digest: str, data: bytes) -> None: ...

    def put_manifest(self, repo: str, tag: str, manifest: Manifest) -> str: ...


@dataclass(frozen=True)
class Saved:
    """An image as the daemon saved it: its config's bytes, and each layer's tar on disk
    with its sha256 (its diff id), bottom layer first."""

    config: bytes
    layers: tuple[tuple[str, Path], ...]


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


def push(
    client: docker.DockerClient,
    registry: Blobs,
    *,
    repo: str,
    tag: str,
    image_id: str,
    work: Path,
    assemblies: Assemblies | None = None,
) -> str:
    """Push the local image ``image_id`` as ``repo:tag``; the manifest digest.

    An image made in this run (assemble.py) is pushed from the config and layer archives
    it was made of; any other is saved from the daemon first."""
    if assemblies is not None and (made := assemblies.get(image_id)) is not None:
        config_bytes = made.config
        layers = _made_layers(client, registry, repo, made, assemblies)
    else:
        folder = work / f"save-{image_id.removeprefix('sha256:')[:16]}"
        try:
            saved = save(client, image_id, folder)
            config_bytes = saved.config
            layers = [_layer(registry, repo, diff_id, path) for diff_id, path in saved.layers]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    config = Blob(sha256_digest(config_bytes), len(config_bytes))
    if not registry.blob_exists(repo, config.digest):
        registry.put_blob(repo, config.digest, config_bytes)
    raw = manifest(config, layers)
    return registry.put_manifest(
        repo, tag, Manifest(digest=sha256_digest(raw), media_type=DOCKER_MANIFEST, raw=raw)
    )


def _made_layers(
    client: docker.DockerClient,
    registry: Blobs,
    repo: str,
    image: Assembled,
    assemblies: Assemblies,
) -> list[Blob]:
    """The blobs of an image made here: its own and its made parents' layers from their
    archives, the rest (the base's, tini's, the entrypoint's) from the image at the
    bottom, saved from the daemon once in the run, and only when the registry lacks
    one of them."""
    made, bottom = assemblies.chain(image.id)
    archives = {layer.diff_id: layer.path for each in made for layer in each.layers}
    blobs = []
    for diff_id in image.diff_ids:
        blob = _present(registry, repo, diff_id)
        if blob is None:
            path = archives.get(diff_id)
            if path is None:
                path = dict(assemblies.saved(client, bottom).layers).get(diff_id)
            if path is None:
                raise RegistryError(f"{image.id}: no archive of its layer {diff_id}")
            blob = _upload(registry, repo, diff_id, path)
        blobs.append(blob)
    return blobs


def manifest(config: Blob, layers: list[Blob]) -> bytes:
    """The image manifest (Docker's schema 2, as the daemon pushes) of a config and layers."""
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "size": config.size, "digest": config.digest},
        "layers": [
            {"mediaType": LAYER_TYPE, "size": layer.size, "digest": layer.digest}
            for layer in layers
        ],
    }
    return json.dumps(document, indent=3).encode()


def save(client: docker.DockerClient, image_id: str, folder: Path) -> Saved:
    """Save ``image_id`` from the daemon into ``folder``, every file of the archive hashed
    as it is written; the config checked against the id and the layers against the config."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, str]] = {}
    try:
        stream = client.api.get_image(image_id, chunk_size=_BLOCK)
        with tarfile.open(fileobj=_Reader(stream), mode="r|", bufsize=_BLOCK) as archive:
            for member in archive:
                content = archive.extractfile(member) if member.isfile() else None
                if content is not None:
                    # Named by their order, not by the archive: no name reaches the disk.
                    files[member.name] = _spool(content, folder / str(len(files)))
    except docker.errors.APIError as exc:
        raise RegistryError(f"cannot read {image_id} from the daemon to push it: {exc}") from None
    except docker_client.CONNECTION_ERRORS as exc:
        raise docker_client.lost(exc) from None
    except tarfile.TarError as exc:
        raise RegistryError(f"the daemon's archive of {image_id} is not a tar: {exc}") from None
    return _read(image_id, files)


def _read(image_id: str, files: dict[str, tuple[Path, str]]) -> Saved:
    try:
        (entry,) = json.loads(files["manifest.json"][0].read_bytes())
        config = files[entry["Config"]][0].read_bytes()
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        layers = [files[name] for name in entry["Layers"]]
    except (KeyError, ValueError, TypeError) as exc:
        raise RegistryError(f"the daemon's archive of {image_id} is not an image: {exc}") from None
    if sha256_digest(config) != image_id:
        raise RegistryError(f"the daemon saved another image than {image_id}")
    found = ["sha256:" + sha for _, sha in layers]
    if found != diff_ids:
        # A daemon that saves layers compressed (containerd's image store) lands here.
        raise RegistryError(
            f"the saved layers of {image_id} are not the uncompressed layers its config names"
        )
    paths = (path for path, _ in layers)
    return Saved(config, tuple(zip(diff_ids, paths, strict=True)))


def _layer(registry: Blobs, repo: str, diff_id: str, path: Path) -> Blob:
    """The blob of one layer in ``repo``: the recorded one if the registry has it, else
    the layer compressed now and uploaded unless the registry has that."""
    return _present(registry, repo, diff_id) or _upload(registry, repo, diff_id, path)


def _present(registry: Blobs, repo: str, diff_id: str) -> Blob | None:
    """The blob recorded for a layer, if the registry has it."""
    recorded = _recorded(diff_id)
    if recorded is not None and registry.blob_exists(repo, recorded.digest):
        return recorded
    return None


def _upload(registry: Blobs, repo: str, diff_id: str, path: Path) -> Blob:
    data = compress(path)
    blob = Blob(sha256_digest(data), len(data))
    if not registry.blob_exists(repo, blob.digest):
        registry.put_blob(repo, blob.digest, data)
    cache.write_json(_record_path(diff_id), {"digest": blob.digest, "size": blob.size})
    return blob


def compress(path: Path) -> bytes:
    """A layer tar as gzip (zlib-ng, ``LEVEL``; no name or time in the header: the same tar
    gives the same bytes)."""
    deflate = zlib_ng.compressobj(LEVEL, zlib_ng.DEFLATED, 31)
    parts = []
    with path.open("rb") as file:
        for block in iter(lambda: file.read(_BLOCK), b""):
            parts.append(deflate.compress(block))
    parts.append(deflate.flush())
    return b"".join(parts)


def _recorded(diff_id: str) -> Blob | None:
    document = cache.read_json(_record_path(diff_id))
    try:
        digest, size = str(document["digest"]), int(document["size"])
    except (TypeError, KeyError, ValueError):
        return None
    return Blob(digest, size) if digest.startswith("sha256:") else None


def _record_path(diff_id: str) -> Path:
    return RECORD / f"{diff_id.removeprefix('sha256:')}-gzip{LEVEL}.json"


def _spool(content: IO[bytes], path: Path) -> tuple[Path, str]:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for block in iter(lambda: content.read(_BLOCK), b""):
            digest.update(block)
            out.write(block)
    return path, digest.hexdigest()


class _Reader(io.RawIOBase):
    """The daemon's streamed archive as the file tarfile reads it in stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._chunk = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Copies only what it returns: tarfile reads a header at a time, and slicing the
        # rest of a chunk off at each read would copy each chunk hundreds of times.
        while self._offset >= len(self._chunk):
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._chunk, self._offset = chunk, 0
        view = memoryview(buffer).cast("B")
        size = min(len(view), len(self._chunk) - self._offset)
        view[:size] = self._chunk[self._offset : self._offset + size]
        self._offset += size
        return size

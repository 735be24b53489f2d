"""Pushing an image from its saved layers (push.py), against a real docker-registry; the
daemon's archive comes from a fake, in the layout `docker save` writes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from registry_server import run_registry

from publisher import assemble, push
from publisher.assemble import Assembled, Assemblies, Layer
from publisher.errors import RegistryError
from publisher.registry import DOCKER_MANIFEST, RegistryClient


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer(*files: tuple[str, bytes]) -> bytes:
    """A layer's tar holding ``files``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, content in files:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def config(layers: list[bytes], **more: Any) -> bytes:
    document = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"org.prefect.test": "yes"}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(data) for data in layers]},
        **more,
    }
    return json.dumps(document).encode()


def saved_archive(
    config_bytes: bytes, layers: list[bytes], *, manifest_first: bool = False
) -> bytes:
    """What the daemon's `docker save` of one image streams: each layer as ID/layer.tar,
    the config as ID.json, then manifest.json naming them (or manifest.json first)."""
    members: list[tuple[str, bytes]] = []
    names = []
    for position, data in enumerate(layers):
        folder = hashlib.sha256(f"v1-{position}".encode()).hexdigest()
        members += [(f"{folder}/VERSION", b"1.0"), (f"{folder}/layer.tar", data)]
        names.append(f"{folder}/layer.tar")
    config_name = sha256(config_bytes).removeprefix("sha256:") + ".json"
    members.append((config_name, config_bytes))
    manifest = json.dumps([{"Config": config_name, "RepoTags": None, "Layers": names}]).encode()
    members.insert(0 if manifest_first else len(members), ("manifest.json", manifest))
    return layer(*members)


class FakeAPI:
    def __init__(self, archives: dict[str, bytes], chunk: int) -> None:
        self.archives, self.chunk = archives, chunk
        self.saved: list[str] = []

    def get_image(self, image: str, chunk_size: int) -> Iterator[bytes]:
        self.saved.append(image)
        data = self.archives[image]
        # Chunks of an odd size: tar headers and files straddle them.
        return (data[at : at + self.chunk] for at in range(0, len(data), self.chunk))


class FakeClient:
    def __init__(self, chunk: int = 4099) -> None:
        self.api = FakeAPI({}, chunk)

    def add(self, config_bytes: bytes, layers: list[bytes], **kw: Any) -> str:
        image_id = sha256(config_bytes)
        self.api.archives[image_id] = saved_archive(config_bytes, layers, **kw)
        return image_id


BASE = layer(("etc/os-release", b"ID=debian\n" * 300))
CORE = layer(("usr/lib/prefect/__init__.py", b"VERSION = '3.9.1'\n" * 500))
EXTRA = layer(("usr/lib/docker/__init__.py", b"pass\n" * 200))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryClient]:
    with run_registry(tmp_path / "registry") as host, RegistryClient(host) as client:
        yield client


@pytest.fixture
def compressed(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every layer push.compress was asked to compress."""
    seen: list[bytes] = []
    real = push.compress

    def counting(path: Path) -> bytes:
        seen.append(path.read_bytes())
        return real(path)

    monkeypatch.setattr(push, "compress", counting)
    return seen


@pytest.mark.parametrize("manifest_first", [False, True])
def test_the_pushed_manifest_names_the_image_s_config_and_its_layers_gzipped(
    registry: RegistryClient, tmp_path: Path, manifest_first: bool
) -> None:
    client = FakeClient()
    layers = [BASE, CORE]
    image_id = client.add(config(layers), layers, manifest_first=manifest_first)

    digest = push.push(
        client,
        registry,
        repo="ns/prefect",
        tag="up",
        image_id=image_id,
        work=tmp_path,  # type: ignore[arg-type]
    )

    assert registry.digest("ns/prefect", "up") == digest
    found = registry.manifest("ns/prefect", digest)
    assert found.media_type == DOCKER_MANIFEST
    document = json.loads(found.raw)
    # The config is the image's own: the manifest's config digest is the tested image's id.
    assert document["config"]["digest"] == image_id
    assert registry.labels("ns/prefect", digest) == {"org.prefect.test": "yes"}
    blobs = [_blob(registry, "ns/prefect", entry["digest"]) for entry in document["layers"]]
    assert [gzip.decompress(blob) for blob in blobs] == layers
    assert [entry["size"] for entry in document["layers"]] == [len(blob) for blob in blobs]
    assert not list(tmp_path.glob("save-*")), "the saved archive is removed"


def test_a_layer_already_pushed_is_found_by_its_record_not_compressed_again(
    registry: RegistryClient, tmp_path: Path, compressed: list[bytes]
) -> None:
    client = FakeClient()
    core = client.add(config([BASE, CORE]), [BASE, CORE])
    full = client.add(config([BASE, CORE, EXTRA]), [BASE, CORE, EXTRA])

    push.push(client, registry, repo="ns/prefect", tag="core", image_id=core, work=tmp_path)  # type: ignore[arg-type]
    push.push(client, registry, repo="ns/prefect", tag="full", image_id=full, work=tmp_path)  # type: ignore[arg-type]

    assert compressed == [BASE, CORE, EXTRA]
    core_layers = json.loads(registry.manifest("ns/prefect", "core").raw)["layers"]
    full_layers = json.loads(registry.manifest("ns/prefect", "full").raw)["layers"]
    assert full_layers[:2] == core_layers


def test_a_recorded_layer_missing_from_the_registry_is_compressed_and_uploaded_again(
    tmp_path: Path, compressed: list[bytes]
) -> None:
    client = FakeClient()
    image_id = client.add(config([BASE]), [BASE])
    digests = []
    for attempt in range(2):
        with run_registry(tmp_path / f"registry-{attempt}") as host, RegistryClient(host) as reg:
            digests.append(
                push.push(client, reg, repo="p", tag="t", image_id=image_id, work=tmp_path)  # type: ignore[arg-type]
            )
            assert gzip.decompress(_blob(reg, "p", _layers(reg, "p", "t")[0])) == BASE
    assert compressed == [BASE, BASE]
    # The same tar compresses to the same bytes: the second registry holds the same image.
    assert digests[0] == digests[1]


def test_compressing_the_same_tar_gives_the_same_gzip(tmp_path: Path) -> None:
    path = tmp_path / "layer.tar"
    path.write_bytes(CORE)
    first, second = push.compress(path), push.compress(path)
    assert first == second
    assert gzip.decompress(first) == CORE
    assert first[4:8] == b"\0\0\0\0", "no time in the gzip header"


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (lambda cfg: saved_archive(config([BASE]), [BASE]), "saved another image than"),
        (lambda cfg: saved_archive(cfg, [CORE]), "not the uncompressed layers its config names"),
        (lambda cfg: saved_archive(cfg, [BASE, CORE]), "not the uncompressed layers"),
        (lambda cfg: layer(("repositories", b"{}")), "is not an image"),
        (lambda cfg: b"not a tar at all" * 100, "is not a tar"),
    ],
)
def test_an_archive_that_is_not_the_image_is_refused_before_any_upload(
    tmp_path: Path, archive: Any, message: str
) -> None:
    wanted = config([BASE], architecture="arm64")
    client = FakeClient()
    image_id = sha256(wanted)
    client.api.archives[image_id] = archive(wanted)

    class NoRegistry:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the registry was used: {name}")

    with pytest.raises(RegistryError, match=message):
        push.push(client, NoRegistry(), repo="p", tag="t", image_id=image_id, work=tmp_path)  # type: ignore[arg-type]
    assert not list(tmp_path.glob("save-*"))


def test_a_blob_whose_bytes_are_not_its_digest_is_refused_in_one_line(
    registry: RegistryClient,
) -> None:
    with pytest.raises(RegistryError, match=r"^registry .* answered 400 to upload blob") as caught:
        registry.put_blob("p", sha256(b"other"), b"these bytes")
    assert "\n" not in str(caught.value)
    assert not registry.blob_exists("p", sha256(b"these bytes"))


def _layers(registry: RegistryClient, repo: str, ref: str) -> list[str]:
    return [entry["digest"] for entry in json.loads(registry.manifest(repo, ref).raw)["layers"]]


def _blob(registry: RegistryClient, repo: str, digest: str) -> bytes:
    import requests

    response = requests.get(f"{registry.base_url}/v2/{repo}/blobs/{digest}", timeout=10)
    response.raise_for_status()
    return response.content


# -- images made here (assemble.py) ------------------------------------------------------


def _made(tmp_path: Path, parent_config: bytes, name: str, data: bytes) -> Assembled:
    """An image made of ``parent_config``'s image and one layer archive ``data``."""
    path = tmp_path / f"{name}.tar"
    path.write_bytes(data)
    new = Layer(diff_id=sha256(data), path=path, created_by=f"ADD {name}.tar /")
    made_config = assemble.child_config(parent_config, [new], labels={"n": name}, created="t")
    return Assembled(config=made_config, parent=sha256(parent_config), layers=(new,))


def _on_base(tmp_path: Path) -> tuple[FakeClient, str, Assemblies, Assembled]:
    """A daemon holding a base image, and a core made here of it."""
    client = FakeClient()
    bottom_config = config([BASE])
    bottom = client.add(bottom_config, [BASE])
    assemblies = Assemblies(tmp_path / "made")
    core = _made(tmp_path, bottom_config, "core", CORE)
    assemblies.add(core)
    return client, bottom, assemblies, core


def test_an_image_made_here_is_pushed_from_its_archives_and_its_bottom_saved_once(
    registry: RegistryClient, tmp_path: Path, compressed: list[bytes]
) -> None:
    client, bottom, assemblies, core = _on_base(tmp_path)
    full = _made(tmp_path, core.config, "full", EXTRA)
    assemblies.add(full)

    pushed = {
        image.id: push.push(
            client,  # type: ignore[arg-type]
            registry,
            repo="ns/prefect",
            tag=tag,
            image_id=image.id,
            work=tmp_path,
            assemblies=assemblies,
        )
        for tag, image in (("full", full), ("core", core))
    }

    # The full image first: its core's layer from the core's archive, the base's from the
    # one image below both that was not made here, read out of the daemon once.
    assert client.api.saved == [bottom]
    assert compressed == [BASE, CORE, EXTRA]
    for tag, image in (("full", full), ("core", core)):
        document = json.loads(registry.manifest("ns/prefect", pushed[image.id]).raw)
        assert document["config"]["digest"] == image.id
        assert registry.labels("ns/prefect", tag)["n"] == tag
        layers = [_blob(registry, "ns/prefect", entry["digest"]) for entry in document["layers"]]
        assert [gzip.decompress(blob) for blob in layers] == [BASE, CORE, EXTRA][: len(layers)]


def test_an_image_made_here_on_layers_the_registry_holds_reads_nothing_from_the_daemon(
    registry: RegistryClient, tmp_path: Path, compressed: list[bytes]
) -> None:
    client, bottom, assemblies, core = _on_base(tmp_path)
    push.push(client, registry, repo="p", tag="base", image_id=bottom, work=tmp_path)  # type: ignore[arg-type]
    client.api.saved.clear()

    push.push(
        client,  # type: ignore[arg-type]
        registry,
        repo="p",
        tag="core",
        image_id=core.id,
        work=tmp_path,
        assemblies=assemblies,
    )

    assert client.api.saved == []
    assert compressed == [BASE, CORE]  # the base's once, for its own push
    assert registry.digest("p", "core") is not None

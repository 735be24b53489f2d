"""Making an image of a parent and layer archives (assemble.py), without a daemon: the
config written, the archive `docker load` reads, and what a run keeps of both."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from publisher import assemble, push
from publisher.assemble import Assembled, Assemblies, Layer
from publisher.errors import BuildError


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


PARENT: dict[str, Any] = {
    "architecture": "arm64",
    "variant": "v8",
    "os": "linux",
    "created": "2026-01-01T00:00:00Z",
    "container": "abc",
    "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) COPY"]},
    "moby.buildkit.buildinfo.v1": "e30=",
    "config": {
        "Env": ["PATH=/usr/local/bin:/usr/bin", "LANG=C.UTF-8"],
        "Entrypoint": ["tini", "-g", "--", "/usr/local/bin/entrypoint.sh"],
        "Labels": {"org.opencontainers.image.version": "base", "kept": "yes"},
    },
    "history": [
        {"created_by": "ADD rootfs.tar /"},
        {"created_by": "ENV LANG=C.UTF-8", "empty_layer": True},
        {"created_by": "RUN dpkg -i /mnt/*.deb # buildkit"},
    ],
    "rootfs": {"type": "layers", "diff_ids": [sha256(b"base"), sha256(b"tini")]},
}


def archived(tmp_path: Path, name: str, files: dict[str, bytes]) -> Layer:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for inner, content in files.items():
            info = tarfile.TarInfo(inner)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    path = tmp_path / name
    path.write_bytes(out.getvalue())
    return Layer(diff_id=sha256(out.getvalue()), path=path, created_by=f"ADD {name} /")


def test_a_child_config_is_its_parent_with_the_new_layers_on_top_and_the_labels_added(
    tmp_path: Path,
) -> None:
    deps = archived(tmp_path, "deps.tar", {"usr/lib/anyio/__init__.py": b""})
    prefect = archived(tmp_path, "prefect.tar", {"usr/lib/prefect/__init__.py": b""})
    config = assemble.child_config(
        json.dumps(PARENT).encode(),
        [deps, prefect],
        labels={"org.opencontainers.image.version": "3.9.1", "new": "1"},
        created="2026-11-29T20:00:00Z",
    )
    child = json.loads(config)

    assert child["rootfs"]["diff_ids"] == [
        *PARENT["rootfs"]["diff_ids"],
        deps.diff_id,
        prefect.diff_id,
    ]
    # One history entry per new layer, after the parent's: `docker history` and the layer
    # count agree.
    assert child["history"] == [
        *PARENT["history"],
        {"created": "2026-11-29T20:00:00Z", "created_by": "ADD deps.tar /"},
        {"created": "2026-11-29T20:00:00Z", "created_by": "ADD prefect.tar /"},
    ]
    assert child["config"]["Labels"] == {
        "org.opencontainers.image.version": "3.9.1",
        "kept": "yes",
        "new": "1",
    }
    # What it runs and where: the parent's.
    for key in ("Env", "Entrypoint"):
        assert child["config"][key] == PARENT["config"][key]
    assert (child["architecture"], child["variant"], child["os"]) == ("arm64", "v8", "linux")
    assert child["created"] == "2026-11-29T20:00:00Z"
    # What described the parent's last build step does not describe this image.
    for key in ("container", "container_config", "moby.buildkit.buildinfo.v1"):
        assert key not in child
    # The parent's config is not changed by making a child of it.
    assert PARENT["config"]["Labels"]["org.opencontainers.image.version"] == "base"


def test_no_new_layer_changes_only_the_labels(tmp_path: Path) -> None:
    child = json.loads(
        assemble.child_config(json.dumps(PARENT).encode(), [], labels={"a": "b"}, created="now")
    )
    assert child["rootfs"] == PARENT["rootfs"]
    assert child["history"] == PARENT["history"]
    assert child["config"]["Labels"]["a"] == "b"


@pytest.mark.parametrize("parent", [b"not json", b"{}", b'{"rootfs": {"diff_ids": 3}}'])
def test_a_parent_config_that_is_not_an_image_config_is_one_clear_error(parent: bytes) -> None:
    with pytest.raises(BuildError, match=r"^the parent.s config is not an image config: "):
        assemble.child_config(parent, [], labels={}, created="now")


def test_the_load_archive_holds_config_manifest_and_only_the_new_layers(tmp_path: Path) -> None:
    extras = archived(tmp_path, "extras.tar", {"usr/lib/docker/__init__.py": b"pass\n" * 99})
    config = assemble.child_config(json.dumps(PARENT).encode(), [extras], labels={}, created="x")
    image = Assembled(config=config, parent=sha256(json.dumps(PARENT).encode()), layers=(extras,))
    out = io.BytesIO()

    assemble.write_archive(out, image, "prefect-publisher/cache:abc")

    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as archive:
        names = archive.getnames()
        (manifest,) = json.loads(_read(archive, "manifest.json"))
        assert _read(archive, manifest["Config"]) == config
        assert sha256(config) == image.id
        assert manifest["RepoTags"] == ["prefect-publisher/cache:abc"]
        # Every layer named, the parent's two absent: the daemon has them.
        assert len(manifest["Layers"]) == 3
        assert names == [manifest["Config"], "manifest.json", manifest["Layers"][2]]
        assert _read(archive, manifest["Layers"][2]) == extras.path.read_bytes()
    assert len(out.getvalue()) % tarfile.BLOCKSIZE == 0


def _read(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    assert member is not None
    return member.read()


def test_a_layer_archive_is_named_by_its_sha256_and_no_entries_are_no_layer(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "tree"
    (tree / "usr/lib/pkg").mkdir(parents=True)
    (tree / "usr/lib/pkg/__init__.py").write_text("x = 1\n")
    entries = {
        "usr/lib/pkg": tree / "usr/lib/pkg",
        "usr/lib/pkg/__init__.py": tree / "usr/lib/pkg/__init__.py",
    }

    layer = assemble.archive_layer(entries, tmp_path / "deps.tar", "ADD deps.tar /", mtime=0)

    assert layer is not None
    assert layer.diff_id == sha256((tmp_path / "deps.tar").read_bytes())
    assert assemble.archive_layer({}, tmp_path / "none.tar", "ADD none.tar /", mtime=0) is None
    assert not (tmp_path / "none.tar").exists()


def made(parent: str, layers: tuple[Layer, ...] = (), label: str = "") -> Assembled:
    config = {
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "label": label,
    }
    return Assembled(config=json.dumps(config).encode(), parent=parent, layers=layers)


def test_a_chain_runs_from_an_image_down_to_the_first_one_not_made_here(tmp_path: Path) -> None:
    assemblies = Assemblies(tmp_path)
    core = made("sha256:parent", label="core")
    full = made(core.id, label="full")
    assemblies.add(core)
    assemblies.add(full)

    assert assemblies.chain(full.id) == ([full, core], "sha256:parent")
    assert assemblies.chain(core.id) == ([core], "sha256:parent")
    assert assemblies.chain("sha256:other") == ([], "sha256:other")
    first, second = assemblies.new_file("deps.tar"), assemblies.new_file("deps.tar")
    assert first != second and first.parent == second.parent == tmp_path


def test_a_parent_s_config_is_read_from_the_daemon_once_and_then_kept_by_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = json.dumps(PARENT).encode()
    parent_id = sha256(parent)
    saves: list[str] = []

    def save(client: Any, image_id: str, folder: Path) -> push.Saved:
        saves.append(image_id)
        return push.Saved(config=parent, layers=())

    monkeypatch.setattr(push, "save", save)
    assert Assemblies(tmp_path / "a").config_of(None, parent_id) == parent  # type: ignore[arg-type]
    # Another run reads it from the cache, checked against the id.
    assert Assemblies(tmp_path / "b").config_of(None, parent_id) == parent  # type: ignore[arg-type]
    assert saves == [parent_id]

    # A kept config that is not the id's own is not used: read again.
    kept = assemble.CONFIGS / parent_id.removeprefix("sha256:")
    kept.write_text(json.dumps({"config": '{"rootfs": {}}'}))
    assert Assemblies(tmp_path / "c").config_of(None, parent_id) == parent  # type: ignore[arg-type]
    assert saves == [parent_id, parent_id]

    # One made in this run is its own, and a later run finds it kept.
    assemblies = Assemblies(tmp_path / "d")
    child = made(parent_id)
    assemblies.add(child)
    assert assemblies.config_of(None, child.id) == child.config  # type: ignore[arg-type]
    assert Assemblies(tmp_path / "e").config_of(None, child.id) == child.config  # type: ignore[arg-type]
    assert saves == [parent_id, parent_id]

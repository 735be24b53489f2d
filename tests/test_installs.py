"""Wheels installed once per run: split by their RECORDs, linked into every build that
installs them again."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from publisher import installs
from publisher.installs import Installs

SITE = "usr/lib/python3/site-packages"


def wheel(folder: Path, name: str, version: str, content: bytes = b"zip") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    path.write_bytes(content)
    return path


class Pip:
    """Installs as pip does, for the tests: per wheel a module, a script and a dist-info
    whose RECORD names them (the script by a path out of site-packages, as pip writes)."""

    def __init__(self, shared: str = "") -> None:
        self.calls: list[list[str]] = []
        self.unrecorded = ""  # a file to write that no RECORD names
        self.shared = shared  # a file every wheel writes (a namespace package's __init__)
        self.lock = threading.Lock()

    def __call__(self, wheels: Sequence[Path], folder: Path) -> None:
        with self.lock:
            self.calls.append(sorted(w.name.split("-")[0] for w in wheels))
        for found in wheels:
            name, version = found.name.split("-")[:2]
            info = f"{name}-{version}.dist-info"
            (folder / SITE / name).mkdir(parents=True)
            (folder / SITE / name / "__init__.py").write_bytes(found.read_bytes())
            (folder / "usr/bin").mkdir(parents=True, exist_ok=True)
            (folder / "usr/bin" / name).write_text("#!/usr/bin/python3\n")
            (folder / SITE / info).mkdir()
            records = [f"{name}/__init__.py", f"../../../bin/{name}", f"{info}/RECORD"]
            if self.shared:
                (folder / SITE / self.shared).parent.mkdir(parents=True, exist_ok=True)
                (folder / SITE / self.shared).write_text(name)
                records.append(self.shared)
            (folder / SITE / info / "RECORD").write_text("".join(f"{r},,\n" for r in records))
        if self.unrecorded:
            (folder / self.unrecorded).parent.mkdir(parents=True, exist_ok=True)
            (folder / self.unrecorded).write_text("x")


def files(layer: installs.Layer) -> dict[str, bytes]:
    """The content of each of the layer's files, by its path in the image."""
    return {
        name: path.read_bytes()
        for name, path in layer.entries.items()
        if path.is_file() and not path.is_symlink()
    }


def test_the_installer_is_the_image_the_target_and_the_layer() -> None:
    key = installs.installer(image_id="sha256:i", target="", layer="deps")
    assert key == installs.installer(image_id="sha256:i", target="", layer="deps")
    assert key != installs.installer(image_id="sha256:j", target="", layer="deps")
    assert key != installs.installer(image_id="sha256:i", target='{"tags": []}', layer="deps")
    # The layer's name is in the byte code's paths.
    assert key != installs.installer(image_id="sha256:i", target="", layer="extras")


def test_clear_removes_the_trees_and_a_later_place_installs_its_wheels_again(
    tmp_path: Path,
) -> None:
    store, pip = Installs(tmp_path / "store"), Pip()
    anyio = wheel(tmp_path / "w", "anyio", "4.0")

    def place(dest: str) -> installs.Layer:
        return store.place(installer_key="k", wheels=[anyio], dest=tmp_path / dest, install=pip)

    assert place("one").reused == 0
    assert place("two").reused == 1
    store.clear()
    assert list(store.root.iterdir()) == []
    again = place("three")
    assert again.reused == 0 and f"{SITE}/anyio/__init__.py" in again.entries
    assert pip.calls == [["anyio"], ["anyio"]]
    Installs(tmp_path / "never-used").clear()  # nothing installed: nothing to remove


def test_each_wheel_is_installed_once_and_its_files_taken_by_later_layers(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip()
    anyio, sniffio = wheel(tmp_path / "w", "anyio", "4.0"), wheel(tmp_path / "w", "sniffio", "1.3")
    one = store.place(installer_key="k", wheels=[anyio], dest=tmp_path / "one", install=pip)
    assert one.reused == 0
    two = store.place(
        installer_key="k", wheels=[anyio, sniffio], dest=tmp_path / "two", install=pip
    )
    assert two.reused == 1
    assert pip.calls == [["anyio"], ["sniffio"]]
    assert set(files(two)) == set(files(one)) | {
        f"{SITE}/sniffio/__init__.py",
        f"{SITE}/sniffio-1.3.dist-info/RECORD",
        "usr/bin/sniffio",
    }
    assert {name: files(two)[name] for name in files(one)} == files(one)
    # anyio's files are the first install's, where the run keeps it; nothing at dest.
    module = f"{SITE}/anyio/__init__.py"
    assert one.entries[module] == two.entries[module]
    assert one.entries[module].is_relative_to(tmp_path / "store")
    assert not (tmp_path / "one").exists() and not (tmp_path / "two").exists()
    # Every folder on the way is an entry of its own, once, before what it holds.
    assert list(two.entries)[:3] == ["usr", "usr/bin", "usr/bin/anyio"]
    assert "usr/lib/python3" in two.entries
    # Another installer (image, target or layer) installs again.
    again = store.place(installer_key="k2", wheels=[anyio], dest=tmp_path / "3", install=pip)
    assert again.reused == 0
    assert pip.calls[-1] == ["anyio"]


def test_the_same_wheel_name_with_other_content_is_installed_again(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip()
    first = wheel(tmp_path / "a", "anyio", "4.0", b"one")
    rebuilt = wheel(tmp_path / "b", "anyio", "4.0", b"two")
    store.place(installer_key="k", wheels=[first], dest=tmp_path / "one", install=pip)
    two = store.place(installer_key="k", wheels=[rebuilt], dest=tmp_path / "two", install=pip)
    assert two.reused == 0
    assert files(two)[f"{SITE}/anyio/__init__.py"] == b"two"


def test_a_tree_that_does_not_split_is_installed_whole_and_not_kept(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip()
    anyio = wheel(tmp_path / "w", "anyio", "4.0")
    pip.unrecorded = "etc/written-by-nobody"
    whole = store.place(installer_key="k", wheels=[anyio], dest=tmp_path / "one", install=pip)
    assert whole.reused == 0
    assert files(whole)["etc/written-by-nobody"] == b"x"
    assert whole.entries["etc/written-by-nobody"] == tmp_path / "one/etc/written-by-nobody"
    pip.unrecorded = ""
    split = store.place(installer_key="k", wheels=[anyio], dest=tmp_path / "two", install=pip)
    assert split.reused == 0
    assert pip.calls == [["anyio"], ["anyio"], ["anyio"]]  # split tried, whole, then again
    assert [p.name for p in (tmp_path / "store").iterdir()] != []


def test_two_wheels_writing_one_path_are_installed_by_pip_together(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip(shared="google/__init__.py")
    a, b = wheel(tmp_path / "w", "googleapis", "1.0"), wheel(tmp_path / "w", "protobuf", "5.0")
    # Installed together: split, the shared file is named by both RECORDs: whole install.
    together = store.place(installer_key="k", wheels=[a, b], dest=tmp_path / "1", install=pip)
    assert together.reused == 0
    assert pip.calls == [["googleapis", "protobuf"]] * 2
    assert files(together)[f"{SITE}/google/__init__.py"] == b"protobuf"
    # Installed apart, both are kept; laid over each other they collide: pip installs both.
    store.place(installer_key="k", wheels=[a], dest=tmp_path / "2", install=pip)
    store.place(installer_key="k", wheels=[b], dest=tmp_path / "3", install=pip)
    again = store.place(installer_key="k", wheels=[a, b], dest=tmp_path / "4", install=pip)
    assert again.reused == 0
    assert pip.calls[-1] == ["googleapis", "protobuf"]
    assert files(again) == files(together)
    assert again.entries[f"{SITE}/google/__init__.py"] == tmp_path / f"4/{SITE}/google/__init__.py"


def test_a_failed_install_keeps_nothing(tmp_path: Path) -> None:
    store = Installs(tmp_path / "store")
    anyio = wheel(tmp_path / "w", "anyio", "4.0")

    def failing(wheels: Sequence[Path], folder: Path) -> None:
        (folder / "half").write_text("written")
        raise RuntimeError("pip failed")

    with pytest.raises(RuntimeError, match="pip failed"):
        store.place(installer_key="k", wheels=[anyio], dest=tmp_path / "one", install=failing)
    assert not (tmp_path / "one").exists()
    assert list((tmp_path / "store").iterdir()) == []


def test_two_lanes_installing_one_wheel_at_once_both_get_it(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip()
    anyio = wheel(tmp_path / "w", "anyio", "4.0")
    done: list[installs.Layer] = []
    lanes = [
        threading.Thread(
            target=lambda n=n: done.append(
                store.place(installer_key="k", wheels=[anyio], dest=tmp_path / n, install=pip)
            )
        )
        for n in ("a", "b")
    ]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    assert len(done) == 2
    assert files(done[0]) == files(done[1])
    assert len(list((tmp_path / "store").iterdir())) == 1


def test_trees_laid_over_each_other_share_folders_and_collide_on_anything_else(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "usr/lib/pkg").mkdir(parents=True)
    (first / "usr/lib/pkg/a.py").write_text("a")
    (first / "usr/lib/alias").symlink_to("pkg")
    (second / "usr/lib/pkg").mkdir(parents=True)
    (second / "usr/lib/pkg/b.py").write_text("b")
    entries = installs.merged([first, second, tmp_path / "missing"])
    assert entries == {
        "usr": first / "usr",
        "usr/lib": first / "usr/lib",
        "usr/lib/alias": first / "usr/lib/alias",  # a link to a folder: not descended into
        "usr/lib/pkg": first / "usr/lib/pkg",
        "usr/lib/pkg/a.py": first / "usr/lib/pkg/a.py",
        "usr/lib/pkg/b.py": second / "usr/lib/pkg/b.py",
    }
    # One path a folder in one tree and a link or file in the other.
    (second / "usr/lib/alias").mkdir()
    with pytest.raises(FileExistsError):
        installs.merged([first, second])
    (second / "usr/lib/alias").rmdir()
    (second / "usr/lib/pkg/a.py").write_text("other a")
    with pytest.raises(FileExistsError):
        installs.merged([first, second])

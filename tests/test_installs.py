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


def files(tree: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(tree)): p.read_bytes() for p in sorted(tree.rglob("*")) if p.is_file()
    }


def test_the_installer_is_the_image_the_target_and_the_layer() -> None:
    key = installs.installer(image_id="sha256:i", target="", layer="deps")
    assert key == installs.installer(image_id="sha256:i", target="", layer="deps")
    assert key != installs.installer(image_id="sha256:j", target="", layer="deps")
    assert key != installs.installer(image_id="sha256:i", target='{"tags": []}', layer="deps")
    # The layer's name is in the byte code's paths.
    assert key != installs.installer(image_id="sha256:i", target="", layer="extras")


def test_each_wheel_is_installed_once_and_linked_into_later_trees(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip()
    anyio, sniffio = wheel(tmp_path / "w", "anyio", "4.0"), wheel(tmp_path / "w", "sniffio", "1.3")
    assert store.place(installer_key="k", wheels=[anyio], dest=tmp_path / "one", install=pip) == 0
    reused = store.place(
        installer_key="k", wheels=[anyio, sniffio], dest=tmp_path / "two", install=pip
    )
    assert reused == 1
    assert pip.calls == [["anyio"], ["sniffio"]]
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert set(two) == set(one) | {
        f"{SITE}/sniffio/__init__.py",
        f"{SITE}/sniffio-1.3.dist-info/RECORD",
        "usr/bin/sniffio",
    }
    assert {name: two[name] for name in one} == one
    # anyio's files are the first install's (hard links).
    module = f"{SITE}/anyio/__init__.py"
    assert (tmp_path / "one" / module).stat().st_ino == (tmp_path / "two" / module).stat().st_ino
    # Another installer (image, target or layer) installs again.
    assert store.place(installer_key="k2", wheels=[anyio], dest=tmp_path / "3", install=pip) == 0
    assert pip.calls[-1] == ["anyio"]


def test_the_same_wheel_name_with_other_content_is_installed_again(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip()
    first = wheel(tmp_path / "a", "anyio", "4.0", b"one")
    rebuilt = wheel(tmp_path / "b", "anyio", "4.0", b"two")
    store.place(installer_key="k", wheels=[first], dest=tmp_path / "one", install=pip)
    assert store.place(installer_key="k", wheels=[rebuilt], dest=tmp_path / "two", install=pip) == 0
    assert files(tmp_path / "two")[f"{SITE}/anyio/__init__.py"] == b"two"


def test_a_tree_that_does_not_split_is_installed_whole_and_not_kept(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip()
    anyio = wheel(tmp_path / "w", "anyio", "4.0")
    pip.unrecorded = "etc/written-by-nobody"
    assert store.place(installer_key="k", wheels=[anyio], dest=tmp_path / "one", install=pip) == 0
    assert "etc/written-by-nobody" in files(tmp_path / "one")
    pip.unrecorded = ""
    assert store.place(installer_key="k", wheels=[anyio], dest=tmp_path / "two", install=pip) == 0
    assert pip.calls == [["anyio"], ["anyio"], ["anyio"]]  # split tried, whole, then again
    assert [p.name for p in (tmp_path / "store").iterdir()] != []


def test_two_wheels_writing_one_path_are_installed_by_pip_together(tmp_path: Path) -> None:
    store, pip = Installs(tmp_path / "store"), Pip(shared="google/__init__.py")
    a, b = wheel(tmp_path / "w", "googleapis", "1.0"), wheel(tmp_path / "w", "protobuf", "5.0")
    # Installed together: split, the shared file is named by both RECORDs: whole install.
    assert store.place(installer_key="k", wheels=[a, b], dest=tmp_path / "1", install=pip) == 0
    assert pip.calls == [["googleapis", "protobuf"]] * 2
    assert files(tmp_path / "1")[f"{SITE}/google/__init__.py"] == b"protobuf"
    # Installed apart, both are kept; linked together they collide: pip installs both.
    store.place(installer_key="k", wheels=[a], dest=tmp_path / "2", install=pip)
    store.place(installer_key="k", wheels=[b], dest=tmp_path / "3", install=pip)
    assert store.place(installer_key="k", wheels=[a, b], dest=tmp_path / "4", install=pip) == 0
    assert pip.calls[-1] == ["googleapis", "protobuf"]
    assert files(tmp_path / "4") == files(tmp_path / "1")


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
    done: list[int] = []
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
    assert files(tmp_path / "a") == files(tmp_path / "b")
    assert len(list((tmp_path / "store").iterdir())) == 1

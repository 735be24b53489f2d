"""Trees installed once per run and linked into every build that installs the same."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from publisher import installs
from publisher.installs import Installs


def wheel(folder: Path, name: str, content: bytes = b"zip") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


def tree_installer(calls: list[Path]) -> Callable[[Path], None]:
    def install(folder: Path) -> None:
        calls.append(folder)
        (folder / "usr" / "lib").mkdir(parents=True)
        (folder / "usr" / "lib" / "mod.py").write_text("x = 1\n")
        os.utime(folder / "usr" / "lib", (1000, 1000))

    return install


def test_the_key_is_the_installer_the_target_the_layer_and_the_wheels_by_content(
    tmp_path: Path,
) -> None:
    a = [wheel(tmp_path / "a", "x-1-py3-none-any.whl"), wheel(tmp_path / "a", "y-2.whl")]
    same = [wheel(tmp_path / "b", "y-2.whl"), wheel(tmp_path / "b", "x-1-py3-none-any.whl")]
    rebuilt = [wheel(tmp_path / "c", "x-1-py3-none-any.whl", b"other"), same[0]]

    def key(wheels: list[Path], **kw: str) -> str:
        return installs.key(
            **{"installer_id": "sha256:i", "target": "", "layer": "deps", **kw}, wheels=wheels
        )

    assert key(a) == key(same)  # order and folder do not matter
    assert key(a) != key(rebuilt)  # a wheel of the same name with other content does
    assert key(a) != key(a, installer_id="sha256:j")
    assert key(a) != key(a, target='{"markers": {}}')
    assert key(a) != key(a, layer="extras")  # the layer's name is in the byte code's paths


def test_a_tree_is_installed_once_and_linked_with_its_times(tmp_path: Path) -> None:
    store = Installs(tmp_path / "store")
    calls: list[Path] = []
    assert not store.place("k", tmp_path / "one" / "deps", tree_installer(calls))
    assert store.place("k", tmp_path / "two" / "deps", tree_installer(calls))
    assert len(calls) == 1
    first, second = (tmp_path / n / "deps" / "usr" / "lib" for n in ("one", "two"))
    assert (second / "mod.py").read_text() == "x = 1\n"
    # The same files (hard links) and the same directory times: the same layer.
    assert (first / "mod.py").stat().st_ino == (second / "mod.py").stat().st_ino
    assert second.stat().st_mtime == first.stat().st_mtime == 1000
    assert not store.place("other", tmp_path / "three" / "deps", tree_installer(calls))
    assert len(calls) == 2


def test_a_failed_install_leaves_nothing_and_is_tried_again(tmp_path: Path) -> None:
    store = Installs(tmp_path / "store")

    def failing(folder: Path) -> None:
        (folder / "half").write_text("written")
        raise RuntimeError("pip failed")

    with pytest.raises(RuntimeError, match="pip failed"):
        store.place("k", tmp_path / "one", failing)
    assert not (tmp_path / "one").exists()
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == []
    calls: list[Path] = []
    assert not store.place("k", tmp_path / "two", tree_installer(calls))
    assert len(calls) == 1


def test_two_lanes_asking_at_once_install_once(tmp_path: Path) -> None:
    store = Installs(tmp_path / "store")
    calls: list[Path] = []
    install = tree_installer(calls)

    def slow(folder: Path) -> None:
        time.sleep(0.2)
        install(folder)

    results: list[bool] = []
    lanes = [
        threading.Thread(target=lambda n=n: results.append(store.place("k", tmp_path / n, slow)))
        for n in ("a", "b")
    ]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    assert len(calls) == 1
    assert sorted(results) == [False, True]
    assert (tmp_path / "a" / "usr" / "lib" / "mod.py").exists()
    assert (tmp_path / "b" / "usr" / "lib" / "mod.py").exists()

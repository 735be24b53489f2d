"""assemble.archive_layer: the layer archive of installed trees (no daemon here)."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from publisher import assemble
from publisher.installs import merged

EPOCH = 315532800


def tree_of(root: Path, written: float) -> Path:
    """A small installed tree whose every entry was written at ``written``."""
    site = root / "usr/local/lib/python3.13/site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg/__init__.py").write_text("VALUE = 1\n")
    (root / "usr/local/bin").mkdir()
    (root / "usr/local/bin/tool").write_text("#!/usr/local/bin/python3\n")
    (root / "usr/local/bin/tool").chmod(0o755)
    (root / "usr/local/bin/alias").symlink_to("tool")
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            os.utime(Path(folder, name), (written, written), follow_symlinks=False)
    return root


def test_a_layer_archive_holds_the_tree_s_entries_owned_by_root(tmp_path: Path) -> None:
    tree = tree_of(tmp_path / "tree", written=1_700_000_000)
    archive = tmp_path / "context" / "deps.tar"
    assemble.archive_layer(merged([tree]), archive, "ADD", mtime=EPOCH)

    with tarfile.open(archive) as layer:
        members = {member.name: member for member in layer.getmembers()}
    # Relative to the tree, without an entry for the tree itself: unpacked onto / it restamps
    # nothing above usr/.
    assert sorted(members) == [
        "usr",
        "usr/local",
        "usr/local/bin",
        "usr/local/bin/alias",
        "usr/local/bin/tool",
        "usr/local/lib",
        "usr/local/lib/python3.13",
        "usr/local/lib/python3.13/site-packages",
        "usr/local/lib/python3.13/site-packages/pkg",
        "usr/local/lib/python3.13/site-packages/pkg/__init__.py",
    ]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members.values()} == {(0, 0, "root", "root")}
    assert members["usr/local/bin/tool"].mode == 0o755
    assert members["usr/local/bin/alias"].issym()
    assert members["usr/local/bin/alias"].linkname == "tool"
    # Every entry, the link too, has the one time, whenever it was written.
    assert {m.mtime for m in members.values()} == {EPOCH}
    # GNU headers, as every tar the publisher writes (no PAX header with float times).
    assert archive.read_bytes()[257:265] == b"ustar  \x00"


def test_the_same_files_installed_at_other_times_make_the_same_archive(tmp_path: Path) -> None:
    # A layer's diff id is its tar's sha256: a later run's install of the same wheels
    # must give the same bytes, or it loads and uploads a new, equal layer.
    earlier = tree_of(tmp_path / "earlier", written=1_700_000_000)
    later = tree_of(tmp_path / "later", written=1_800_000_000.5)
    one = assemble.archive_layer(merged([earlier]), tmp_path / "one/deps.tar", "ADD", mtime=EPOCH)
    two = assemble.archive_layer(merged([later]), tmp_path / "two/deps.tar", "ADD", mtime=EPOCH)
    assert one is not None and two is not None
    assert one.diff_id == two.diff_id
    assert (tmp_path / "one/deps.tar").read_bytes() == (tmp_path / "two/deps.tar").read_bytes()
    # The tree on disk keeps its own times.
    assert (later / "usr/local/bin/tool").stat().st_mtime == 1_800_000_000.5


def test_trees_laid_over_each_other_archive_as_one_tree_of_them_all_would(
    tmp_path: Path,
) -> None:
    # Two wheels' trees share their parent folders; their layer is the bytes tar gives for
    # one tree holding both.
    first = tree_of(tmp_path / "first", written=1_700_000_000)
    second = tmp_path / "second"
    (second / "usr/local/lib/python3.13/site-packages/other").mkdir(parents=True)
    (second / "usr/local/lib/python3.13/site-packages/other/data.bin").write_bytes(b"\0" * 3000)
    (second / "usr/local/bin").mkdir()
    (second / "usr/local/bin/other").write_text("#!/bin/sh\n")
    # Listed after pkg/__init__.py by tar, before it by a plain sort of the paths.
    (second / "usr/local/lib/python3.13/site-packages/pkg-1.0.dist-info").mkdir()
    (second / "usr/local/lib/python3.13/site-packages/pkg-1.0.dist-info/RECORD").write_text("")
    both = tmp_path / "both"
    shutil.copytree(first, both, symlinks=True)
    shutil.copytree(second, both, symlinks=True, dirs_exist_ok=True)

    assemble.archive_layer(merged([first, second]), tmp_path / "a/deps.tar", "ADD", mtime=EPOCH)

    def as_root_at_epoch(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = EPOCH
        return info

    with tarfile.open(tmp_path / "b.tar", "w", format=tarfile.GNU_FORMAT) as out:
        for path in sorted(both.iterdir()):
            out.add(path, arcname=path.name, filter=as_root_at_epoch)
    assert (tmp_path / "a/deps.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()

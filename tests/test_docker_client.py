"""docker_client: the archives a build context carries (no daemon here)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from publisher import docker_client


def test_a_layer_archive_holds_the_tree_s_entries_owned_by_root(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    site = tree / "usr/local/lib/python3.13/site-packages"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg/__init__.py").write_text("VALUE = 1\n")
    (tree / "usr/local/bin").mkdir()
    (tree / "usr/local/bin/tool").write_text("#!/usr/local/bin/python3\n")
    (tree / "usr/local/bin/tool").chmod(0o755)
    (tree / "usr/local/bin/alias").symlink_to("tool")
    os.utime(site / "pkg/__init__.py", (315532800, 315532800))

    archive = tmp_path / "context" / "deps.tar"
    docker_client.layer_archive(tree, archive)

    with tarfile.open(archive) as layer:
        members = {member.name: member for member in layer.getmembers()}
    # Relative to the tree, without an entry for the tree itself: ADD onto / restamps
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
    assert members["usr/local/lib/python3.13/site-packages/pkg/__init__.py"].mtime == 315532800
    # The format BuildKit takes a posted tar in (no PAX header).
    assert archive.read_bytes()[257:265] == b"ustar  \x00"


def test_an_empty_tree_becomes_an_empty_folder_that_add_copies_nothing_from(
    tmp_path: Path,
) -> None:
    # ADD unpacks a tar only when it has a member; it would copy an empty one as a file.
    (tmp_path / "tree").mkdir()
    docker_client.layer_archive(tmp_path / "tree", tmp_path / "context" / "extras.tar")
    docker_client.layer_archive(tmp_path / "missing", tmp_path / "context" / "other.tar")
    for name in ("extras.tar", "other.tar"):
        assert (tmp_path / "context" / name).is_dir()
        assert not any((tmp_path / "context" / name).iterdir())

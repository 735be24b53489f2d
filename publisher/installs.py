"""Packages installed during one run, shared by every build that installs the same wheel.

A matrix installs mostly the same wheels again and again: two patch releases of prefect on
one Python resolve to the same dependencies but a few, and each full image of a release
adds the same extras. pip takes 11-15 s of a core to install prefect's ~100 dependencies,
so each wheel is installed once per run: the first install of a layer's wheels is split
by the RECORD pip writes for each distribution into one tree per wheel, and every build
that installs a wheel again takes its files from that tree. A layer is the union of its
wheels' trees (`Layer`: each path and the file it is, read straight into the layer's
archive), and pip installs only the wheels no earlier build of the run installed.

What makes two installs of a wheel the same: the wheel's content, the image whose pip
installs it (its id), the target it installs for (target.py) and the layer (its name is
in the byte code's paths). Whatever does not split cleanly (a file no RECORD names, two
wheels writing one path) is installed whole, as before, and nothing of it is kept.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

# install(wheels, folder): pip installs exactly ``wheels`` (--no-deps) under ``folder``.
Install = Callable[[Sequence[Path], Path], None]


def installer(*, image_id: str, target: str, layer: str) -> str:
    """What identifies how a wheel is installed: the installing image, target and layer."""
    document = {"image": image_id, "target": target, "layer": layer}
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def _wheel_key(installer_key: str, wheel: Path) -> str:
    content = hashlib.sha256()
    with wheel.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            content.update(block)
    return hashlib.sha256(
        f"{installer_key}\0{wheel.name}\0{content.hexdigest()}".encode()
    ).hexdigest()


@dataclass(frozen=True)
class Layer:
    """What a layer's wheels install: every path under the root (``usr/lib/...``), parents
    first and siblings by name, as ``tar`` lists a tree, and the file, folder or link on
    disk it is; how many of the wheels were installed for an earlier image."""

    entries: Mapping[str, Path]
    reused: int = 0


class _Unsplittable(Exception):
    """An installed tree that cannot be told apart by wheel."""


class Installs:
    """Wheels installed this run under ``root``, one tree per wheel; safe to share
    between lanes (two lanes installing one wheel at once both install it, one tree is
    kept)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def place(
        self, *, installer_key: str, wheels: Sequence[Path], dest: Path, install: Install
    ) -> Layer:
        """The layer ``wheels`` install, each wheel installed once per run; ``dest`` (which
        must not exist) holds an install of them all that could not be split or merged."""
        keys = {wheel: _wheel_key(installer_key, wheel) for wheel in wheels}
        missing = [wheel for wheel in wheels if not (self.root / keys[wheel]).is_dir()]
        if missing:
            self.root.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix="install-", dir=self.root))
            try:
                install(missing, scratch)
                trees = _split(scratch, missing)
            except _Unsplittable:
                shutil.rmtree(scratch, ignore_errors=True)
                return self._whole(wheels, dest, install)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
            for wheel, tree in trees.items():
                self._keep(tree, self.root / keys[wheel])
            shutil.rmtree(scratch, ignore_errors=True)
        try:
            entries = merged([self.root / keys[wheel] for wheel in wheels])
        except FileExistsError:
            # Two wheels write one path: pip's own install decides which file wins.
            return self._whole(wheels, dest, install)
        return Layer(entries, reused=len(wheels) - len(missing))

    @staticmethod
    def _whole(wheels: Sequence[Path], dest: Path, install: Install) -> Layer:
        dest.mkdir(parents=True)
        install(wheels, dest)
        return Layer(merged([dest]))

    def clear(self) -> None:
        """Remove every installed tree, once no build of the run will install again (a later
        install would only install its wheels anew)."""
        if not self.root.is_dir():
            return
        for tree in self.root.iterdir():
            shutil.rmtree(tree, ignore_errors=True)

    def _keep(self, tree: Path, where: Path) -> None:
        with self._lock:
            if where.exists():
                return  # another lane installed the same wheel meanwhile
            tree.rename(where)


def _split(root: Path, wheels: Sequence[Path]) -> dict[Path, Path]:
    """Move the installed ``root`` apart into one folder per wheel (under ``root``), by
    the RECORD of each wheel's distribution."""
    by_name: dict[tuple[str, str], Path] = {}
    for found in wheels:
        name, version, _, _ = parse_wheel_filename(found.name)
        by_name[(name, str(version))] = found
    files = {path for path in root.rglob("*") if not path.is_dir() or path.is_symlink()}
    trees: dict[Path, Path] = {}
    for record in sorted(root.rglob("*.dist-info/RECORD")):
        project, _, written = record.parent.name.removesuffix(".dist-info").rpartition("-")
        try:
            release = str(Version(written))
        except InvalidVersion:
            raise _Unsplittable(f"{record}: version {written!r}") from None
        wheel = by_name.get((canonicalize_name(project), release))
        if wheel is None or wheel in trees:
            raise _Unsplittable(f"{record} is no wheel's")
        tree = root / f".tree-{len(trees)}"
        trees[wheel] = tree
        site = record.parent.parent
        for row in csv.reader(record.read_text(encoding="utf-8").splitlines()):
            if not row:
                continue
            path = Path(os.path.normpath(site / row[0]))
            if path not in files:
                raise _Unsplittable(f"{path} is named twice or missing")
            files.remove(path)
            moved = tree / path.relative_to(root)
            moved.parent.mkdir(parents=True, exist_ok=True)
            path.rename(moved)
    if files or len(trees) != len(wheels):
        raise _Unsplittable("files no RECORD names, or a wheel without a RECORD")
    return trees


def merged(trees: Sequence[Path]) -> dict[str, Path]:
    """The entries of ``trees`` laid over each other (`Layer.entries`): a folder that several
    trees have is one entry, the first tree's. FileExistsError if two trees have one path
    that is not a folder in both.

    Read straight into the layer's archive, where the trees were hard-linked into one tree
    that was archived and then removed: in a cold bench run, sampled by py-spy, the
    publisher's build lanes were busy 7 s making those links and 8 s removing them, of 64 s
    busy in all (docs/benchmarks.md)."""
    found: dict[tuple[str, ...], tuple[Path, bool]] = {}
    for tree in trees:
        if not tree.is_dir():
            continue
        pending: list[tuple[str, tuple[str, ...]]] = [(str(tree), ())]
        while pending:
            folder, parts = pending.pop()
            with os.scandir(folder) as listing:
                for entry in listing:
                    key = (*parts, entry.name)
                    # A link to a folder is an entry like a file: not descended into.
                    is_folder = entry.is_dir(follow_symlinks=False)
                    earlier = found.get(key)
                    if earlier is None:
                        found[key] = (Path(entry.path), is_folder)
                    elif not (is_folder and earlier[1]):
                        raise FileExistsError(entry.path)
                    if is_folder:
                        pending.append((entry.path, key))
    # Sorted by their parts, paths come as tar lists a tree: a folder, then what it holds.
    return {"/".join(key): found[key][0] for key in sorted(found)}


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source``, or a copy where a link cannot be (another
    file system)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)

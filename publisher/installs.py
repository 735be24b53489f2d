"""Package trees installed during one run, shared by every build that installs the same.

A matrix installs the same dependency set many times: the patch releases of one Python
resolve to the same wheels but prefect's own, and every full image of those releases adds
the same extras. Each install of prefect's ~100 dependencies takes pip 13-15 s of a core,
and gives the same files. So a tree is installed once per run and every later build
hard-links it into its context: the same files, with the same modification times, make
the same layer, which the builder's cache answers and the registry already holds.

What makes two installs the same: the image whose pip installs (its id), the target it
installs for (target.py), and the wheels, by content.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path


def key(*, installer_id: str, target: str, layer: str, wheels: Iterable[Path]) -> str:
    """What identifies an install: the installing image, the target, the layer (its name is
    in the byte code's paths) and the wheels."""
    digest = hashlib.sha256()
    for wheel in sorted(wheels, key=lambda path: path.name):
        content = hashlib.sha256()
        with wheel.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                content.update(block)
        digest.update(wheel.name.encode() + b"\0" + content.digest())
    document = {
        "installer": installer_id,
        "target": target,
        "layer": layer,
        "wheels": digest.hexdigest(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


class Installs:
    """Trees installed this run under ``root``, by key; safe to share between lanes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._keys: dict[str, threading.Lock] = {}

    def place(self, key: str, dest: Path, install: Callable[[Path], None]) -> bool:
        """Put the tree of ``key`` at ``dest`` (which must not exist), installing it with
        ``install(folder)`` only if no build of this run has; True when it was reused.

        Two lanes asking for the same key at once: the second waits for the first's
        install rather than doing it again. A failed install leaves nothing behind.
        """
        with self._lock:
            guard = self._keys.setdefault(key, threading.Lock())
        tree = self.root / key
        with guard:
            reused = tree.is_dir()
            if not reused:
                scratch = self.root / f"{key}.partial"
                shutil.rmtree(scratch, ignore_errors=True)
                scratch.mkdir(parents=True)
                try:
                    install(scratch)
                except BaseException:
                    shutil.rmtree(scratch, ignore_errors=True)
                    raise
                scratch.rename(tree)
        _link_tree(tree, dest)
        return reused


def _link_tree(source: Path, dest: Path) -> None:
    """``dest`` as a copy of ``source`` made of hard links (a copy where they cannot be)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, symlinks=True, copy_function=link)

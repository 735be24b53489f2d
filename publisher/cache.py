"""The publisher's cache on this machine: what one run learned that the next can reuse.

Every entry is named by what it was made from (an image id, a base's identity and
architecture, a pip download's URL), so an entry is never stale, only unused: deleting the
folder costs the next run time, never correctness.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prefect-publisher"


def folder(name: str) -> Path:
    """The folder of one kind of entry (``debs``, ``smoke``...), not created."""
    return ROOT / name


def read_json(path: Path) -> Any:
    """An entry written by ``write_json``; None when there is none or it cannot be read."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, document: Any) -> None:
    """Write an entry whole or not at all: a reader meanwhile, or a run killed halfway,
    never sees part of one. A cache that cannot be written (a read-only home) is only not
    kept: it costs the next run time, and must not fail this one."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch.write_text(json.dumps(document))
        scratch.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            scratch.unlink(missing_ok=True)

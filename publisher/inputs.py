"""An image's build inputs: what decides its content before anything is resolved or built.

The inputs are the Dockerfiles and entrypoint, the build arguments, the extras, the base
image (reference and identity) and, for an image built on a core image, that parent. Their
hash (the fingerprint) keys the local build cache; the inputs themselves are recorded in a
label so that `publisher status` can say what changed since an image was published.

The packages pip resolved to are recorded beside them (labels.PACKAGES) but are not an
input: a released image does not become stale because a dependency published a new
version since. Immutable tags never move on their own anyway; `--replace` moves them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

# Bumped when the meaning of the inputs changes (a new build step outside the files).
FORMAT = "2"


@dataclass(frozen=True, kw_only=True)
class Inputs:
    base: str  # the base image reference, as the build names it
    base_id: str  # its registry digest, else its local image id
    files: Mapping[str, str] = field(default_factory=dict)  # file name -> sha256 hex
    buildargs: Mapping[str, str] = field(default_factory=dict)
    extras: tuple[str, ...] = ()
    parent: str | None = None  # the core image this one is built on, if any
    format: str = FORMAT

    @classmethod
    def of(
        cls,
        *,
        base: str,
        base_id: str,
        files: Mapping[str, bytes],
        buildargs: Mapping[str, str],
        extras: Iterable[str] = (),
        parent: str | None = None,
    ) -> Inputs:
        return cls(
            base=base,
            base_id=base_id,
            files={name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())},
            buildargs=dict(sorted(buildargs.items())),
            extras=tuple(extras),
            parent=parent,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "format": self.format,
            "base": self.base,
            "base_id": self.base_id,
            "files": dict(self.files),
            "buildargs": dict(self.buildargs),
            "extras": list(self.extras),
            "parent": self.parent,
        }

    @property
    def fingerprint(self) -> str:
        # The base by identity only: the same image under another name builds the same.
        hashed = self.to_json()
        del hashed["base"]
        encoded = json.dumps(hashed, sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(encoded).hexdigest()

    def to_label(self) -> str:
        # The parent is part of the fingerprint but not of the label: it is derived from
        # the other inputs (or is a digest of the registry), and status compares causes.
        recorded = self.to_json()
        del recorded["parent"]
        return json.dumps(recorded, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_label(cls, text: str | None) -> Inputs | None:
        """The inputs an image recorded, or None when it recorded none we can read."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(
                base=str(data["base"]),
                base_id=str(data["base_id"]),
                files={str(k): str(v) for k, v in dict(data["files"]).items()},
                buildargs={str(k): str(v) for k, v in dict(data["buildargs"]).items()},
                extras=tuple(str(e) for e in data["extras"]),
                format=str(data.get("format", "?")),
            )
        except (ValueError, KeyError, TypeError):
            return None


def changes(recorded: Inputs, today: Inputs) -> list[str]:
    """What differs between the inputs an image was built from and today's, in words."""
    found: list[str] = []
    if recorded.format != today.format:
        # Recorded by a publisher that described its inputs differently: not comparable.
        found.append(f"recorded by an older publisher (inputs format {recorded.format})")
        return found
    if recorded.base_id != today.base_id:
        # By identity: the same image under another name builds the same (see fingerprint).
        renamed = f", was {recorded.base}" if recorded.base != today.base else ""
        found.append(
            f"base image {today.base} changed ({_short(recorded.base_id)} -> "
            f"{_short(today.base_id)}{renamed})"
        )
    for name in sorted(set(recorded.files) | set(today.files)):
        if recorded.files.get(name) != today.files.get(name):
            found.append(f"{name} changed")
    for key in sorted(set(recorded.buildargs) | set(today.buildargs)):
        old, new = recorded.buildargs.get(key), today.buildargs.get(key)
        if old != new and key != "EXTRAS":
            found.append(f"build argument {key}: {old or '(unset)'} -> {new or '(unset)'}")
    if recorded.extras != today.extras:
        found.append(f"extras: [{', '.join(recorded.extras)}] -> [{', '.join(today.extras)}]")
    return found


def of_packages(wheels: Iterable[Path], parent: str | None = None) -> str:
    """The resolved package set, by wheel file name (name, version and tags); an image
    built on a parent adds its wheels to the parent's identity."""
    names = "\n".join(sorted(w.name for w in wheels))
    if parent:
        names = f"{parent}\n{names}"
    return "sha256:" + hashlib.sha256(names.encode()).hexdigest()


def _short(identity: str) -> str:
    return identity.removeprefix("sha256:")[:12]

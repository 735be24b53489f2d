"""How one image is built: its Dockerfile, build arguments and inputs. Pure.

The builder and `publisher status` both derive an image's inputs here, so "what would be
built today" means the same thing to both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import PublisherError
from .inputs import Inputs
from .plan import Image

CORE_DOCKERFILE = "core.Dockerfile"
ENTRYPOINT = "entrypoint.sh"
LOCAL_CACHE = "prefect-publisher/cache"


@dataclass(frozen=True, kw_only=True)
class Recipe:
    dockerfile: str  # "" for an image made of its core and a layer (assemble.py)
    extras: tuple[str, ...]
    buildargs: Mapping[str, str]  # what the Dockerfile receives
    inputs: Inputs
    # The digest a --replace build takes the tags from: a label, so not an input, but it
    # makes a different image, so it is part of the cache key.
    replaces: str = ""

    @property
    def fingerprint(self) -> str:
        return self.inputs.fingerprint

    @property
    def cache_ref(self) -> str:
        """Local tag named by the fingerprint: a later run on this machine reuses it."""
        key = self.fingerprint
        if self.replaces:
            key = "sha256:" + hashlib.sha256(f"{key} {self.replaces}".encode()).hexdigest()
        return f"{LOCAL_CACHE}:{key.removeprefix('sha256:')[:32]}"


@dataclass(frozen=True, kw_only=True)
class Sources:
    """The files an image is built from, read once."""

    files: Mapping[str, bytes]

    @classmethod
    def read(cls, folder: Path) -> Sources:
        files: dict[str, bytes] = {}
        for name in (CORE_DOCKERFILE, ENTRYPOINT):
            try:
                files[name] = (folder / name).read_bytes()
            except OSError as exc:
                raise PublisherError(f"{folder / name}: {exc.strerror}") from None
        return cls(files=files)


def core_recipe(
    image: Image, *, base: str, base_id: str, sources: Sources, revision: str | None = None
) -> Recipe:
    """The core image of ``image``'s version and Python: prefect on the base, no extras."""
    return Recipe(
        dockerfile=CORE_DOCKERFILE,
        extras=(),
        buildargs={"BASE_IMAGE": base},
        inputs=Inputs.of(
            base=base,
            base_id=base_id,
            files=_pick(sources, CORE_DOCKERFILE, ENTRYPOINT),
            buildargs=_stable_args(image, revision),
        ),
    )


def extras_recipe(image: Image, *, core: Recipe, parent_id: str) -> Recipe:
    """``image``: its core (``parent_id``, local or published) plus the layer of what its
    extras add (assemble.py).

    It inherits the core's inputs (base, files, build arguments) and adds its own: a
    core.Dockerfile edit or a new base changes it too, and one made of a released core
    records what that core was built from, not today's inputs.
    """
    return Recipe(
        dockerfile="",
        extras=image.extras,
        buildargs={},
        inputs=Inputs(
            base=core.inputs.base,
            base_id=core.inputs.base_id,
            files=dict(core.inputs.files),
            buildargs=dict(core.inputs.buildargs),
            extras=image.extras,
            parent=parent_id,
        ),
    )


def recipe_for(
    image: Image, *, base: str, base_id: str, sources: Sources, revision: str | None = None
) -> Recipe:
    """Today's recipe for ``image`` built on a fresh core (what `status` compares with)."""
    core = core_recipe(image, base=base, base_id=base_id, sources=sources, revision=revision)
    if not image.extras:
        return core
    return extras_recipe(image, core=core, parent_id=core.fingerprint)


def _pick(sources: Sources, *names: str) -> dict[str, bytes]:
    return {name: sources.files[name] for name in names}


def _stable_args(image: Image, revision: str | None) -> dict[str, str]:
    # What gets installed is decided by the version, not by a build argument.
    # The package is part of it: a prefect-client core must never be taken for the prefect
    # core of the same version and base (their cache refs would be the same).
    args = {"PREFECT": f"{image.package}=={image.prefect_version}"}
    if revision is not None:
        # A nightly's source is its commit: a new commit must change the fingerprint.
        args["SOURCE_REVISION"] = revision
    return args

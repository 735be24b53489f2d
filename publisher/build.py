"""Building one group of images: the cells that share a Prefect version and a Python.

A group has one core image (prefect on the base image) and builds each variant with
extras FROM it, so they share its layers. The core is either built here or, when the
registry already holds it and nothing in the group replaces it, the published one
(pulled): a new variant of a released version then shares the released layers. Packages
are resolved by the parent image's own pip, outside the build (see wheels.py); every
image is smoke-tested. A Builder returns what happened; it never pushes.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import docker
from packaging.utils import parse_wheel_filename

from . import docker_client, labels, smoke, wheels
from .errors import PublisherError
from .inputs import Inputs, of_packages
from .matrix import Matrix
from .plan import Image
from .progress import Reporter
from .recipe import Recipe, Sources, core_recipe, extras_recipe


@dataclass(frozen=True, kw_only=True)
class NightlySource:
    """A nightly's locally built prefect wheel and the commit it was built from."""

    wheel: Path
    revision: str
    ui: str = labels.UI_BUILT  # labels.UI's value


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What a build needs beyond the plan."""

    dockerfiles: Path
    index: wheels.IndexOptions = dataclasses.field(default_factory=wheels.IndexOptions)
    base_image: str | None = None  # overrides the matrix's template
    force: bool = False  # rebuild what this daemon has already built
    nightly: NightlySource | None = None

    def base_for(self, image: Image) -> str:
        if self.base_image is not None:
            return self.base_image.format(python=image.python_version)
        return image.base_image

    @property
    def revision(self) -> str | None:
        return self.nightly.revision if self.nightly else None


@dataclass(frozen=True, kw_only=True)
class Group:
    version: str
    python: str
    images: tuple[Image, ...]
    # "HOST/REPO@sha256:..." of the released core image to build on, if there is one.
    published_core: str | None = None
    # image id -> the digest a --replace build takes the tags from.
    replaces: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def subject(self) -> str:
        return f"prefect {self.version} / Python {self.python}"


@dataclass(frozen=True, kw_only=True)
class Built:
    """One image's result: built and tested, or the reason it was not."""

    image: Image
    error: str = ""
    local_id: str = ""
    size: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


def groups_of(images: Iterable[Image]) -> list[Group]:
    found: dict[tuple[str, str], list[Image]] = {}
    for image in images:
        found.setdefault((image.prefect_version, image.python_version), []).append(image)
    return [Group(version=v, python=p, images=tuple(i)) for (v, p), i in found.items()]


@dataclass(frozen=True, kw_only=True)
class _Parent:
    ref: str  # what the extras build names in FROM
    id: str  # its image id (config digest)


class Builder:
    """Builds groups on one daemon; a lane of the publisher owns one."""

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        matrix: Matrix,
        settings: Settings,
        reporter: Reporter,
        workdir: Path,
        auth: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.matrix = matrix
        self.settings = settings
        self.reporter = reporter
        self.workdir = workdir
        self.auth = auth
        self.sources = Sources.read(settings.dockerfiles)

    def build(self, group: Group) -> list[Built]:
        """Build and smoke-test a group; failures come back as results, not exceptions."""
        started = time.monotonic()
        try:
            core, parent = self._core(group)
        except PublisherError as exc:
            self.reporter.step(group.subject, f"FAILED: {exc}")
            return [Built(image=image, error=str(exc)) for image in group.images]
        core_seconds = time.monotonic() - started
        results = [self._image(group, image, core, parent) for image in group.images]
        # The core build is charged to the group's first image.
        first = results[0]
        results[0] = dataclasses.replace(first, seconds=first.seconds + core_seconds)
        return results

    def _core(self, group: Group) -> tuple[Recipe, _Parent]:
        first = group.images[0]
        base = self.settings.base_for(first)
        docker_client.ensure_image(self.client, base)
        base_id = docker_client.image_identity(self.client, base)
        core = core_recipe(
            first, base=base, base_id=base_id, sources=self.sources, revision=self.settings.revision
        )
        core_image = next((i for i in group.images if not i.extras), None)
        if core_image is not None:
            core = dataclasses.replace(core, replaces=group.replaces.get(core_image.id, ""))
        if group.published_core is not None:
            self.reporter.step(group.subject, f"building on the released {group.published_core}")
            docker_client.ensure_image(self.client, group.published_core, self.auth)
            parent = group.published_core
            recorded = Inputs.from_label(
                docker_client.labels(self.client, parent).get(labels.INPUTS)
            )
            if recorded is not None:
                # What the released core was built from is what this image is built on.
                core = dataclasses.replace(core, inputs=recorded)
        else:
            self._ensure(
                core, group.subject + " core", lambda d: self._core_context(group, core, d)
            )
            parent = core.cache_ref
        # The parent by image id: a released core pulled from the registry is the same
        # parent as the local build it was pushed from, so a resumed run rebuilds nothing.
        return core, _Parent(ref=parent, id=docker_client.image_id(self.client, parent))

    def _image(self, group: Group, image: Image, core: Recipe, parent: _Parent) -> Built:
        started = time.monotonic()
        recipe = core
        try:
            if image.extras:
                recipe = extras_recipe(
                    image,
                    core=core,
                    parent_ref=parent.ref,
                    parent_id=parent.id,
                    sources=self.sources,
                )
                recipe = dataclasses.replace(recipe, replaces=group.replaces.get(image.id, ""))
                self._ensure(
                    recipe, image.id, lambda d: self._extras_context(image, recipe, parent, d)
                )
            local = self.client.images.get(recipe.cache_ref)
            size = int(local.attrs.get("Size", 0))
            self.reporter.step(image.id, "smoke-testing")
            result = smoke.check(
                self.client,
                str(local.id),
                python=image.python_version,
                prefect_version=image.prefect_version,
                extras_present=image.extras,
                extras_absent=self._extras_elsewhere(image),
                # From the image, not the settings: a released core pulled to build on
                # carries its own record.
                ui=smoke.ui_check(local.labels or {}),
            )
        except PublisherError as exc:
            self.reporter.step(image.id, f"FAILED: {exc}")
            return Built(image=image, error=str(exc), seconds=time.monotonic() - started)
        except docker.errors.ImageNotFound as exc:
            return Built(image=image, error=f"image vanished: {exc}")
        self.reporter.step(
            image.id,
            f"passed (prefect {result.prefect_version}, Python {result.python_version}, "
            f"{size / 1e6:.0f} MB, {result.ui})",
        )
        return Built(
            image=image,
            local_id=str(local.id),
            size=size,
            seconds=time.monotonic() - started,
        )

    def _ensure(
        self, recipe: Recipe, subject: str, prepare: Callable[[Path], tuple[Path, dict[str, str]]]
    ) -> None:
        """Build ``recipe`` unless this daemon already holds it (``--force`` rebuilds)."""
        if not self.settings.force and docker_client.has_image(self.client, recipe.cache_ref):
            self.reporter.step(subject, "already built on this machine")
            return
        work = self.workdir / recipe.fingerprint.removeprefix("sha256:")[:16]
        shutil.rmtree(work, ignore_errors=True)
        context, extra_labels = prepare(work)
        self.reporter.step(subject, f"building ({recipe.dockerfile})")
        started = time.monotonic()
        docker_client.build(
            self.client,
            docker_client.BuildRequest(
                context=context,
                dockerfile=recipe.dockerfile,
                buildargs=dict(recipe.buildargs),
                labels={
                    **extra_labels,
                    labels.FINGERPRINT: recipe.fingerprint,
                    labels.INPUTS: recipe.inputs.to_label(),
                    labels.REPLACES: recipe.replaces,
                },
                tag=recipe.cache_ref,
            ),
            on_line=lambda line: self.reporter.detail(subject, line),
        )
        self.reporter.step(subject, f"built in {time.monotonic() - started:.1f}s")

    def _core_context(self, group: Group, core: Recipe, work: Path) -> tuple[Path, dict[str, str]]:
        found = self._resolve(group.subject, group.version, core.inputs.base, (), work / "wheels")
        context = work / "context"
        _wheel_dir(context / "prefect", [w for w in found if _name(w) == "prefect"])
        _wheel_dir(context / "deps", [w for w in found if _name(w) != "prefect"])
        self._copy_sources(context, core.dockerfile, "entrypoint.sh")
        revision = self.settings.revision or wheels.revision_of(found)
        return context, self._labels(group.images[0], of_packages(found), revision)

    def _extras_context(
        self, image: Image, recipe: Recipe, parent: _Parent, work: Path
    ) -> tuple[Path, dict[str, str]]:
        # Resolved by the parent's own pip: exactly what the extras add to that image.
        found = self._resolve(
            image.id, image.prefect_version, parent.ref, image.extras, work / "wheels"
        )
        context = work / "context"
        _wheel_dir(context / "extras", found)
        self._copy_sources(context, recipe.dockerfile)
        return context, self._labels(image, of_packages(found, parent=parent.id), None)

    def _resolve(
        self, subject: str, version: str, image_ref: str, extras: tuple[str, ...], dest: Path
    ) -> list[Path]:
        name = f"prefect[{','.join(extras)}]" if extras else "prefect"
        nightly = self.settings.nightly
        if nightly is not None:
            # A nightly names its wheel file: the index may hold a release of the same version.
            requirement = f"{name} @ file:///source/{nightly.wheel.name}"
        else:
            requirement = f"{name}=={version}"
        self.reporter.step(subject, f"resolving {requirement}")
        found = wheels.download(
            self.client,
            wheels.PipRequest(
                requirements=(requirement,),
                local_wheel=nightly.wheel if nightly else None,
                # prefect is the parent's already; a URL requirement would fetch it again.
                exclude=("prefect",) if extras else (),
            ),
            base_image=image_ref,
            dest=dest,
            index=self.settings.index,
        )
        self.reporter.step(subject, f"{requirement}: {len(found)} wheels")
        return found

    def _copy_sources(self, context: Path, *names: str) -> None:
        context.mkdir(parents=True, exist_ok=True)
        for name in names:
            # copy2 keeps the mode: entrypoint.sh must stay executable.
            shutil.copy2(self.settings.dockerfiles / name, context / name)

    def _labels(self, image: Image, packages: str, revision: str | None) -> dict[str, str]:
        found = {
            labels.TITLE: self.matrix.image,
            labels.VERSION: image.prefect_version,
            labels.CREATED: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            labels.SOURCE: self.matrix.source_url,
            labels.PYTHON: image.python_version,
            labels.PACKAGES: packages,
        }
        if revision:
            found[labels.REVISION] = revision
        if self.settings.nightly is not None:
            found[labels.UI] = self.settings.nightly.ui
        return found

    def _extras_elsewhere(self, image: Image) -> tuple[str, ...]:
        """Extras other variants install, which an image without extras must not carry."""
        if image.extras:
            return ()
        return tuple(sorted({e for v in self.matrix.variants for e in v.extras}))


def _wheel_dir(folder: Path, files: list[Path]) -> None:
    """Wheels plus a requirements file pinning exactly them, for a --no-deps install."""
    folder.mkdir(parents=True, exist_ok=True)
    pins = []
    for wheel in sorted(files):
        shutil.copy2(wheel, folder / wheel.name)
        name, version, _, _ = parse_wheel_filename(wheel.name)
        pins.append(f"{name}=={version}\n")
    (folder / "requirements.txt").write_text("".join(pins))


def _name(wheel: Path) -> str:
    return str(parse_wheel_filename(wheel.name)[0])

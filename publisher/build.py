"""Building one group of images: the cells that share a Prefect version, a Python, a
base image and a package.

A group has one core image (the package, e.g. prefect, on the base image) and makes each
variant with extras of it plus one layer, so they share its layers (assemble.py).
Variants with another base image or package cannot share that core, so they are groups
of their own. The core is either made here or, when the registry already holds it and
nothing in the group replaces it, the published one (pulled): a new variant of a
released version then shares the released layers. Packages are resolved by the parent
image's own pip, outside the build (see wheels.py); every image is smoke-tested. A
Builder returns what happened; it never pushes.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import docker
from packaging.utils import canonicalize_name, parse_wheel_filename

from . import assemble, bases, debs, docker_client, installs, labels, smoke, target, wheels
from .assemble import Assembled, Assemblies, Layer
from .errors import PublisherError
from .inputs import Inputs, of_packages
from .installs import Installs
from .matrix import Matrix
from .plan import Image
from .platforms import DEFAULT_PLATFORM, machine_of, platform_of
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
    """Images that share one core: same version, Python, base image and package, built
    for one platform.

    The base image and package are read from the images (all alike, see groups_of).
    """

    version: str
    python: str
    images: tuple[Image, ...]
    platform: str = DEFAULT_PLATFORM
    # "HOST/REPO@sha256:..." of the released core image to build on, if there is one.
    published_core: str | None = None
    # image id -> the digest a --replace build takes the tags from.
    replaces: dict[str, str] = dataclasses.field(default_factory=dict)
    # Tells this group's progress lines apart from another group's of the same package,
    # version and Python (one on another base image); set by groups_of only then.
    label: str = ""

    @property
    def package(self) -> str:
        return self.images[0].package

    @property
    def base_image(self) -> str:
        return self.images[0].base_image

    @property
    def subject(self) -> str:
        subject = f"{self.package} {self.version} / Python {self.python}"
        if self.label:
            subject += f" ({self.label})"
        return f"{subject} / {self.platform}" if self.pinned_base else subject

    @property
    def pinned_base(self) -> bool:
        """Whether the base is taken by its digest for the group's platform (read from the
        base's index) rather than as the daemon has it: a local tag holds one platform only,
        so a multi-platform build that named the tag could silently get another's base."""
        return any(image.platforms != (DEFAULT_PLATFORM,) for image in self.images)


def serves_ui(image: Image, group: Sequence[Image], *, core_released: bool = False) -> bool:
    """Whether ``image``'s smoke test starts `prefect server start`, of the images of
    ``group`` (which share its core). The server is started once per core: an image with
    extras adds packages to a core that was checked (here, or when it was released), and
    the server costs 20-60 s."""
    core_checked = core_released or any(not other.extras for other in group)
    return not (image.extras and core_checked)


@dataclass(frozen=True, kw_only=True)
class Built:
    """One image's result on one platform: built and tested, or the reason it was not."""

    image: Image
    platform: str = DEFAULT_PLATFORM
    error: str = ""
    local_id: str = ""
    size: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


def groups_of(images: Iterable[Image]) -> list[Group]:
    """Group in plan order. A core is shared only by images that install alike (version,
    Python, base image, package), and each platform builds its own core."""
    found: dict[tuple[str, str, str, str, str], list[Image]] = {}
    for image in images:
        for platform in image.platforms:
            key = (
                image.prefect_version,
                image.python_version,
                image.base_image,
                image.package,
                platform,
            )
            found.setdefault(key, []).append(image)
    # Two groups that differ only in their base image would print the same subject.
    subjects = Counter((v, p, package, platform) for v, p, _, package, platform in found)
    return [
        Group(
            version=v,
            python=p,
            platform=platform,
            images=tuple(i),
            label=base if subjects[v, p, package, platform] > 1 else "",
        )
        for (v, p, base, package, platform), i in found.items()
    ]


@dataclass(frozen=True, kw_only=True)
class _Parent:
    ref: str  # what the extras build names in FROM
    id: str  # its image id (config digest)


@dataclass(frozen=True, kw_only=True)
class _Prepared:
    """A group's core recipe, the build context of its parent (core.Dockerfile) and the
    core's labels and package layers; no context when the core is not made here
    (released, or already on this daemon)."""

    core: Recipe
    context: tuple[Path, dict[str, str]] | None = None
    layers: tuple[Layer, ...] = ()


@dataclass(frozen=True, kw_only=True)
class _Pip:
    """Where an image's packages are resolved and installed: in the image it is built on,
    or, for a foreign platform, in that base's image for the daemon's own platform, told
    what the foreign image's pip would see (target.py)."""

    image: str
    target: target.Target | None = None


# Told of each image once it is built, untested (Builder.start).
OnBuilt = Callable[[Built], None]


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
        pin_base: Callable[[str, str], str] = bases.pin,
        installs: Installs | None = None,
        assemblies: Assemblies | None = None,
    ) -> None:
        self.client = client
        # Shared by the lanes and the uploader of a run (publish.py), like installs.
        self.assemblies = (
            assemblies if assemblies is not None else Assemblies(workdir / "assembled")
        )
        # Shared by the lanes of a run (publish.py); a Builder of its own keeps its own.
        self.installs = installs if installs is not None else Installs(workdir / "installed")
        self.pin_base = pin_base
        self._machine: str | None = None  # the daemon's own, as uname -m says it
        self._interpreters: dict[str, target.Interpreter] = {}  # by image reference
        self._native_bases: dict[str, str | PublisherError] = {}  # base -> pinned (or why not)
        self.matrix = matrix
        self.settings = settings
        self.reporter = reporter
        self.workdir = workdir
        self.auth = auth
        self.sources = Sources.read(settings.dockerfiles)
        # Two at once: a group's core and full image, or one group's last and the next's
        # first. More would only queue for the same two cores.
        self._smokes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="smoke")
        # The extras of a group's images, resolved and installed while its core installs
        # and builds (see _start_extras), by (image id, platform).
        self._extras = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extras")
        self._early: dict[tuple[str, str], Future[tuple[list[Path], Layer | None]]] = {}
        # The lane's next group, its core's packages resolved and installed while this
        # group's images build and are tested (see start).
        self._next = ThreadPoolExecutor(max_workers=1, thread_name_prefix="next")
        self._ahead: tuple[Group, Future[_Prepared]] | None = None

    def build(self, group: Group) -> list[Built]:
        """Build and smoke-test a group; failures come back as results, not exceptions."""
        return [check.result() for check in self.start(group)]

    def start(
        self, group: Group, on_built: OnBuilt | None = None, *, then: Group | None = None
    ) -> list[Future[Built]]:
        """Build a group's images and start their smoke tests; the results, one per image.

        Returns once the images are built: the smoke tests go on meanwhile (they only read
        the image tested), while the next image of the group is built and while the lane
        goes on to its next group. Under QEMU a smoke test takes minutes, and natively a UI
        check (`prefect server start`, 10-20 s) would otherwise hold up the next build.
        ``on_built`` hears of each image as soon as it is built, before its smoke test:
        an image not yet tested, which the caller may stage but not release.

        ``then``, the lane's next group, has its core's packages resolved and installed
        from the moment this group's core has its own, while this group builds and is
        tested: a lane that waited for its builds before the next resolution left a core
        idle at the end of a run, its last group resolving, installing, building and
        testing alone. Not sooner, so that the next group's install finds this group's
        wheels installed (installs.py). Its failure is the next group's, found in its
        start."""
        started = time.monotonic()
        try:
            core, parent = self._core(group, then)
        except PublisherError as exc:
            self.reporter.step(group.subject, f"FAILED: {exc}")
            error = _on(group, str(exc))
            return [
                _done(Built(image=i, platform=group.platform, error=error)) for i in group.images
            ]
        # The core build is charged to the group's first image.
        charged = time.monotonic() - started
        checks: list[Future[Built]] = []
        for image in group.images:
            built = self._image(group, image, core, parent)
            if isinstance(built, Built):
                checks.append(_done(dataclasses.replace(built, seconds=built.seconds + charged)))
            else:
                local_id, built_at = built
                if on_built is not None:
                    on_built(Built(image=image, platform=group.platform, local_id=local_id))
                checks.append(
                    self._smokes.submit(self._check, group, image, local_id, built_at - charged)
                )
            charged = 0.0
        # Extras resolved early for an image this daemon already held are not needed.
        for image in group.images:
            self._early.pop((image.id, group.platform), None)
        return checks

    def close(self) -> None:
        """Wait for the smoke tests still running."""
        self._next.shutdown(wait=True)
        self._extras.shutdown(wait=True)
        self._smokes.shutdown(wait=True)

    def _core(self, group: Group, then: Group | None = None) -> tuple[Recipe, _Parent]:
        """The group's core, built unless released or built here before, and the image
        its other images are built on; ``then``'s core prepared meanwhile (start)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] is group:
            prepared = ahead[1].result()
        else:
            prepared = self._prepare(group)
        if then is not None:
            self._ahead = (then, self._next.submit(self._prepare, then))
        core = prepared.core
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
            self._make_core(group, core, prepared)
            parent = core.cache_ref
        # The parent by image id: a released core pulled from the registry is the same
        # parent as the local build it was pushed from, so a resumed run rebuilds nothing.
        return core, _Parent(ref=parent, id=docker_client.image_id(self.client, parent))

    def _prepare(self, group: Group) -> _Prepared:
        """The group's core recipe and, when it is to be built here, its build context."""
        first = group.images[0]
        base = self.settings.base_for(first)
        if group.pinned_base:
            base = self.pin_base(base, group.platform)
            self.reporter.step(group.subject, f"base {base}")
        docker_client.ensure_image(self.client, base)
        if group.pinned_base:
            base_id = base.rsplit("@", 1)[1]  # the platform image's own digest
        else:
            base_id = docker_client.image_identity(self.client, base)
        core = core_recipe(
            first, base=base, base_id=base_id, sources=self.sources, revision=self.settings.revision
        )
        core_image = next((i for i in group.images if not i.extras), None)
        if core_image is not None:
            core = dataclasses.replace(core, replaces=group.replaces.get(core_image.id, ""))
        if group.published_core is not None or self._built_here(core):
            return _Prepared(core=core)
        context, found_labels, layers = self._core_context(group, core, self._work(core))
        return _Prepared(core=core, context=(context, found_labels), layers=layers)

    def _image(
        self, group: Group, image: Image, core: Recipe, parent: _Parent
    ) -> Built | tuple[str, float]:
        """Build ``image`` (the core is built already); its local id and when it was
        started, ready for its smoke test, or a failed Built."""
        started = time.monotonic()
        try:
            recipe = core
            if image.extras:
                recipe = extras_recipe(image, core=core, parent_id=parent.id)
                recipe = dataclasses.replace(recipe, replaces=group.replaces.get(image.id, ""))
                subject = _subject(group, image)
                if self._built_here(recipe):
                    self.reporter.step(subject, "already built on this machine")
                else:
                    found_labels, layers = self._extras_layer(
                        group, image, parent, self._work(recipe)
                    )
                    self.reporter.step(subject, "building (the core and its extras' layer)")
                    self._assemble(recipe, subject, parent.id, found_labels, layers)
            return str(self.client.images.get(recipe.cache_ref).id), started
        except PublisherError as exc:
            return self._failed(group, image, str(exc), started)
        except docker.errors.ImageNotFound as exc:
            return self._failed(group, image, f"image vanished: {exc}", started)

    def _check(self, group: Group, image: Image, local_id: str, started: float) -> Built:
        """Smoke-test a built image."""
        subject = _subject(group, image)
        try:
            local = self.client.images.get(local_id)
            size = int(local.attrs.get("Size", 0))
            result = smoke.check(
                self.client,
                str(local.id),
                python=image.python_version,
                prefect_version=image.prefect_version,
                extras_present=image.extras,
                extras_absent=self._extras_elsewhere(image),
                # Checked where the plan names platforms; a daemon building the default
                # matrix builds for itself, as it always has.
                machine=machine_of(group.platform) if group.pinned_base else None,
                ui=self._ui_check(group, image, local.labels or {}),
                package=image.package,
                # --force tests again what it builds again, even where the build gives
                # the same image.
                reuse=not self.settings.force,
                on_probe=lambda: self.reporter.step(subject, "smoke-testing"),
            )
        except PublisherError as exc:
            return self._failed(group, image, str(exc), started)
        except docker.errors.ImageNotFound as exc:
            return self._failed(group, image, f"image vanished: {exc}", started)
        self.reporter.step(
            subject,
            f"{'passed on this image before' if result.earlier else 'passed'} "
            f"(prefect {result.prefect_version}, Python {result.python_version}, "
            f"{result.machine}, {size / 1e6:.0f} MB, {result.ui})",
        )
        return Built(
            image=image,
            platform=group.platform,
            local_id=str(local.id),
            size=size,
            seconds=time.monotonic() - started,
        )

    def _failed(self, group: Group, image: Image, error: str, started: float) -> Built:
        self.reporter.step(_subject(group, image), f"FAILED: {error}")
        return Built(
            image=image,
            platform=group.platform,
            error=_on(group, error),
            seconds=time.monotonic() - started,
        )

    def _built_here(self, recipe: Recipe) -> bool:
        return not self.settings.force and docker_client.has_image(self.client, recipe.cache_ref)

    def _work(self, recipe: Recipe) -> Path:
        """An empty folder for what building ``recipe`` needs."""
        work = self.workdir / recipe.fingerprint.removeprefix("sha256:")[:16]
        shutil.rmtree(work, ignore_errors=True)
        return work

    def _make_core(self, group: Group, core: Recipe, prepared: _Prepared) -> None:
        """Build the core's parent (core.Dockerfile: the base, tini, the entrypoint) with
        BuildKit, then make the core of it and the package layers (assemble.py); without
        a context this daemon holds the core already (_built_here)."""
        subject = group.subject + " core"
        if prepared.context is None:
            self.reporter.step(subject, "already built on this machine")
            return
        context, found_labels = prepared.context
        self.reporter.step(subject, f"building ({core.dockerfile})")
        started = time.monotonic()
        parent = docker_client.build(
            self.client,
            docker_client.BuildRequest(
                context=context,
                dockerfile=core.dockerfile,
                buildargs=dict(core.buildargs),
                labels={},
                tag=_parent_ref(core),
                platform=_build_platform(group),
            ),
            on_line=lambda line: self.reporter.detail(subject, line),
        )
        shutil.rmtree(context, ignore_errors=True)
        self._assemble(core, subject, parent, found_labels, prepared.layers, started=started)

    def _assemble(
        self,
        recipe: Recipe,
        subject: str,
        parent: str,
        found_labels: dict[str, str],
        layers: Sequence[Layer],
        *,
        started: float | None = None,
    ) -> None:
        """Make ``recipe``'s image of its parent (an image id) and its layers, and load
        it into the daemon under its cache tag."""
        started = time.monotonic() if started is None else started
        image = Assembled(
            config=assemble.child_config(
                self.assemblies.config_of(self.client, parent),
                layers,
                labels={
                    **found_labels,
                    labels.FINGERPRINT: recipe.fingerprint,
                    labels.INPUTS: recipe.inputs.to_label(),
                    labels.REPLACES: recipe.replaces,
                },
                created=found_labels.get(labels.CREATED) or _now(),
            ),
            parent=parent,
            layers=tuple(layers),
        )
        assemble.load(self.client, image, recipe.cache_ref)
        self.assemblies.add(image)
        self.reporter.step(subject, f"built in {time.monotonic() - started:.1f}s")

    def _core_context(
        self, group: Group, core: Recipe, work: Path
    ) -> tuple[Path, dict[str, str], tuple[Layer, ...]]:
        pip = self._pip(group, core.inputs.base)
        context = work / "context"
        # tini's .deb is fetched (by the base's apt, 3-4 s the first time per base) while
        # pip resolves and installs: the two only meet in the build context.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="debs") as apt:
            fetched = apt.submit(
                debs.fetch,
                self.client,
                image=pip.image,
                identity=core.inputs.base_id,
                dest=context / "debs",
                platform=_build_platform(group),
            )
            found = self._resolve(
                group.subject, group.package, group.version, pip, (), work / "wheels"
            )
            self._start_extras(group, pip, found)
            # The package gets its own layer ("prefect", whatever the package), its
            # dependencies another: releases whose dependencies resolve alike (most patch
            # releases) share one dependency layer, the same wheels archived as the same
            # bytes, which the daemon and registries hold once.
            package = canonicalize_name(group.package)
            layers = [
                self._install(group.subject, pip, layer, files, work)
                for layer, files in (
                    ("deps", [w for w in found if _name(w) != package]),
                    ("prefect", [w for w in found if _name(w) == package]),
                )
            ]
            fetched.result()
        self.reporter.step(group.subject, f"fetched {' '.join(debs.PACKAGES)}")
        self._copy_sources(context, core.dockerfile, "entrypoint.sh")
        revision = self.settings.revision or wheels.revision_of(found, group.package)
        found_labels = self._labels(group.images[0], of_packages(found), revision)
        return context, found_labels, tuple(layer for layer in layers if layer is not None)

    def _start_extras(self, group: Group, pip: _Pip, core: list[Path]) -> None:
        """Resolve and install the extras of the group's images while the core installs
        and builds, instead of after: the core's own packages held at the versions it
        resolved (constraints), shown to pip as installed (their metadata read from the
        core's wheels, where pip would download each again to read it) and left out. The
        same packages as resolving in the built core, unless an extra needs another version
        of one of them: that resolution fails and the extras are resolved in the core image
        after all (_extras_context)."""
        if self.settings.nightly is not None:
            return  # a nightly's package is a file URL, which no constraint can pin
        for image in group.images:
            if image.extras:
                self._early[(image.id, group.platform)] = self._extras.submit(
                    self._early_extras, group, image, pip, tuple(core)
                )

    def _early_extras(
        self, group: Group, image: Image, pip: _Pip, core: tuple[Path, ...]
    ) -> tuple[list[Path], Layer | None]:
        subject = _subject(group, image)
        work = self.workdir / "extras" / f"{image.id}-{group.platform.replace('/', '-')}"
        shutil.rmtree(work, ignore_errors=True)
        found = self._resolve(
            subject,
            image.package,
            image.prefect_version,
            pip,
            image.extras,
            work / "wheels",
            constraints=tuple(_pin(wheel) for wheel in core),
            installed=core,
        )
        return found, self._install(subject, pip, "extras", found, work)

    def _extras_layer(
        self, group: Group, image: Image, parent: _Parent, work: Path
    ) -> tuple[dict[str, str], tuple[Layer, ...]]:
        """The labels of an image with extras and the layer its extras add to the core
        (none when they add nothing)."""
        early = self._early_result(group, image)
        if early is not None:
            found, layer = early
        else:
            # Resolved for the parent: exactly what the extras add to that image.
            pip = self._pip(group, parent.ref)
            found = self._resolve(
                image.id, image.package, image.prefect_version, pip, image.extras, work / "wheels"
            )
            layer = self._install(image.id, pip, "extras", found, work)
        found_labels = self._labels(image, of_packages(found, parent=parent.id), None)
        return found_labels, (layer,) if layer is not None else ()

    def _early_result(self, group: Group, image: Image) -> tuple[list[Path], Layer | None] | None:
        """The extras resolved and installed during the core's build; None when there
        are none."""
        early = self._early.pop((image.id, group.platform), None)
        if early is None:
            return None
        try:
            return early.result()
        except PublisherError as exc:
            self.reporter.step(
                _subject(group, image), f"resolving in the core image instead, as {exc}"
            )
            return None

    def _resolve(
        self,
        subject: str,
        package: str,
        version: str,
        pip: _Pip,
        extras: tuple[str, ...],
        dest: Path,
        *,
        constraints: tuple[str, ...] = (),
        installed: tuple[Path, ...] = (),
    ) -> list[Path]:
        name = f"{package}[{','.join(extras)}]" if extras else package
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
                # The package is the parent's already; a URL requirement would fetch it again.
                # Constrained, the parent's packages are pinned instead of installed: left
                # out all the same.
                exclude=tuple(_pinned(constraints)) or ((package,) if extras else ()),
                constraints=constraints,
                installed=installed,
            ),
            base_image=pip.image,
            dest=dest,
            index=self.settings.index,
            target=pip.target,
        )
        self.reporter.step(subject, f"{requirement}: {len(found)} wheels")
        return found

    def _install(
        self, subject: str, pip: _Pip, layer: str, files: list[Path], work: Path
    ) -> Layer | None:
        """Install a layer's wheels and archive them as the image's layer (assemble.py):
        outside any build, so a foreign platform's are installed natively; each wheel
        once per run for the same installer and target (installs.py). None when nothing
        is installed."""
        batches = itertools.count()

        def install(subset: Sequence[Path], folder: Path) -> None:
            wheel_dir = _wheel_dir(work / f"wheels-{layer}-{next(batches)}", list(subset))
            wheels.install(
                self.client,
                image=pip.image,
                wheels=wheel_dir,
                dest=folder,
                staging=layer,
                target=pip.target,
            )

        layer_files = self.installs.place(
            installer_key=installs.installer(
                image_id=docker_client.image_id(self.client, pip.image),
                target=pip.target.to_json() if pip.target is not None else "",
                layer=layer,
            ),
            wheels=sorted(files),
            dest=work / "trees" / layer,
            install=install,
        )
        archive = assemble.archive_layer(
            layer_files.entries,
            self.assemblies.new_file(f"{layer}.tar"),
            # What `docker history` shows: the step a Dockerfile would have for it.
            f"ADD {layer}.tar / # publisher: {len(files)} wheels",
            mtime=target.EPOCH,
        )
        reused = layer_files.reused
        again = f" ({reused} of {len(files)} wheels as installed for an earlier image)"
        self.reporter.step(subject, f"installed {layer}{again if reused else ''}")
        return archive

    def _pip(self, group: Group, image: str) -> _Pip:
        """Where the packages of an image built on ``image`` are resolved and installed.

        On the daemon's own platform, in ``image``. On a foreign one, in the base's image
        for the daemon's platform with the foreign ``image``'s tags, markers and installed
        packages: under QEMU pip took 20 minutes where natively it takes seconds. A base
        without an image for the daemon's platform leaves only emulation.
        """
        if not group.pinned_base or machine_of(group.platform) == self._native_machine():
            return _Pip(image=image)
        native_platform = platform_of(self._native_machine())
        base = self.settings.base_for(group.images[0])
        if base not in self._native_bases:
            try:
                self._native_bases[base] = self.pin_base(base, native_platform)
            except PublisherError as exc:
                self._native_bases[base] = exc
        native = self._native_bases[base]
        if isinstance(native, PublisherError):
            self.reporter.step(group.subject, f"installing under emulation: {native}")
            return _Pip(image=image)
        docker_client.ensure_image(self.client, native)
        found = target.Target(
            platform=group.platform,
            native_platform=native_platform,
            foreign=self._interpreter(image, group.platform),
            native=self._interpreter(native, native_platform),
        )
        target.check_same(found.native, found.foreign, what=f"{base} ({native_platform})")
        self.reporter.step(group.subject, f"resolving and installing with {native}")
        return _Pip(image=native, target=found)

    def _interpreter(self, image: str, platform: str) -> target.Interpreter:
        if image not in self._interpreters:
            self._interpreters[image] = target.read(self.client, image, platform)
        return self._interpreters[image]

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

    def _ui_check(self, group: Group, image: Image, image_labels: dict[str, str]) -> str:
        """The UI check for this image (from its labels, so a released core pulled to
        build on carries its own record), when it starts the server (`serves_ui`). None
        under emulation, where it takes minutes: the same wheel's UI is checked on the
        daemon's own platform."""
        if group.pinned_base and machine_of(group.platform) != self._native_machine():
            return smoke.UI_SKIP
        if not serves_ui(image, group.images, core_released=group.published_core is not None):
            return smoke.UI_SKIP
        return smoke.ui_check(image_labels)

    def _native_machine(self) -> str:
        if self._machine is None:
            self._machine = docker_client.machine(self.client)
        return self._machine

    def _extras_elsewhere(self, image: Image) -> tuple[str, ...]:
        """Extras other variants of the same package install, which an image without
        extras must not carry (another package's extras mean nothing for this one)."""
        if image.extras:
            return ()
        return tuple(
            sorted(
                {e for v in self.matrix.variants if v.package == image.package for e in v.extras}
            )
        )


def _wheel_dir(folder: Path, files: list[Path]) -> Path:
    """Wheels plus a requirements file pinning exactly them, for a --no-deps install."""
    folder.mkdir(parents=True, exist_ok=True)
    for wheel in files:
        installs.link_or_copy(wheel, folder / wheel.name)
    (folder / "requirements.txt").write_text("".join(f"{_pin(w)}\n" for w in sorted(files)))
    return folder


def _name(wheel: Path) -> str:
    return str(parse_wheel_filename(wheel.name)[0])


def _pin(wheel: Path) -> str:
    """ "name==version" of a wheel, exactly what it installs."""
    name, version, _, _ = parse_wheel_filename(wheel.name)
    return f"{name}=={version}"


def _pinned(constraints: Iterable[str]) -> list[str]:
    """The project names of "name==version" pins."""
    return [pin.split("==", 1)[0] for pin in constraints]


def _parent_ref(core: Recipe) -> str:
    """The local tag of a core's parent: the core's own, marked."""
    return f"{core.cache_ref}-parent"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _build_platform(group: Group) -> str | None:
    """The platform a build asks the daemon for; None builds as the daemon always has."""
    return group.platform if group.pinned_base else None


def _subject(group: Group, image: Image) -> str:
    """How progress lines name an image: with its platform when the plan names platforms."""
    return image.id if not group.pinned_base else f"{image.id} {group.platform}"


def _done(built: Built) -> Future[Built]:
    future: Future[Built] = Future()
    future.set_result(built)
    return future


def _on(group: Group, error: str) -> str:
    """An error naming the platform it happened on, when the image has several."""
    return f"{group.platform}: {error}" if group.pinned_base else error

"""Building one group of images: the cells that share a Prefect version and a Python.

A group resolves its packages once per requirement set (with the base image's own pip),
builds one core image, builds each extras variant on top of it, and smoke-tests every
planned image. Images the registry already holds with the same input fingerprint are
skipped before anything is resolved.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import docker
from packaging.utils import parse_wheel_filename

from . import docker_client, fingerprint, smoke, wheels
from .errors import PublisherError
from .matrix import Matrix
from .plan import Image
from .progress import Reporter

LOCAL_CACHE = "prefect-publisher/cache"
REVISION_LABEL = "org.opencontainers.image.revision"
VERSION_LABEL = "org.opencontainers.image.version"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What a build needs beyond the plan (a slice of the publish options)."""

    dockerfiles: Path
    index: wheels.IndexOptions
    base_image: str | None  # overrides the matrix's template
    force: bool
    wheel: Path | None  # a nightly's locally built prefect wheel
    revision: str | None  # a nightly's commit


@dataclass
class Outcome:
    """What happened to one planned image (filled in as the run goes)."""

    image: Image
    status: str = "planned"
    error: str = ""
    local_id: str = ""
    size: int = 0
    digest: str = ""
    seconds: float = 0.0
    bytes_uploaded: int = 0
    built: bool = False
    fingerprint: str = ""


@dataclass
class Group:
    version: str
    python: str
    images: list[Image] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return f"prefect {self.version} / Python {self.python}"


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """How to build one image: which Dockerfile, with which arguments and inputs."""

    dockerfile: str
    extras: tuple[str, ...]
    buildargs: dict[str, str]
    fingerprint: str

    @property
    def cache_ref(self) -> str:
        """Local tag named by the fingerprint: a later run on this machine reuses it."""
        return f"{LOCAL_CACHE}:{self.fingerprint.removeprefix('sha256:')[:32]}"


def groups_of(images: Iterable[Image]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for image in images:
        key = (image.prefect_version, image.python_version)
        groups.setdefault(key, Group(version=key[0], python=key[1])).images.append(image)
    return list(groups.values())


# Returns True when the registry already holds this image built from this recipe.
AlreadyPublished = Callable[[Image, Recipe], bool]


def build_group(
    client: docker.DockerClient,
    matrix: Matrix,
    group: Group,
    settings: Settings,
    outcomes: dict[str, Outcome],
    published: AlreadyPublished,
    reporter: Reporter,
) -> None:
    """Build and smoke-test a group; failures are recorded in ``outcomes``, not raised."""
    try:
        base = (settings.base_image or matrix.base_image).format(python=group.python)
        core, recipes = _recipes(client, group, base, settings)
        todo = [image for image in group.images if not published(image, recipes[image.id])]
        if not todo:
            return
        on_core = {r.fingerprint: r for r in (recipes[i.id] for i in todo) if r is not core}
        with tempfile.TemporaryDirectory(prefix="publisher-") as tmp:
            contexts: dict[str, Path] = {}
            labels: dict[str, dict[str, str]] = {}
            # Images already built here (by fingerprint) need no package resolution at all.
            needed = [core, *on_core.values()]
            if settings.force or not all(_built_here(client, r) for r in needed):
                _prepare(
                    client,
                    matrix,
                    group,
                    base,
                    core,
                    on_core,
                    settings,
                    Path(tmp),
                    contexts,
                    labels,
                    reporter,
                )
            core_seconds = _ensure_built(
                client,
                contexts.get(core.fingerprint),
                core,
                labels,
                group.subject + " core",
                settings,
                reporter,
            )
            # The core build is charged to the core image, or to the first image built on it.
            owner = next((i for i in todo if recipes[i.id] is core), todo[0])
            outcomes[owner.id].seconds += core_seconds
            for image in todo:
                _build_and_test(
                    client,
                    matrix,
                    image,
                    recipes[image.id],
                    core,
                    contexts,
                    labels,
                    settings,
                    outcomes[image.id],
                    reporter,
                )
    except PublisherError as exc:
        for image in group.images:
            if outcomes[image.id].status == "planned":
                fail(outcomes[image.id], exc, reporter)


def _built_here(client: docker.DockerClient, recipe: Recipe) -> bool:
    try:
        client.images.get(recipe.cache_ref)
        return True
    except docker.errors.ImageNotFound:
        return False


def _prepare(
    client: docker.DockerClient,
    matrix: Matrix,
    group: Group,
    base: str,
    core: Recipe,
    on_core: dict[str, Recipe],
    settings: Settings,
    work: Path,
    contexts: dict[str, Path],
    labels: dict[str, dict[str, str]],
    reporter: Reporter,
) -> None:
    """Resolve the group's packages and lay out one build context per recipe."""
    docker_client.ensure_image(client, base)
    core_wheels = _resolve(client, group, base, (), settings, work / "core", reporter)
    contexts[core.fingerprint] = _core_context(work, core_wheels, settings)
    labels[core.fingerprint] = _labels(matrix, group, settings, core_wheels)
    for fp, recipe in on_core.items():
        short = fp.removeprefix("sha256:")[:12]
        full_wheels = _resolve(client, group, base, recipe.extras, settings, work / short, reporter)
        contexts[fp] = _extras_context(work / f"ctx-{short}", core_wheels, full_wheels, settings)
        labels[fp] = _labels(matrix, group, settings, full_wheels)


def fail(outcome: Outcome, exc: Exception, reporter: Reporter) -> None:
    outcome.status = "failed"
    outcome.error = str(exc)
    reporter.step(outcome.image.id, f"FAILED: {exc}")


def _build_and_test(
    client: docker.DockerClient,
    matrix: Matrix,
    image: Image,
    recipe: Recipe,
    core: Recipe,
    contexts: dict[str, Path],
    labels: dict[str, dict[str, str]],
    settings: Settings,
    outcome: Outcome,
    reporter: Reporter,
) -> None:
    started = time.monotonic()
    try:
        if recipe is not core:
            _ensure_built(
                client,
                contexts.get(recipe.fingerprint),
                recipe,
                labels,
                image.id,
                settings,
                reporter,
            )
        local = client.images.get(recipe.cache_ref)
        outcome.local_id = str(local.id)
        outcome.size = int(local.attrs.get("Size", 0))
        outcome.fingerprint = recipe.fingerprint
        outcome.built = True
        reporter.step(image.id, "smoke-testing")
        result = smoke.check(
            client,
            outcome.local_id,
            python=image.python_version,
            prefect_version=image.prefect_version,
            extras_present=image.extras,
            extras_absent=_extras_elsewhere(matrix, image),
        )
        outcome.status = "tested"
        reporter.step(
            image.id,
            f"passed (prefect {result.prefect_version}, Python {result.python_version}, "
            f"{outcome.size / 1e6:.0f} MB)",
        )
    except PublisherError as exc:
        fail(outcome, exc, reporter)
    finally:
        outcome.seconds += time.monotonic() - started


def _recipes(
    client: docker.DockerClient, group: Group, base: str, settings: Settings
) -> tuple[Recipe, dict[str, Recipe]]:
    identity = docker_client.image_identity(client, base)
    core = _recipe(
        settings, group.version, "core.Dockerfile", (), {"BASE_IMAGE": base}, identity, None
    )
    by_extras: dict[tuple[str, ...], Recipe] = {(): core}
    for image in group.images:
        if image.extras not in by_extras:
            by_extras[image.extras] = _recipe(
                settings,
                group.version,
                "full.Dockerfile",
                image.extras,
                {"CORE_IMAGE": core.cache_ref},
                identity,
                core.fingerprint,
            )
    return core, {image.id: by_extras[image.extras] for image in group.images}


def _recipe(
    settings: Settings,
    version: str,
    dockerfile: str,
    extras: tuple[str, ...],
    buildargs: dict[str, str],
    base_identity: str,
    parent: str | None,
) -> Recipe:
    files: dict[str, bytes] = {}
    for name in (dockerfile, "entrypoint.sh"):
        try:
            files[name] = (settings.dockerfiles / name).read_bytes()
        except OSError as exc:
            raise PublisherError(f"{settings.dockerfiles / name}: {exc.strerror}") from None
    if settings.revision is not None:
        # A nightly's source is its commit: a new commit must change the fingerprint.
        files["source-revision"] = settings.revision.encode()
    # CORE_IMAGE is a local name derived from the parent fingerprint, which is included.
    stable = {k: v for k, v in buildargs.items() if k != "CORE_IMAGE"}
    # What gets installed is decided by the version and extras, not by a build argument.
    stable["PREFECT"] = f"prefect=={version}"
    stable["EXTRAS"] = ",".join(extras)
    return Recipe(
        dockerfile=dockerfile,
        extras=extras,
        buildargs=buildargs,
        fingerprint=fingerprint.of_inputs(
            files=files, buildargs=stable, base=base_identity, parent=parent
        ),
    )


def _resolve(
    client: docker.DockerClient,
    group: Group,
    base: str,
    extras: tuple[str, ...],
    settings: Settings,
    dest: Path,
    reporter: Reporter,
) -> list[Path]:
    name = f"prefect[{','.join(extras)}]" if extras else "prefect"
    if settings.wheel is not None:
        # A nightly names its wheel file: the index may hold a release of the same version.
        requirement = f"{name} @ file:///source/{settings.wheel.name}"
    else:
        requirement = f"{name}=={group.version}"
    reporter.step(group.subject, f"resolving {requirement}")
    found = wheels.download(
        client,
        base_image=base,
        requirements=[requirement],
        dest=dest,
        index=settings.index,
        local_wheel=settings.wheel,
    )
    reporter.step(group.subject, f"{requirement}: {len(found)} wheels")
    return found


def _core_context(work: Path, core_wheels: list[Path], settings: Settings) -> Path:
    context = work / "ctx-core"
    ours = [w for w in core_wheels if _name(w) == "prefect"]
    theirs = [w for w in core_wheels if _name(w) != "prefect"]
    _wheel_dir(context / "prefect", ours)
    _wheel_dir(context / "deps", theirs)
    for name in ("core.Dockerfile", "entrypoint.sh"):
        shutil.copy2(settings.dockerfiles / name, context / name)
    return context


def _extras_context(
    context: Path, core_wheels: list[Path], full_wheels: list[Path], settings: Settings
) -> Path:
    in_core = {w.name for w in core_wheels}
    _wheel_dir(context / "extras", [w for w in full_wheels if w.name not in in_core])
    shutil.copy2(settings.dockerfiles / "full.Dockerfile", context / "full.Dockerfile")
    return context


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


def _ensure_built(
    client: docker.DockerClient,
    context: Path | None,
    recipe: Recipe,
    labels: dict[str, dict[str, str]],
    subject: str,
    settings: Settings,
    reporter: Reporter,
) -> float:
    """Build unless this daemon already holds the recipe's image; return the seconds spent."""
    if not settings.force:
        try:
            client.images.get(recipe.cache_ref)
            reporter.step(subject, "already built on this machine")
            return 0.0
        except docker.errors.ImageNotFound:
            pass
    if context is None:
        raise PublisherError(f"{subject}: internal error: no build context was prepared")
    reporter.step(subject, f"building ({recipe.dockerfile})")
    started = time.monotonic()
    docker_client.build(
        client,
        context=context,
        dockerfile=recipe.dockerfile,
        buildargs=recipe.buildargs,
        labels={**labels[recipe.fingerprint], fingerprint.LABEL_FINGERPRINT: recipe.fingerprint},
        tag=recipe.cache_ref,
        on_line=lambda line: reporter.detail(subject, line),
    )
    seconds = time.monotonic() - started
    reporter.step(subject, f"built in {seconds:.1f}s")
    return seconds


def _extras_elsewhere(matrix: Matrix, image: Image) -> tuple[str, ...]:
    """Extras other variants install, which an image without extras must not carry."""
    if image.extras:
        return ()
    return tuple(sorted({e for v in matrix.variants for e in v.extras}))


def _labels(
    matrix: Matrix, group: Group, settings: Settings, resolved: list[Path]
) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": matrix.image,
        VERSION_LABEL: group.version,
        "org.opencontainers.image.created": datetime.now(timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "org.opencontainers.image.source": matrix.source_url,
        "io.prefect.python-version": group.python,
        fingerprint.LABEL_PACKAGES: fingerprint.of_packages(resolved),
    }
    revision = settings.revision or wheels.revision_of(resolved)
    if revision:
        labels[REVISION_LABEL] = revision
    return labels

"""Build, smoke-test and push a plan.

The order is what makes a release safe to interrupt:
1. every selected image is built (or found unchanged in the registry) and smoke-tested;
   if any fails, nothing is pushed;
2. every image's immutable tags are pushed and read back from the registry;
3. only then are rolling tags (latest*, core, master) re-pointed, by manifest copy, so a
   rolling tag never names an image that is not fully in the registry.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import docker

from . import docker_client, fingerprint, smoke, wheels
from .destination import Destination
from .errors import PublisherError, RegistryError
from .matrix import Matrix
from .plan import Image, Plan
from .progress import Reporter
from .registry import Credentials, RegistryClient

LOCAL_CACHE = "prefect-publisher/cache"
REVISION_LABEL = "org.opencontainers.image.revision"
CONTEXT_FILES = ("entrypoint.sh",)


@dataclass(frozen=True, kw_only=True)
class Options:
    destination: Destination | None  # None: build and test only
    credentials: Credentials | None = None
    index: wheels.IndexOptions = field(default_factory=wheels.IndexOptions)
    base_image: str | None = None  # overrides the matrix's template
    dockerfiles: Path
    dry_run: bool = False
    force: bool = False
    jobs: int = 2
    # Nightly builds install this locally built wheel instead of a release from the index.
    wheel: Path | None = None
    revision: str | None = None


@dataclass
class Outcome:
    """What happened to one planned image (mutable: filled in as the run goes)."""

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
    reported_version: str = ""


@dataclass
class _Group:
    """Images sharing a Prefect version and Python: one core build, one resolution."""

    version: str
    python: str
    images: list[Image] = field(default_factory=list)


def publish(matrix: Matrix, plan: Plan, options: Options, reporter: Reporter) -> list[Outcome]:
    outcomes = {image.id: Outcome(image=image) for image in plan.images}
    groups = _groups(plan)
    if options.dry_run:
        _describe(matrix, groups, options, reporter)
        for outcome in outcomes.values():
            outcome.status = "dry run"
        return list(outcomes.values())

    client = docker_client.connect()
    registry = _registry(options)
    if registry is not None:
        registry.ping()
        reporter.step("registry", f"{options.destination} answers")

    def work(group: _Group) -> None:
        local = docker_client.connect()
        try:
            _build_group(local, registry, matrix, group, options, outcomes, reporter)
        finally:
            local.close()

    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        for future in [pool.submit(work, group) for group in groups]:
            future.result()

    failed = [o for o in outcomes.values() if o.status == "failed"]
    if failed:
        for outcome in outcomes.values():
            if outcome.status != "failed":
                outcome.status = "not pushed"
        return list(outcomes.values())
    if registry is None or options.destination is None:
        _tag_locally(client, matrix.image, outcomes.values())
        return list(outcomes.values())

    auth = _auth(options.credentials)
    ordered = list(outcomes.values())
    for outcome in ordered:
        _push_immutable(client, registry, options.destination, outcome, auth, reporter)
    for outcome in ordered:
        _move_rolling(client, registry, options.destination, outcome, auth, reporter)
    client.close()
    return ordered


def _groups(plan: Plan) -> list[_Group]:
    groups: dict[tuple[str, str], _Group] = {}
    for image in plan.images:
        key = (image.prefect_version, image.python_version)
        groups.setdefault(key, _Group(version=key[0], python=key[1])).images.append(image)
    return list(groups.values())


def _registry(options: Options) -> RegistryClient | None:
    return None if options.destination is None else registry_client(options)


def registry_client(options: Options) -> RegistryClient:
    """A client for the destination, with the given credentials or the Docker config's."""
    assert options.destination is not None
    if options.credentials is not None:
        return RegistryClient(options.destination.host, credentials=options.credentials)
    return RegistryClient.from_docker_config(options.destination.host)


def _auth(credentials: Credentials | None) -> dict[str, str] | None:
    if credentials is None:
        return None
    return {"username": credentials.username, "password": credentials.password}


@dataclass(frozen=True, kw_only=True)
class _Recipe:
    """How to build one image of a group."""

    dockerfile: str
    requirement: str
    buildargs: dict[str, str]
    fingerprint: str


def _build_group(
    client: docker.DockerClient,
    registry: RegistryClient | None,
    matrix: Matrix,
    group: _Group,
    options: Options,
    outcomes: dict[str, Outcome],
    reporter: Reporter,
) -> None:
    subject = f"prefect {group.version} / Python {group.python}"
    started = time.monotonic()
    try:
        base = (options.base_image or matrix.base_image).format(python=group.python)
        # A nightly group's version is the one its locally built wheel carries.
        requirement = f"prefect=={group.version}"
        base_identity = docker_client.image_identity(client, base)
        core = _recipe(options, "core", requirement, {"BASE_IMAGE": base}, base_identity, None)
        recipes = {
            image.id: core
            if not image.extras
            else _recipe(
                options,
                "full",
                _with_extras(requirement, image.extras),
                {"CORE_IMAGE": _cache_ref(core.fingerprint)},
                base_identity,
                core.fingerprint,
            )
            for image in group.images
        }
        todo = [
            image
            for image in group.images
            if not _published(registry, options, image, recipes[image.id], outcomes, reporter)
        ]
        if not todo:
            return
        with tempfile.TemporaryDirectory(prefix="publisher-") as tmp:
            context = Path(tmp)
            reporter.step(
                subject, f"resolving {wheels.redact(requirement)} for Python {group.python}"
            )
            docker_client.ensure_image(client, base)
            resolved = wheels.download(
                client,
                base_image=base,
                requirements=[
                    _source_requirement(_with_extras(requirement, _all_extras(todo)), options)
                ],
                dest=context / "wheels",
                index=options.index,
                local_wheel=options.wheel,
            )
            reporter.step(subject, f"resolved {len(resolved)} wheels")
            for name in CONTEXT_FILES:
                shutil.copy2(options.dockerfiles / name, context / name)
            labels = _labels(matrix, group, options, resolved)
            _ensure_built(client, context, core, base, labels, subject + " core", options, reporter)
            for image in todo:
                outcome = outcomes[image.id]
                step_started = time.monotonic()
                try:
                    recipe = recipes[image.id]
                    if recipe is not core:
                        _ensure_built(
                            client, context, recipe, base, labels, image.id, options, reporter
                        )
                    outcome.local_id = str(client.images.get(_cache_ref(recipe.fingerprint)).id)
                    outcome.size = int(client.images.get(outcome.local_id).attrs.get("Size", 0))
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
                    outcome.reported_version = result.prefect_version
                    outcome.status = "tested"
                    reporter.step(
                        image.id,
                        f"passed (prefect {result.prefect_version}, Python "
                        f"{result.python_version}, {outcome.size / 1e6:.0f} MB)",
                    )
                except PublisherError as exc:
                    _fail(outcome, exc, reporter)
                finally:
                    outcome.seconds += time.monotonic() - step_started
    except PublisherError as exc:
        for image in group.images:
            if outcomes[image.id].status == "planned":
                _fail(outcomes[image.id], exc, reporter)
    finally:
        elapsed = time.monotonic() - started
        for image in group.images:
            if outcomes[image.id].seconds == 0:
                outcomes[image.id].seconds = elapsed


def _fail(outcome: Outcome, exc: Exception, reporter: Reporter) -> None:
    outcome.status = "failed"
    outcome.error = str(exc)
    reporter.step(outcome.image.id, f"FAILED: {exc}")


def _published(
    registry: RegistryClient | None,
    options: Options,
    image: Image,
    recipe: _Recipe,
    outcomes: dict[str, Outcome],
    reporter: Reporter,
) -> bool:
    """True when the registry already holds this image built from these inputs."""
    if registry is None or options.destination is None or options.force:
        return False
    anchor = _anchor(image)
    repo = options.destination.path(image.repository)
    labels = registry.labels(repo, anchor) if registry.digest(repo, anchor) else {}
    if labels.get(fingerprint.LABEL_FINGERPRINT) != recipe.fingerprint:
        return False
    outcome = outcomes[image.id]
    outcome.status = "unchanged"
    outcome.fingerprint = recipe.fingerprint
    outcome.reported_version = labels.get("org.opencontainers.image.version", "")
    reporter.step(image.id, f"unchanged in the registry ({anchor}); not rebuilding")
    return True


def _recipe(
    options: Options,
    variant_kind: str,
    requirement: str,
    buildargs: dict[str, str],
    base_identity: str,
    parent: str | None,
) -> _Recipe:
    dockerfile = f"{variant_kind}.Dockerfile"
    files: dict[str, bytes] = {}
    for name in (dockerfile, *CONTEXT_FILES):
        try:
            files[name] = (options.dockerfiles / name).read_bytes()
        except OSError as exc:
            raise PublisherError(f"{options.dockerfiles / name}: {exc.strerror}") from None
    if options.revision is not None:
        # A nightly's source is its commit: a new commit must change the fingerprint.
        files["source-revision"] = options.revision.encode()
    args = {**buildargs, "PREFECT_REQUIREMENT": requirement}
    # The local cache tag of the core image is derived from the core fingerprint, which
    # `parent` already covers; leaving it out keeps the fingerprint free of local names.
    stable_args = {k: v for k, v in args.items() if k != "CORE_IMAGE"}
    return _Recipe(
        dockerfile=dockerfile,
        requirement=requirement,
        buildargs=args,
        fingerprint=fingerprint.of_inputs(
            files=files, buildargs=stable_args, base=base_identity, parent=parent
        ),
    )


def _ensure_built(
    client: docker.DockerClient,
    context: Path,
    recipe: _Recipe,
    base: str,
    labels: dict[str, str],
    subject: str,
    options: Options,
    reporter: Reporter,
) -> None:
    """Build unless this daemon already holds an image with the recipe's fingerprint."""
    ref = _cache_ref(recipe.fingerprint)
    if not options.force:
        try:
            client.images.get(ref)
            reporter.step(subject, "already built on this machine")
            return
        except docker.errors.ImageNotFound:
            pass
    if recipe.dockerfile == "core.Dockerfile":
        docker_client.ensure_image(client, base)
    shutil.copy2(options.dockerfiles / recipe.dockerfile, context / recipe.dockerfile)
    reporter.step(subject, f"building ({recipe.dockerfile})")
    started = time.monotonic()
    docker_client.build(
        client,
        context=context,
        dockerfile=recipe.dockerfile,
        buildargs=recipe.buildargs,
        labels={**labels, fingerprint.LABEL_FINGERPRINT: recipe.fingerprint},
        tag=ref,
        on_line=lambda line: reporter.detail(subject, line),
    )
    reporter.step(subject, f"built in {time.monotonic() - started:.1f}s")


def _source_requirement(requirement: str, options: Options) -> str:
    """What the host resolves: a nightly names its wheel file directly, because the index
    may hold a release with the very same version number."""
    if options.wheel is None:
        return requirement
    name = requirement.partition("==")[0]
    return f"{name} @ file:///source/{options.wheel.name}"


def _with_extras(requirement: str, extras: tuple[str, ...] | list[str]) -> str:
    if not extras:
        return requirement
    name, sep, rest = requirement.partition("==")
    return f"{name}[{','.join(sorted(extras))}]{sep}{rest}"


def _all_extras(images: list[Image]) -> list[str]:
    return sorted({extra for image in images for extra in image.extras})


def _extras_elsewhere(matrix: Matrix, image: Image) -> tuple[str, ...]:
    """Extras other variants install, which an image without them must not carry."""
    if image.extras:
        return ()
    return tuple(sorted({e for v in matrix.variants for e in v.extras} - set(image.extras)))


def _labels(
    matrix: Matrix, group: _Group, options: Options, resolved: list[Path]
) -> dict[str, str]:
    labels = {
        "org.opencontainers.image.title": matrix.image,
        "org.opencontainers.image.version": group.version,
        "org.opencontainers.image.created": datetime.now(timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
        "org.opencontainers.image.source": matrix.source_url,
        "io.prefect.python-version": group.python,
        fingerprint.LABEL_PACKAGES: fingerprint.of_packages(resolved),
    }
    revision = options.revision or wheels.revision_of(resolved)
    if revision:
        labels[REVISION_LABEL] = revision
    return labels


def _cache_ref(fp: str) -> str:
    return f"{LOCAL_CACHE}:{fp.removeprefix('sha256:')[:32]}"


def _anchor(image: Image) -> str:
    """The tag an image is pushed under first: its first immutable tag."""
    return image.immutable_tags[0] if image.immutable_tags else image.tags[0].name


def _tag_locally(client: docker.DockerClient, repository: str, outcomes: Iterable[Outcome]) -> None:
    for outcome in outcomes:
        if outcome.local_id:
            image = client.images.get(outcome.local_id)
            for tag in outcome.image.tags:
                image.tag(repository, tag.name)
            outcome.status = "built"


def _push_immutable(
    client: docker.DockerClient,
    registry: RegistryClient,
    destination: Destination,
    outcome: Outcome,
    auth: dict[str, str] | None,
    reporter: Reporter,
) -> None:
    image = outcome.image
    repo = destination.path(image.repository)
    reference = destination.reference(image.repository)
    anchor = _anchor(image)
    started = time.monotonic()
    if outcome.status == "unchanged":
        outcome.digest = _verified(registry, repo, anchor, None)
    else:
        local = client.images.get(outcome.local_id)
        local.tag(reference, anchor)
        reporter.step(image.id, f"pushing {reference}:{anchor}")
        result = docker_client.push(client, reference, anchor, auth)
        outcome.digest = _verified(registry, repo, anchor, result.digest)
        outcome.bytes_uploaded += result.bytes_uploaded
        outcome.status = "pushed"
    for tag in image.immutable_tags[1:]:
        registry.copy_tag(repo, outcome.digest, tag)
        _verified(registry, repo, tag, outcome.digest)
    outcome.seconds += time.monotonic() - started
    if image.immutable_tags:
        reporter.step(
            image.id, f"immutable tags in the registry: {', '.join(image.immutable_tags)}"
        )


def _move_rolling(
    client: docker.DockerClient,
    registry: RegistryClient,
    destination: Destination,
    outcome: Outcome,
    auth: dict[str, str] | None,
    reporter: Reporter,
) -> None:
    image = outcome.image
    repo = destination.path(image.repository)
    for tag in image.rolling_tags:
        before = registry.digest(repo, tag)
        if before == outcome.digest:
            continue
        registry.copy_tag(repo, outcome.digest, tag)
        _verified(registry, repo, tag, outcome.digest)
        reporter.step(image.id, f"moved {tag} -> {outcome.digest[:19]}")


def _verified(registry: RegistryClient, repo: str, tag: str, expected: str | None) -> str:
    actual = registry.digest(repo, tag)
    if actual is None:
        raise RegistryError(f"{repo}:{tag} is not in the registry after pushing it")
    if expected is not None and actual != expected:
        raise RegistryError(f"{repo}:{tag} has digest {actual}, expected {expected}")
    return actual


def _describe(matrix: Matrix, groups: list[_Group], options: Options, reporter: Reporter) -> None:
    where = str(options.destination) if options.destination else "the local daemon only"
    for group in groups:
        base = (options.base_image or matrix.base_image).format(python=group.python)
        subject = f"prefect {group.version} / Python {group.python}"
        reporter.step(subject, f"would build core FROM {base}")
        for image in group.images:
            kind = "core image" if not image.extras else f"on core with [{', '.join(image.extras)}]"
            reporter.step(
                image.id,
                f"would build {kind}, smoke-test, push to {where}: "
                f"{', '.join(image.immutable_tags) or '-'}; then move "
                f"{', '.join(image.rolling_tags) or 'no rolling tag'}",
            )

"""Build, smoke-test and push a plan.

The order is what makes a release safe to interrupt and to repeat:
1. every selected image is built (or found unchanged in the registry) and smoke-tested;
   if any fails, nothing is pushed;
2. every image's immutable tags are pushed and read back from the registry;
3. only then are rolling tags (latest*, core, master) re-pointed, by manifest copy, so a
   rolling tag never names an image that is not wholly in the registry.
A run killed anywhere is completed by running it again: what reached the registry is
recognised by its fingerprint and not rebuilt.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker

from . import docker_client, fingerprint, wheels
from .build import (
    REVISION_LABEL,
    Group,
    Outcome,
    Recipe,
    Settings,
    build_group,
    groups_of,
)
from .destination import Destination
from .errors import RegistryError
from .matrix import Matrix
from .plan import Image, Plan
from .progress import Reporter
from .registry import Credentials, RegistryClient

__all__ = ["REVISION_LABEL", "Options", "Outcome", "publish", "registry_client"]


@dataclass(frozen=True, kw_only=True)
class Options:
    destination: Destination | None  # None: build and test into the local daemon only
    credentials: Credentials | None = None
    index: wheels.IndexOptions = field(default_factory=wheels.IndexOptions)
    base_image: str | None = None  # overrides the matrix's template
    dockerfiles: Path
    dry_run: bool = False
    force: bool = False
    jobs: int = 2
    wheel: Path | None = None  # a nightly's locally built prefect wheel
    revision: str | None = None  # a nightly's commit

    @property
    def settings(self) -> Settings:
        return Settings(
            dockerfiles=self.dockerfiles,
            index=self.index,
            base_image=self.base_image,
            force=self.force,
            wheel=self.wheel,
            revision=self.revision,
        )


def publish(matrix: Matrix, plan: Plan, options: Options, reporter: Reporter) -> list[Outcome]:
    outcomes = {image.id: Outcome(image=image) for image in plan.images}
    groups = groups_of(plan.images)
    if options.dry_run:
        _describe(matrix, groups, options, reporter)
        for outcome in outcomes.values():
            outcome.status = "dry run"
        return list(outcomes.values())

    client = docker_client.connect()
    registry = None if options.destination is None else registry_client(options)
    if registry is not None:
        registry.ping()  # before any build: an unreachable registry wastes no build time
        reporter.step("registry", f"{options.destination} answers")

    def published(image: Image, recipe: Recipe) -> bool:
        return _already_published(registry, options, image, recipe, outcomes, reporter)

    def lane(lane_groups: list[Group]) -> None:
        local = docker_client.connect()
        try:
            for group in lane_groups:
                build_group(local, matrix, group, options.settings, outcomes, published, reporter)
        finally:
            local.close()

    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        for future in [pool.submit(lane, lane_groups) for lane_groups in _lanes(groups)]:
            future.result()

    ordered = list(outcomes.values())
    if any(o.status == "failed" for o in ordered):
        for outcome in ordered:
            if outcome.status == "tested":
                outcome.status = "not pushed"
        return ordered
    if registry is None or options.destination is None:
        _tag_locally(client, matrix.image, ordered)
        return ordered

    auth = None
    if options.credentials is not None:
        auth = {"username": options.credentials.username, "password": options.credentials.password}
    for outcome in ordered:
        _push_immutable(client, registry, options.destination, outcome, auth, reporter)
    for outcome in ordered:
        _move_rolling(registry, options.destination, outcome, reporter)
    client.close()
    return ordered


def registry_client(options: Options) -> RegistryClient:
    """A client for the destination, with the given credentials or the Docker config's."""
    if options.destination is None:
        raise ValueError("no destination")
    if options.credentials is not None:
        return RegistryClient(options.destination.host, credentials=options.credentials)
    return RegistryClient.from_docker_config(options.destination.host)


def _lanes(groups: list[Group]) -> list[list[Group]]:
    """One lane per Python, versions in order within it.

    Groups of one Python run one after another so that a later version finds the earlier
    one's dependency layer in the builder cache (and shares it); lanes run in parallel.
    """
    lanes: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        lanes[group.python].append(group)
    return list(lanes.values())


def _already_published(
    registry: RegistryClient | None,
    options: Options,
    image: Image,
    recipe: Recipe,
    outcomes: dict[str, Outcome],
    reporter: Reporter,
) -> bool:
    """True when the registry already holds this image built from these inputs.

    One manifest HEAD, and for a present tag one manifest and one config read: no
    build, no package resolution, no layer transfer.
    """
    if registry is None or options.destination is None or options.force:
        return False
    anchor = _anchor(image)
    repo = options.destination.path(image.repository)
    digest = registry.digest(repo, anchor)
    if digest is None:
        return False
    if registry.labels(repo, anchor).get(fingerprint.LABEL_FINGERPRINT) != recipe.fingerprint:
        return False
    outcome = outcomes[image.id]
    outcome.status = "unchanged"
    outcome.digest = digest  # already read back from the registry: no second HEAD later
    outcome.fingerprint = recipe.fingerprint
    reporter.step(image.id, f"unchanged in the registry ({anchor}); not rebuilding")
    return True


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
    if outcome.status != "unchanged":
        client.images.get(outcome.local_id).tag(reference, anchor)
        reporter.step(image.id, f"pushing {reference}:{anchor}")
        result = docker_client.push(client, reference, anchor, auth)
        outcome.digest = _verified(registry, repo, anchor, result.digest)
        outcome.bytes_uploaded += result.bytes_uploaded
        outcome.status = "pushed"
    copied = [
        tag for tag in image.immutable_tags[1:] if registry.digest(repo, tag) != outcome.digest
    ]
    for tag in copied:
        registry.copy_tag(repo, outcome.digest, tag)
        _verified(registry, repo, tag, outcome.digest)
    outcome.seconds += time.monotonic() - started
    if outcome.status == "pushed" or copied:
        reporter.step(image.id, f"in the registry as {', '.join(image.immutable_tags)}")


def _move_rolling(
    registry: RegistryClient, destination: Destination, outcome: Outcome, reporter: Reporter
) -> None:
    repo = destination.path(outcome.image.repository)
    for tag in outcome.image.rolling_tags:
        if registry.digest(repo, tag) == outcome.digest:
            continue
        registry.copy_tag(repo, outcome.digest, tag)
        _verified(registry, repo, tag, outcome.digest)
        reporter.step(outcome.image.id, f"moved {tag} -> {outcome.digest[:19]}")


def _verified(registry: RegistryClient, repo: str, tag: str, expected: str | None) -> str:
    actual = registry.digest(repo, tag)
    if actual is None:
        raise RegistryError(f"{repo}:{tag} is not in the registry after pushing it")
    if expected is not None and actual != expected:
        raise RegistryError(f"{repo}:{tag} has digest {actual}, expected {expected}")
    return actual


def _describe(matrix: Matrix, groups: list[Group], options: Options, reporter: Reporter) -> None:
    where = str(options.destination) if options.destination else "the local daemon only"
    for group in groups:
        base = (options.base_image or matrix.base_image).format(python=group.python)
        reporter.step(group.subject, f"would resolve and build core FROM {base}")
        for image in group.images:
            kind = "the core image" if not image.extras else f"core + [{', '.join(image.extras)}]"
            rolling = ", ".join(image.rolling_tags) or "no rolling tag"
            reporter.step(
                image.id,
                f"would build {kind}, smoke-test, push {', '.join(image.immutable_tags) or '-'} "
                f"to {where}, then move {rolling}",
            )

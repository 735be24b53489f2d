"""Publishing a plan, in one direction:

    plan -> what the registry holds -> work -> build and test -> push immutable -> move rolling

1. One survey of the destination (a manifest HEAD per planned tag, in parallel) says which
   images are published. A published image is never rebuilt and its immutable tags never
   move (no-clobber); only ``--replace`` rebuilds one and moves them.
2. The images to build are built and smoke-tested; each one is uploaded under the
   staging tag as soon as it is built, while it is tested and the others build
   (upload.py). If any fails, the uploads stop and no release tag is written.
3. Each new image's immutable tags are written by manifest copy of what was uploaded
   (a multi-platform image: an index of its platform images), and every tag is read
   back and compared by digest.
4. Only then are rolling tags re-pointed, and never to an older release than the one
   they name now (changes.rolling_action).
A run killed anywhere is completed by running it again: what reached the registry is
published, so it is neither rebuilt nor pushed again.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from . import labels
from . import plan as planning
from .assemble import Assemblies
from .build import Built, Group, Settings, groups_of
from .changes import Action, Holdings, Work, immutable_action, published_digest, rolling_action
from .changes import work_list as make_work_list
from .destination import Destination, open_registry
from .engine import Engine, Engines, docker_engine
from .errors import PublisherError, RegistryError, SelectionError
from .installs import Installs
from .matrix import Matrix
from .outcome import Outcome, Status
from .plan import Image, Plan
from .platforms import DEFAULT_PLATFORM
from .progress import Reporter
from .registry import Credentials
from .staging import staging_tag
from .upload import Uploads

SURVEY_WORKERS = 8


@dataclass(frozen=True, kw_only=True)
class Options:
    build: Settings
    destination: Destination | None = None  # None: build and test into the local daemon
    credentials: Credentials | None = None
    jobs: int = 2  # Python lanes built at once
    replace: tuple[str, ...] = ()  # globs of published images to rebuild and move
    allow_downgrade: bool = False
    dry_run: bool = False
    # A shard on one CI runner: build only these platforms (empty: all), and leave rolling
    # tags, and the index of an image other shards build platforms of, to `promote`.
    platforms: tuple[str, ...] = ()
    rolling: bool = True

    def builds(self, image: Image) -> tuple[str, ...]:
        """The platforms of ``image`` this run builds, in the image's order."""
        if not self.platforms:
            return image.platforms
        return tuple(p for p in image.platforms if p in self.platforms)

    def completes(self, image: Image) -> bool:
        """Whether this run builds every platform of ``image`` (so it writes its tags)."""
        return self.builds(image) == image.platforms

    @property
    def auth(self) -> dict[str, str] | None:
        if self.credentials is None:
            return None
        return {"username": self.credentials.username, "password": self.credentials.password}


class Registry(Protocol):
    """What publishing needs of a registry (RegistryClient, or a fake in unit tests)."""

    def digest(self, repo: str, ref: str) -> str | None: ...

    def labels(self, repo: str, ref: str) -> dict[str, str]: ...

    def copy_tag(self, repo: str, source_ref: str, tag: str) -> str: ...

    def platform_images(self, repo: str, ref: str) -> dict[str, str] | None: ...

    def put_index(self, repo: str, tag: str, images: Sequence[tuple[str, str]]) -> str: ...


def survey(registry: Registry, repo: str, tags: Iterable[str]) -> Holdings:
    """What each tag names now: one manifest HEAD per tag, a few at a time.

    A HEAD does not count against Docker Hub's pull limits; a manifest GET does.
    """
    names = list(dict.fromkeys(tags))
    if not names:
        return Holdings(digests={})
    with ThreadPoolExecutor(max_workers=min(SURVEY_WORKERS, len(names))) as pool:
        found = list(pool.map(lambda tag: registry.digest(repo, tag), names))
    return Holdings(digests=dict(zip(names, found, strict=True)))


def version_of(registry: Registry, repo: str, digest: str) -> str | None:
    """The Prefect version an image in the registry says it holds (one manifest GET)."""
    return registry.labels(repo, digest).get(labels.VERSION)


CoreCell = tuple[str, str, str, str]


def core_cell(image: Image) -> CoreCell:
    """What images must share to share a core (as groups_of groups them): version, Python,
    base image and package. A prefect-client image is no core for prefect[kubernetes]."""
    return (image.prefect_version, image.python_version, image.base_image, image.package)


def core_cells(matrix: Matrix, the_plan: Plan) -> dict[CoreCell, Image]:
    """The planned core image (no extras) of each release cell, whether selected or not:
    a group to build can be built on it when it is published."""
    if any(image.nightly for image in the_plan.images):
        return {}
    return {core_cell(image): image for image in planning.plan(matrix).images if not image.extras}


@dataclass
class Publication:
    """One run: the registry and engine factory it works with, and what it has found."""

    matrix: Matrix
    options: Options
    reporter: Reporter
    registry: Registry | None
    engines: Engines
    notes: list[str] = field(default_factory=list)
    # Called once every lane has built its last image, while smoke tests may still run:
    # what only the builds needed can go then instead of at the end of the run.
    built_all: Callable[[], None] | None = None

    def run(self, the_plan: Plan) -> list[Outcome]:
        if self.options.platforms:
            the_plan = self.shard(the_plan)
        outcomes = {image.id: Outcome(image=image) for image in the_plan.images}
        cores = core_cells(self.matrix, the_plan)
        holdings = self.holdings(the_plan, cores)
        work = make_work_list(the_plan, holdings, self.options.replace)
        for item in work:
            if not item.build:
                outcome = outcomes[item.image.id]
                outcome.advance(Status.PUBLISHED)
                outcome.digest = item.published or ""
                self.reporter.step(item.image.id, "published; not rebuilding")
        to_build = [item for item in work if item.build]
        with ExitStack() as stack:
            uploads = self.uploads(stack) if to_build else None
            by_image: dict[str, list[Built]] = defaultdict(list)
            for built in self.build(self.groups(to_build, holdings, cores), uploads):
                by_image[built.image.id].append(built)
            for image_id, builts in by_image.items():
                _record(outcomes[image_id], builts, self.options.builds(outcomes[image_id].image))
            ordered = list(outcomes.values())
            if any(o.failed for o in ordered):
                for outcome in ordered:
                    if outcome.status is Status.TESTED:
                        outcome.advance(Status.NOT_PUSHED)
                return ordered
            if uploads is not None:
                for (image_id, platform), digest in uploads.digests().items():
                    outcomes[image_id].uploaded[platform] = digest
        if self.registry is None or self.options.destination is None:
            self.tag_locally([o for o in ordered if o.status is Status.TESTED])
            return ordered
        self.push_immutable(work, outcomes, holdings)
        if self.options.rolling:
            for item in work:
                self.move_rolling(outcomes[item.image.id], holdings)
        return ordered

    def shard(self, the_plan: Plan) -> Plan:
        """The images with a platform this shard builds; the others are another's."""
        kept = tuple(image for image in the_plan.images if self.options.builds(image))
        if not kept:
            raise SelectionError(
                f"no selected image is planned for {', '.join(self.options.platforms)}"
            )
        for image in the_plan.images:
            if image not in kept:
                self.reporter.step(image.id, f"not for {', '.join(self.options.platforms)}")
        return Plan(images=kept)

    def promote(self, the_plan: Plan) -> list[Outcome]:
        """Registry only: write the index of every image whose platform images the shards
        staged, add aliases, then move rolling tags. If any planned image is neither
        published nor wholly staged, nothing is written (IncompleteRelease)."""
        assert self.registry is not None and self.options.destination is not None
        repo = self.options.destination.path(self.matrix.image)
        outcomes = {image.id: Outcome(image=image) for image in the_plan.images}
        holdings = self.holdings(the_plan, {})
        work = make_work_list(the_plan, holdings)
        waiting = [item.image for item in work if item.published is None]
        staged = survey(
            self.registry, repo, [t for image in waiting for t in _staging_tags(image).values()]
        )
        missing = []
        for image in waiting:
            absent = [p for p, tag in _staging_tags(image).items() if staged.of(tag) is None]
            if image.platforms == (DEFAULT_PLATFORM,):
                missing.append(f"{image.id}: not in the registry")
            elif absent:
                missing.append(f"{image.id}: no {', '.join(absent)} image staged")
        if missing:
            raise IncompleteRelease(missing, total=len(the_plan.images))
        for item in work:
            outcome = outcomes[item.image.id]
            if item.published is not None:
                outcome.advance(Status.PUBLISHED)
                outcome.digest = item.published
                self.add_aliases(item, outcome, holdings, skip=())
                continue
            outcome.advance(Status.STAGED)
            image = item.image
            children = [(p, staged.of(tag) or "") for p, tag in _staging_tags(image).items()]
            anchor = _anchor(image)
            outcome.digest = self.write_index(image, anchor, children)
            outcome.advance(Status.PUSHED)
            self.add_aliases(item, outcome, holdings, skip=(anchor,))
            self.reporter.step(image.id, f"in the registry as {', '.join(image.immutable_tags)}")
        for item in work:
            self.move_rolling(outcomes[item.image.id], holdings)
        return list(outcomes.values())

    def holdings(self, the_plan: Plan, cores: dict[CoreCell, Image]) -> Holdings:
        if self.registry is None or self.options.destination is None:
            return Holdings(digests={})
        repo = self.options.destination.path(self.matrix.image)
        wanted = {core_cell(i) for i in the_plan.images}
        extra = [t for key, core in cores.items() if key in wanted for t in core.immutable_tags]
        tags = [t.name for image in the_plan.images for t in image.tags] + extra
        started = time.monotonic()
        found = survey(self.registry, repo, tags)
        present = sum(d is not None for d in found.digests.values())
        self.reporter.step(
            "registry",
            f"{self.options.destination}: {present} of {len(found.digests)} tags exist "
            f"({time.monotonic() - started:.1f}s)",
        )
        return found

    def groups(
        self, work: list[Work], holdings: Holdings, cores: dict[CoreCell, Image]
    ) -> list[Group]:
        building = {item.image.id for item in work}
        groups = []
        for group in groups_of(item.image for item in work):
            if group.platform not in self.options.builds(group.images[0]):
                continue  # another shard's
            replaces = {
                i.image.id: i.published or "" for i in work if i.replace and i.image in group.images
            }
            core = cores.get(core_cell(group.images[0]))
            published = None
            if core is not None and core.id not in building and not replaces:
                published = published_digest(core, holdings)
            reference = None
            if core is not None and published is not None and self.options.destination:
                published = self.platform_image(core, published, group)
            if core is not None and published is not None and self.options.destination:
                reference = f"{self.options.destination.reference(core.repository)}@{published}"
            groups.append(replace(group, published_core=reference, replaces=replaces))
        return groups

    def platform_image(self, core: Image, published: str, group: Group) -> str | None:
        """The released core's image for the group's platform: ``published`` itself for a
        single-platform plan, else the one its index lists (None: build the core here)."""
        if not group.pinned_base:
            return published
        assert self.registry is not None and self.options.destination is not None
        images = self.registry.platform_images(
            self.options.destination.path(core.repository), published
        )
        return (images or {}).get(group.platform)

    def uploads(self, stack: ExitStack) -> Uploads | None:
        """The background uploader of this run's images, when it has a registry."""
        if self.registry is None or self.options.destination is None:
            return None
        destination = self.options.destination
        return stack.enter_context(
            Uploads(
                self.engines,
                registry=self.registry,
                repo=destination.path(self.matrix.image),
                reference=destination.reference(self.matrix.image),
                reporter=self.reporter,
            )
        )

    def build(self, groups: list[Group], uploads: Uploads | None = None) -> list[Built]:
        """Build the groups, a lane per Python. Each image is handed to ``uploads`` as
        soon as it is built, so that its upload overlaps its smoke test: the upload only
        stages it, and its release tags wait for every test. The first failure stops the
        uploads."""
        if not groups:
            return []

        def stage(built: Built) -> None:
            if uploads is not None:
                uploads.submit(_subject(built), (built.image.id, built.platform), built.local_id)

        def stop_if_failed(check: Future[Built]) -> None:
            if uploads is not None and (check.exception() is not None or not check.result().ok):
                uploads.stop()

        lanes = _lanes(groups)
        building = [len(lanes)]  # lanes still building
        lock = threading.Lock()

        def lane_built() -> None:
            with lock:
                building[0] -= 1
                last = building[0] == 0
            if last and self.built_all is not None:
                self.built_all()

        def lane(lane_groups: list[Group]) -> list[Built]:
            # A lane builds its next group while the last one's smoke tests run, having
            # prepared its packages while the last one built; a failed test stops the
            # uploads as soon as it is in.
            with self.engines() as engine:
                checks = []
                following: list[Group | None] = [*lane_groups[1:], None]
                for group, then in zip(lane_groups, following, strict=True):
                    for check in engine.start(group, stage, then=then):
                        check.add_done_callback(stop_if_failed)
                        checks.append(check)
                lane_built()
                return [check.result() for check in checks]

        with ThreadPoolExecutor(max_workers=max(1, self.options.jobs)) as pool:
            futures = [pool.submit(lane, groups) for groups in lanes]
            return [built for future in futures for built in future.result()]

    def tag_locally(self, outcomes: list[Outcome]) -> None:
        if not outcomes:
            return
        with self.engines() as engine:
            for outcome in outcomes:
                for tag in outcome.image.tags:
                    engine.tag(outcome.local_id, self.matrix.image, tag.name)
                outcome.advance(Status.BUILT)
                if len(outcome.parts) > 1:
                    # A local tag holds one image; the index exists only in a registry.
                    first = outcome.image.platforms[0]
                    self.note(
                        outcome.image,
                        f"tagged its {first} image locally; all {len(outcome.parts)} "
                        "platforms were built and tested (--registry publishes the index)",
                    )

    def push_immutable(
        self, work: list[Work], outcomes: dict[str, Outcome], holdings: Holdings
    ) -> None:
        for item in work:
            outcome = outcomes[item.image.id]
            if outcome.status is Status.TESTED:
                self.release_new(item, outcome, holdings)
            elif outcome.status is Status.PUBLISHED:
                self.add_aliases(item, outcome, holdings, skip=())

    def release_new(self, item: Work, outcome: Outcome, holdings: Holdings) -> None:
        """Give an uploaded image its immutable tags (a shard: its staging tags) by
        manifest copy, each read back."""
        assert self.registry is not None and self.options.destination is not None
        image = item.image
        repo = self.options.destination.path(image.repository)
        anchor = _anchor(image)
        uploaded = outcome.uploaded
        if not self.options.completes(image):
            for platform in self.options.builds(image):
                stage = staging_tag(anchor, platform)
                self.registry.copy_tag(repo, uploaded[platform], stage)
                _verified(self.registry, repo, stage, uploaded[platform])
            outcome.advance(Status.STAGED)
            self.reporter.step(image.id, "staged; `publisher promote` writes its tags")
            return
        if outcome.parts:
            children = [(platform, uploaded[platform]) for platform in image.platforms]
            outcome.digest = self.write_index(image, anchor, children)
        else:
            self.registry.copy_tag(repo, uploaded[DEFAULT_PLATFORM], anchor)
            outcome.digest = _verified(self.registry, repo, anchor, uploaded[DEFAULT_PLATFORM])
        outcome.advance(Status.REPLACED if item.replace else Status.PUSHED)
        self.add_aliases(item, outcome, holdings, skip=(anchor,))
        if item.replace:
            for tag in image.immutable_tags:
                old = holdings.of(tag)
                if old is not None and old != outcome.digest:
                    self.note(image, f"replaced {tag}: {old} -> {outcome.digest}")
        self.reporter.step(image.id, f"in the registry as {', '.join(image.immutable_tags)}")

    def write_index(self, image: Image, anchor: str, children: list[tuple[str, str]]) -> str:
        """The index of every platform image under ``anchor``, read back: the release tag
        exists only once every platform is in."""
        assert self.registry is not None and self.options.destination is not None
        repo = self.options.destination.path(image.repository)
        self.reporter.step(image.id, f"writing the index of {', '.join(image.platforms)}")
        index = self.registry.put_index(repo, anchor, children)
        digest = _verified(self.registry, repo, anchor, index)
        listed = self.registry.platform_images(repo, anchor) or {}
        if list(listed) != list(image.platforms):
            raise RegistryError(
                f"{repo}:{anchor} lists {', '.join(listed) or 'no platform'}, "
                f"expected {', '.join(image.platforms)}"
            )
        return digest

    def add_aliases(
        self, item: Work, outcome: Outcome, holdings: Holdings, *, skip: tuple[str, ...]
    ) -> None:
        assert self.registry is not None and self.options.destination is not None
        repo = self.options.destination.path(item.image.repository)
        for tag in item.image.immutable_tags:
            if tag in skip:
                continue
            action = immutable_action(item, tag, holdings)
            if action is Action.KEEP_OTHER:
                self.note(
                    item.image,
                    f"kept {tag}: it names {holdings.of(tag)}, another image "
                    f"(--replace {item.image.id} moves it)",
                )
            elif action is not Action.KEEP:
                self.registry.copy_tag(repo, outcome.digest, tag)
                _verified(self.registry, repo, tag, outcome.digest)
                if action is Action.ADD_ALIAS:
                    self.reporter.step(item.image.id, f"added alias {tag}")

    def move_rolling(self, outcome: Outcome, holdings: Holdings) -> None:
        assert self.registry is not None and self.options.destination is not None
        if outcome.status not in (Status.PUSHED, Status.REPLACED, Status.PUBLISHED):
            return  # staged images get their tags from `promote`
        image = outcome.image
        repo = self.options.destination.path(image.repository)
        for tag in image.rolling_tags:
            now = holdings.of(tag)
            if now == outcome.digest:
                continue
            check = now is not None and not image.nightly and not self.options.allow_downgrade
            held = version_of(self.registry, repo, now) if check and now else None
            action = rolling_action(
                image,
                now=now,
                now_version=held,
                target=outcome.digest,
                allow_downgrade=self.options.allow_downgrade,
            )
            if action is Action.KEEP_NEWER:
                self.note(
                    image,
                    f"kept {tag}: the registry holds {held}, newer than {image.prefect_version}",
                )
                continue
            self.registry.copy_tag(repo, outcome.digest, tag)
            _verified(self.registry, repo, tag, outcome.digest)
            self.reporter.step(image.id, f"moved {tag} -> {outcome.digest[:19]}")

    def note(self, image: Image, text: str) -> None:
        self.notes.append(text)
        self.reporter.step(image.id, text)


def _record(outcome: Outcome, builts: list[Built], platforms: tuple[str, ...]) -> None:
    """One image's results, one per platform built (``platforms``): tested only when every
    one of them passed."""
    outcome.seconds += sum(built.seconds for built in builts)
    errors = [built.error for built in builts if not built.ok]
    if errors:
        outcome.advance(Status.FAILED, error="; ".join(errors))
        return
    first = builts[0]
    outcome.local_id = first.local_id
    outcome.size = first.size
    if outcome.image.platforms != (DEFAULT_PLATFORM,):
        outcome.parts = {built.platform: built.local_id for built in builts}
        missing = set(platforms) - set(outcome.parts)
        if missing:
            # Never reached through groups_of; refused all the same, since an index
            # written without a platform is exactly what must never happen.
            outcome.advance(Status.FAILED, error=f"not built for {', '.join(sorted(missing))}")
            return
        outcome.local_id = outcome.parts[platforms[0]]
    outcome.advance(Status.TESTED)


def _subject(built: Built) -> str:
    """How progress lines name one platform image."""
    image = built.image
    return image.id if image.platforms == (DEFAULT_PLATFORM,) else f"{image.id} {built.platform}"


def _lanes(groups: list[Group]) -> list[list[Group]]:
    """One lane per Python, versions in order within it.

    Groups of one Python run one after another so that a later version finds the earlier
    one's dependency layer in the builder cache (and shares it); lanes run in parallel.
    """
    lanes: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        lanes[group.python].append(group)
    return list(lanes.values())


def _staging_tags(image: Image) -> dict[str, str]:
    """platform -> staging tag of each platform image of a multi-platform image."""
    if image.platforms == (DEFAULT_PLATFORM,):
        return {}
    return {p: staging_tag(_anchor(image), p) for p in image.platforms}


class IncompleteRelease(PublisherError):
    """`promote` found planned images that are neither published nor wholly staged."""

    exit_code = 7
    SHOWN = 20

    def __init__(self, missing: list[str], *, total: int) -> None:
        self.missing = missing
        more = len(missing) - self.SHOWN
        lines = missing[: self.SHOWN] + ([f"... and {more} more"] if more > 0 else [])
        super().__init__(
            f"{len(missing)} of {total} planned images are not ready; nothing was written:\n"
            + "\n".join(f"  missing {line}" for line in lines)
        )


def _anchor(image: Image) -> str:
    """The tag an image is pushed under first: its first immutable tag."""
    return image.immutable_tags[0] if image.immutable_tags else image.tags[0].name


def _verified(registry: Registry, repo: str, tag: str, expected: str) -> str:
    actual = registry.digest(repo, tag)
    if actual is None:
        raise RegistryError(f"{repo}:{tag} is not in the registry after pushing it")
    if actual != expected:
        raise RegistryError(f"{repo}:{tag} has digest {actual}, expected {expected}")
    return actual


@dataclass(frozen=True, kw_only=True)
class Result:
    outcomes: list[Outcome]
    notes: list[str]


def publish(matrix: Matrix, the_plan: Plan, options: Options, reporter: Reporter) -> Result:
    """Run a publication against the real daemon and registry, closing both on every path."""
    with ExitStack() as stack:
        registry = None
        if options.destination is not None:
            registry = stack.enter_context(open_registry(options.destination, options.credentials))
            registry.ping()  # before any build: an unreachable registry wastes no build time
            reporter.step("registry", f"{options.destination} answers")

        # Every lane's builds share the trees installed this run (installs.py).
        installs = Installs(
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="publisher-")))
        )

        # The images the lanes make and the uploader pushes, with their layer archives
        # (assemble.py): kept until the last upload.
        assemblies = Assemblies(
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="publisher-")))
        )

        def engines() -> AbstractContextManager[Engine]:
            return docker_engine(
                matrix=matrix,
                settings=options.build,
                reporter=reporter,
                auth=options.auth,
                installs=installs,
                assemblies=assemblies,
                registry=registry,
                host=options.destination.host if options.destination else "",
            )

        run = Publication(
            matrix=matrix,
            options=options,
            reporter=reporter,
            registry=registry,
            engines=engines,
            # Removed at the end of the run, the installed trees (every wheel of the
            # bench's matrix, one tree each) took 9-10 s after the last tag was written.
            built_all=installs.clear,
        )
        return Result(outcomes=run.run(the_plan), notes=run.notes)


def describe(the_plan: Plan, options: Options, reporter: Reporter) -> None:
    """What a run would do, without a registry to compare with (a dry run of `build`)."""
    where = str(options.destination) if options.destination else "the local daemon only"
    for group in groups_of(the_plan.images):
        base = options.build.base_for(group.images[0])
        if group.pinned_base:
            base += f" (its {group.platform} image)"
        reporter.step(group.subject, f"would resolve and build core FROM {base}")
        for image in group.images:
            kind = "the core image" if not image.extras else f"core + [{', '.join(image.extras)}]"
            rolling = ", ".join(image.rolling_tags) or "no rolling tag"
            if group.pinned_base and group.platform != image.platforms[-1]:
                continue  # said once per image, with its last platform
            push = ", ".join(image.immutable_tags) or "-"
            if group.pinned_base:
                push = f"an index of {', '.join(image.platforms)} as {push}"
            reporter.step(
                image.id,
                f"would build {kind}, smoke-test, push {push} to {where}, then move {rolling}",
            )

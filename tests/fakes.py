"""In-memory stand-ins for the registry and the Docker side of a publish.

``FakeRegistry`` implements ``publish.Registry``: manifests stored by digest with their
labels, tags naming digests, and a log of every call in order, so a test can check the
order of the phases and count HEADs (``digest``) against GETs (``labels``: a manifest GET
and a config GET). ``FakeDaemon`` stands for the Docker daemon behind ``publish.Engines``:
each engine it hands out "builds" a Group into fake local ids (or fails the images it was
told to fail) and pushes them into the fake registry.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from publisher import labels
from publisher.build import Built, Group, OnBuilt
from publisher.errors import RegistryError
from publisher.plan import Image

WRITES = ("put", "copy_tag", "put_index")


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Call:
    # "digest" (a HEAD), "labels" (GETs), "platform_images" (a GET), "put" (a push),
    # "copy_tag", "put_index"
    method: str
    repo: str
    ref: str  # the tag or digest asked about, or the tag written


class FakeRegistry:
    """A registry held in dicts. ``fail_after_writes=k`` makes the (k+1)th write raise."""

    def __init__(self, *, fail_after_writes: int | None = None) -> None:
        self.manifests: dict[str, dict[str, str]] = {}  # digest -> labels
        self.indexes: dict[str, dict[str, str]] = {}  # index digest -> platform -> digest
        self.tags: dict[tuple[str, str], str] = {}  # (repo, tag) -> digest
        self.calls: list[Call] = []
        self.fail_after_writes = fail_after_writes
        self.writes = 0
        self.pings = 0
        self.closed = False
        self._lock = threading.Lock()

    # -- publish.Registry ---------------------------------------------------------------

    def digest(self, repo: str, ref: str) -> str | None:
        self._log("digest", repo, ref)
        return self._resolve(repo, ref)

    def labels(self, repo: str, ref: str) -> dict[str, str]:
        self._log("labels", repo, ref)
        found = self._resolve(repo, ref)
        if found is None:
            raise RegistryError(f"{repo}:{ref} not found")
        return dict(self.manifests[found])

    def copy_tag(self, repo: str, source_ref: str, tag: str) -> str:
        self._log("copy_tag", repo, tag)
        found = self._resolve(repo, source_ref)
        if found is None:
            raise RegistryError(f"{repo}@{source_ref} not found")
        self._write()
        self.tags[(repo, tag)] = found
        return found

    def platform_images(self, repo: str, ref: str) -> dict[str, str] | None:
        self._log("platform_images", repo, ref)
        found = self._resolve(repo, ref)
        if found is None:
            raise RegistryError(f"{repo}:{ref} not found")
        listed = self.indexes.get(found)
        return dict(listed) if listed is not None else None

    def put_index(self, repo: str, tag: str, images: Sequence[tuple[str, str]]) -> str:
        self._log("put_index", repo, tag)
        for platform, digest in images:
            if digest not in self.manifests or digest in self.indexes:
                raise RegistryError(f"{repo}@{digest} ({platform}) is not an image manifest")
        self._write()
        found = digest_of("index " + " ".join(f"{p}={d}" for p, d in images))
        # Labels as a RegistryClient reads them through an index: the first image's.
        self.manifests[found] = dict(self.manifests[images[0][1]])
        self.indexes[found] = dict(images)
        self.tags[(repo, tag)] = found
        return found

    # -- what an engine's push and a test's setup do ---------------------------------

    def put(self, repo: str, tag: str, image_labels: dict[str, str], content: str) -> str:
        """Store a manifest (its digest derived from ``content``) and point ``tag`` at it."""
        self._log("put", repo, tag)
        self._write()
        found = digest_of(content)
        self.manifests[found] = dict(image_labels)
        self.tags[(repo, tag)] = found
        return found

    def seed(self, repo: str, tags: list[str], image_labels: dict[str, str], content: str) -> str:
        """Put an image under ``tags`` without logging or counting writes (test setup)."""
        found = digest_of(content)
        self.manifests[found] = dict(image_labels)
        for tag in tags:
            self.tags[(repo, tag)] = found
        return found

    # -- what publish.publish() needs of a RegistryClient -----------------------------

    def ping(self) -> None:
        self.pings += 1

    def __enter__(self) -> FakeRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.closed = True

    # -- for assertions ---------------------------------------------------------------

    def state(self, repo: str) -> dict[str, str]:
        """tag -> digest of one repository."""
        return {tag: d for (r, tag), d in sorted(self.tags.items()) if r == repo}

    def methods(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def writes_logged(self) -> list[Call]:
        return [c for c in self.calls if c.method in WRITES]

    def heal(self) -> None:
        self.fail_after_writes = None

    def _resolve(self, repo: str, ref: str) -> str | None:
        if ref.startswith("sha256:"):
            return ref if ref in self.manifests else None
        return self.tags.get((repo, ref))

    def _log(self, method: str, repo: str, ref: str) -> None:
        with self._lock:
            self.calls.append(Call(method, repo, ref))

    def _write(self) -> None:
        with self._lock:  # promote writes from several threads
            if self.fail_after_writes is not None and self.writes >= self.fail_after_writes:
                raise RegistryError(f"injected failure on write {self.writes + 1}")
            self.writes += 1


@dataclass
class FakeDaemon:
    """The state behind every FakeEngine: what was built, tagged and pushed.

    ``fail`` maps an image id (or "ID@PLATFORM" for one platform of it) to the error its
    build reports; ``fail_test`` likewise to the error of its smoke test, which runs after
    the image is built (and may have been uploaded). A "build" is
    deterministic: the same image (and the same --replace) gives the same digest, whichever
    run builds it, so interrupted and uninterrupted runs can be compared.
    """

    registry: FakeRegistry | None = None
    fail: dict[str, str] = field(default_factory=dict)
    fail_test: dict[str, str] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    # Each start's group and the group it was told comes next in its lane (or None).
    starts: list[tuple[Group, Group | None]] = field(default_factory=list)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, image id or tag)
    local: dict[str, Image] = field(default_factory=dict)  # local id -> image
    content: dict[str, str] = field(default_factory=dict)  # local id -> what it holds
    local_tags: dict[str, str] = field(default_factory=dict)  # "repo:tag" -> local id
    pushed_images: list[str] = field(default_factory=list)  # image ids, as pushed
    opened: int = 0
    closed: int = 0
    # Called as each group's build starts, from the lane's thread (to hold a build back).
    before_build: Callable[[Group], None] | None = None
    # Called as each built image's smoke test runs, from a thread of its own (to hold a
    # test back); the image's result is ready once it returns, failed if it returns an
    # error.
    during_test: Callable[[Built], str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def engines(self) -> Any:
        """A ``publish.Engines``: a zero-argument callable returning a context manager."""

        @contextmanager
        def engine() -> Iterator[FakeEngine]:
            with self._lock:
                self.opened += 1
            fake = FakeEngine(self)
            try:
                yield fake
            finally:
                fake.close()
                with self._lock:
                    self.closed += 1

        return engine

    def built_ids(self) -> list[str]:
        return [ref for method, ref in self.calls if method == "build"]

    def pushed_tags(self) -> list[str]:
        return [ref for method, ref in self.calls if method == "push"]


class FakeEngine:
    def __init__(self, daemon: FakeDaemon) -> None:
        self.daemon = daemon
        # Smoke tests of their own threads, as Builder.start runs them.
        self._tests = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fake-test")

    def start(
        self, group: Group, on_built: OnBuilt | None = None, *, then: Group | None = None
    ) -> list[Future[Built]]:
        daemon = self.daemon
        with daemon._lock:
            daemon.starts.append((group, then))
        found: list[Future[Built]] = []
        for built in self.build(group):
            if built.ok and on_built is not None:
                on_built(built)
            error = _failure(daemon.fail_test, built.image, built.platform)
            result = replace(built, local_id="", error=error) if error else built
            if built.ok and daemon.during_test is not None:
                found.append(self._tests.submit(self._test, built, result))
            else:
                found.append(done(result))
        return found

    def close(self) -> None:
        self._tests.shutdown(wait=True)

    def _test(self, built: Built, result: Built) -> Built:
        assert self.daemon.during_test is not None
        error = self.daemon.during_test(built)
        return replace(result, local_id="", error=error) if error else result

    def build(self, group: Group) -> list[Built]:
        daemon = self.daemon
        if daemon.before_build is not None:
            daemon.before_build(group)
        with daemon._lock:
            daemon.groups.append(group)
        results = []
        platform = group.platform
        for image in group.images:
            with daemon._lock:
                daemon.calls.append(("build", image.id))
            error = _failure(daemon.fail, image, platform)
            if error:
                results.append(Built(image=image, platform=platform, error=error))
                continue
            content = f"{image.id} {image.prefect_version} replaces={group.replaces.get(image.id)}"
            if group.pinned_base:
                content += f" platform={platform} on={group.published_core}"
            local_id = digest_of("local " + content)
            with daemon._lock:
                daemon.local[local_id] = image
                daemon.content[local_id] = content
            results.append(
                Built(image=image, platform=platform, local_id=local_id, size=1000, seconds=0.5)
            )
        return results

    def tag(self, local_id: str, repository: str, tag: str) -> None:
        with self.daemon._lock:
            self.daemon.calls.append(("tag", tag))
            self.daemon.local_tags[f"{repository}:{tag}"] = local_id

    def push(self, local_id: str, repository: str, tag: str) -> str:
        daemon = self.daemon
        assert daemon.registry is not None, "this daemon has no registry to push to"
        with daemon._lock:
            daemon.calls.append(("push", tag))
        image = daemon.local[local_id]
        # "HOST/PATH" -> PATH: the registry holds paths, a push names the host as well.
        repo = repository.split("/", 1)[1]
        found = daemon.registry.put(
            repo,
            tag,
            {
                labels.VERSION: image.prefect_version,
                labels.PYTHON: image.python_version,
                labels.FINGERPRINT: digest_of("inputs " + image.id),
            },
            daemon.content[local_id],
        )
        with daemon._lock:
            daemon.pushed_images.append(image.id)
        return found


def done(built: Built) -> Future[Built]:
    """A result that is already in."""
    future: Future[Built] = Future()
    future.set_result(built)
    return future


def _failure(table: dict[str, str], image: Image, platform: str) -> str:
    """The error ``table`` gives an image, by its id or "ID@PLATFORM"."""
    return table.get(image.id) or table.get(f"{image.id}@{platform}") or ""

"""Uploading images while they are tested and the others still build.

A push costs a good part of a build (every new layer is compressed, then sent: push.py),
so each image is uploaded as soon as it is built, while its smoke test runs, instead of
all at the end. It goes under one staging tag that no release can use (``UPLOAD_TAG``)
and is then known by its digest alone: a manifest stays in the registry when its tag
moves on to the next upload. The release's own tags
are written at the end, by manifest copy (registry-side, a few requests each), and only
if every image passed. So an image that fails its test may have reached the registry,
under the staging tag at most, and is never released. A run that fails or is killed
leaves no release tag, and the one staging tag is all that remains of it; its rerun
finds the layers already there.

One upload at a time: it competes with the builds and smoke tests for the same cores,
and uploads share the staging tag.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Protocol

from .engine import Engine, Engines
from .errors import RegistryError
from .progress import Reporter
from .staging import PREFIX

UPLOAD_TAG = PREFIX + "upload"

# (image id, platform): one platform image of one planned image
Key = tuple[str, str]


class Lookup(Protocol):
    def digest(self, repo: str, ref: str) -> str | None: ...


class Uploads:
    """Uploads local images to one repository in the background, in submission order."""

    def __init__(
        self, engines: Engines, *, registry: Lookup, repo: str, reference: str, reporter: Reporter
    ) -> None:
        self._engines = engines
        self._engine: Engine | None = None
        self._stack = ExitStack()
        self._registry = registry
        self._repo = repo
        self._reference = reference  # what is pushed to: HOST/REPO
        self._reporter = reporter
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._futures: dict[Key, Future[str]] = {}
        self._stopped = False
        self._lock = threading.Lock()

    def submit(self, subject: str, key: Key, local_id: str) -> None:
        """Upload ``local_id`` once the uploads before it are done (unless stopped)."""
        with self._lock:
            if self._stopped or key in self._futures:
                return
            self._futures[key] = self._pool.submit(self._upload, subject, local_id)

    def stop(self) -> None:
        """Start no more uploads: something failed, so nothing will be released."""
        with self._lock:
            self._stopped = True
            for future in self._futures.values():
                future.cancel()

    def digests(self) -> dict[Key, str]:
        """Wait for every upload; the digest of each. The first failure is raised."""
        return {key: future.result() for key, future in list(self._futures.items())}

    def close(self) -> None:
        self.stop()
        self._pool.shutdown(wait=True)
        self._stack.close()

    def __enter__(self) -> Uploads:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _upload(self, subject: str, local_id: str) -> str:
        if self._engine is None:  # opened here: only this thread uses it
            self._engine = self._stack.enter_context(self._engines())
        self._reporter.step(subject, "uploading")
        started = time.monotonic()
        pushed = self._engine.push(local_id, self._reference, UPLOAD_TAG)
        # Read back by digest: the tag itself may already name the next upload (another
        # run's, say), but the manifest stays.
        if self._registry.digest(self._repo, pushed) != pushed:
            raise RegistryError(f"{self._repo}@{pushed} is not in the registry after pushing it")
        self._reporter.step(subject, f"uploaded {pushed[:19]} in {time.monotonic() - started:.1f}s")
        return pushed

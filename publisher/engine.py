"""The Docker side of a publish, behind a small interface.

`publish` talks to the daemon only through an Engine: build a group, tag an image,
push a tag. The real one holds one daemon connection (a lane of the publisher owns
one); unit tests hand `publish` an in-memory one instead.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

from . import docker_client, push
from .assemble import Assemblies
from .build import Builder, Built, Group, OnBuilt, Settings
from .errors import RegistryError
from .installs import Installs
from .matrix import Matrix
from .progress import Reporter


class Engine(Protocol):
    def start(
        self, group: Group, on_built: OnBuilt | None = None, *, then: Group | None = None
    ) -> list[Future[Built]]:
        """Build a group; each image's result once its smoke test is done, and each built
        image to ``on_built`` before it is tested; ``then``, the group started next, made
        ready meanwhile (Builder.start)."""
        ...

    def tag(self, local_id: str, repository: str, tag: str) -> None: ...

    def push(self, local_id: str, repository: str, tag: str) -> str: ...


# Opens an engine (a daemon connection) for one user: a build lane, the uploader.
Engines = Callable[[], AbstractContextManager[Engine]]


class DockerEngine:
    def __init__(self, builder: Builder, registry: push.Blobs | None, host: str = "") -> None:
        self.builder = builder
        self.client = builder.client
        self.registry = registry  # where `push` uploads: the destination, ``host``
        self.host = host

    def start(
        self, group: Group, on_built: OnBuilt | None = None, *, then: Group | None = None
    ) -> list[Future[Built]]:
        return self.builder.start(group, on_built, then=then)

    def tag(self, local_id: str, repository: str, tag: str) -> None:
        self.client.images.get(local_id).tag(repository, tag)

    def push(self, local_id: str, repository: str, tag: str) -> str:
        """Push ``local_id`` as ``repository:tag`` (HOST/PATH) from the archives it was
        made of, or its saved layers (push.py); return the manifest's digest."""
        repo = repository.removeprefix(f"{self.host}/")
        if self.registry is None or repo == repository:
            raise RegistryError(f"cannot push {repository}:{tag}: not the run's registry")
        self.tag(local_id, repository, tag)
        return push.push(
            self.client,
            self.registry,
            repo=repo,
            tag=tag,
            image_id=local_id,
            work=self.builder.workdir,
            assemblies=self.builder.assemblies,
        )


@contextmanager
def docker_engine(
    *,
    matrix: Matrix,
    settings: Settings,
    reporter: Reporter,
    auth: dict[str, str] | None,
    installs: Installs | None = None,
    assemblies: Assemblies | None = None,
    registry: push.Blobs | None = None,
    host: str = "",
) -> Iterator[DockerEngine]:
    """A fresh daemon connection and work directory, both closed on every path; images
    are pushed to ``registry``, the registry at ``host``."""
    client = docker_client.connect()
    try:
        with tempfile.TemporaryDirectory(prefix="publisher-") as tmp:
            builder = Builder(
                client,
                matrix=matrix,
                settings=settings,
                reporter=reporter,
                workdir=Path(tmp),
                auth=auth,
                installs=installs,
                assemblies=assemblies,
            )
            try:
                yield DockerEngine(builder, registry, host)
            finally:
                builder.close()  # its smoke tests use the client and the work directory
    finally:
        client.close()

"""Where images are pushed: ``--registry HOST[:PORT][/NAMESPACE]``."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import PublisherError
from .matrix import REPOSITORY_RE
from .registry import Credentials, RegistryClient


@dataclass(frozen=True, kw_only=True)
class Destination:
    host: str
    namespace: str | None = None

    @classmethod
    def parse(cls, text: str) -> Destination:
        host, _, namespace = text.strip().rstrip("/").partition("/")
        # Docker's own rule for telling a registry host from a Docker Hub namespace.
        if not host or not ("." in host or ":" in host or host == "localhost"):
            raise PublisherError(
                f"--registry {text!r}: expected HOST[:PORT][/NAMESPACE], e.g. "
                "localhost:5000, ghcr.io/acme or docker.io/prefecthq"
            )
        if namespace and not REPOSITORY_RE.match(namespace):
            raise PublisherError(f"--registry {text!r}: {namespace!r} is not a valid namespace")
        return cls(host=host, namespace=namespace or None)

    def path(self, repository: str) -> str:
        """The repository path inside the registry; NAMESPACE replaces the matrix's own."""
        if self.namespace is None:
            return repository
        return f"{self.namespace}/{repository.rsplit('/', 1)[-1]}"

    def reference(self, repository: str) -> str:
        return f"{self.host}/{self.path(repository)}"

    def __str__(self) -> str:
        return self.host + (f"/{self.namespace}" if self.namespace else "")


def open_registry(destination: Destination, credentials: Credentials | None) -> RegistryClient:
    """A client for the destination, with the given credentials or the Docker config's."""
    if credentials is not None:
        return RegistryClient(destination.host, credentials=credentials)
    return RegistryClient.from_docker_config(destination.host)

"""One error hierarchy for everything the publisher refuses to do.

Every failure a user can cause or meet (bad matrix, unreachable daemon, registry
refusing a push) is a :class:`PublisherError`. ``cli.main`` catches the base class
once, prints its message on one line and exits with the class's ``exit_code``, so
no traceback ever reaches a maintainer for a problem they can fix.
"""

from __future__ import annotations


class PublisherError(Exception):
    """Base class: a problem reported as one line and a non-zero exit."""

    exit_code = 1


class MatrixError(PublisherError):
    """The matrix file is missing, malformed or describes an impossible plan."""

    exit_code = 2


class SelectionError(PublisherError):
    """A --select pattern (or another command-line choice) matched nothing."""

    exit_code = 2


class DockerUnavailable(PublisherError):
    """The Docker daemon cannot be reached."""

    exit_code = 3


class RegistryError(PublisherError):
    """The registry answered in a way that stops the run."""

    exit_code = 4


class RegistryUnreachable(RegistryError):
    """No answer from the registry at all (connection refused, DNS, timeout)."""


class RegistryAuthError(RegistryError):
    """The registry refused our credentials (401/403)."""


class BuildError(PublisherError):
    """One or more images failed to build or failed their smoke test."""

    exit_code = 5


class SourceError(PublisherError):
    """A nightly source (git repository or ref) could not be resolved or built."""

    exit_code = 6

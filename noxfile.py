"""Maintainer entry points. Each session is a thin call into the `publisher` package.

nox -l                      list sessions
nox -s tests                all tests, starting dockerd, a registry and an index first
nox -s docs -- --check      fail when the docs tag table is stale
nox -s publish -- --registry ghcr.io/acme
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests", "docs"]
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent
SERVICES = ROOT / ".ci" / "services"


def _install(session: nox.Session, *extras: str) -> None:
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


def _services_env(session: nox.Session) -> dict[str, str]:
    """Start what the end-to-end tests need; return the variables `.ci/services` exported."""
    session.run("bash", str(SERVICES), "up", external=True)
    state = Path(os.environ.get("PUBLISHER_TEST_STATE", "/tmp/publisher-test"))
    env: dict[str, str] = {}
    for line in (state / "env").read_text().splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            key, _, value = words[1].partition("=")
            env[key] = value
    return env


@nox.session
def tests(session: nox.Session) -> None:
    """Run every test, end-to-end ones included (starts and stops dockerd, registry, index)."""
    _install(session, "test")
    env = _services_env(session)
    try:
        session.run("pytest", *session.posargs, env=env)
    finally:
        session.run("bash", str(SERVICES), "down", external=True)


@nox.session
def unit(session: nox.Session) -> None:
    """Run the tests that need no Docker daemon, registry or index."""
    _install(session, "test")
    session.run("pytest", "-m", "not e2e and not registry", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and types (ruff, mypy) and the Dockerfiles (hadolint)."""
    _install(session, "lint")
    session.run("ruff", "check", "publisher", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "publisher", "tests", "noxfile.py")
    session.run("mypy")
    dockerfiles = sorted(str(p) for p in (ROOT / "dockerfiles").glob("*Dockerfile"))
    if dockerfiles:
        session.run("hadolint", *dockerfiles)


@nox.session
def plan(session: nox.Session) -> None:
    """Print the images and tags the matrix gives (forwards options to `publisher plan`)."""
    _install(session)
    session.run("publisher", "plan", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate the docs tag table; `-- --check` fails on a stale page instead."""
    _install(session)
    session.run("publisher", "docs", *(session.posargs or ["--write"]))


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build and smoke-test images into the local Docker daemon (`publisher build`)."""
    _install(session)
    session.run("publisher", "build", *session.posargs)


@nox.session(default=False)
def publish(session: nox.Session) -> None:
    """Cut a release: build, smoke-test and push the matrix (`publisher publish`)."""
    _install(session)
    session.run("publisher", "publish", *session.posargs)


@nox.session(default=False)
def nightly(session: nox.Session) -> None:
    """Build and push the nightly `master` images from a git ref (`publisher nightly`)."""
    _install(session)
    session.run("publisher", "nightly", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Time the publisher against the naive build-tag-push loop (cold, no-op, incremental)."""
    _install(session, "test")
    env = _services_env(session)
    try:
        session.run("python", "tests/bench/bench.py", *session.posargs, env=env)
    finally:
        session.run("bash", str(SERVICES), "down", external=True)

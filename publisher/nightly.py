"""Nightly builds: Prefect from a git ref, built into a wheel on the host.

The image installs that wheel like any release, so it carries no git, no source checkout
and no build tools. Its tags come from the matrix's `release: nightly` rules, rendered
with the commit's date and short sha, and the commit is recorded in the image's
org.opencontainers.image.revision label, which is how the next run knows, from the
registry alone, whether there is anything new to build.

The wheel is built with the same package index options as the images' packages are
resolved with (``--index-url`` and friends, else pip's own configuration), so the index
must also serve the source's build requirements (Prefect's: hatchling and versioningit).
A mirror of PyPI does; a wheelhouse of runtime packages alone does not.
"""

from __future__ import annotations

import dataclasses
import email.parser
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import labels, ui
from .build import NightlySource
from .destination import open_registry
from .errors import MatrixError, SourceError
from .matrix import Matrix
from .plan import Plan, Revision, plan
from .progress import Reporter
from .publish import Options, Result, describe, publish
from .wheels import IndexOptions, redact

_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True, kw_only=True)
class Source:
    location: str  # a git URL or a local path
    ref: str
    ui: bool = True  # build the UI bundles (False: a wheel without them, quicker)


@dataclass(frozen=True, kw_only=True)
class Artifact:
    wheel: Path
    version: str
    revision: Revision
    ui: str  # labels.UI's value: built, skipped or absent


def source_of(matrix: Matrix, location: str | None, ref: str | None) -> Source:
    """The source to build: the arguments' or the matrix's; a local path in the matrix is
    relative to the matrix, like its other paths."""
    if matrix.nightly is None:
        raise MatrixError(f"{matrix.path}: has no 'nightly' section, so there is nothing to build")
    local = Path(location) if location else matrix.path.parent / matrix.nightly.repository
    chosen = location or matrix.nightly.repository
    if local.exists():
        chosen = str(local.resolve())
    return Source(location=chosen, ref=ref or matrix.nightly.ref)


def run(
    matrix: Matrix,
    source: Source,
    sha: str,
    select: list[str],
    options: Options,
    reporter: Reporter,
) -> Result | None:
    """Build and publish commit ``sha`` of ``source`` unless the registry already has it.

    None means there was nothing to do (or only a dry run to describe).
    """
    selected = plan(matrix, nightly=True).select(select)
    if options.dry_run:
        unresolved = plan(matrix, nightly=True, revision=Revision(sha=sha, date="YYYYMMDD"))
        describe(unresolved.select(select), options, reporter)
        return None
    if not options.build.force and _published(selected, options, sha, reporter):
        return None
    with tempfile.TemporaryDirectory(prefix="publisher-nightly-") as tmp:
        reporter.step("nightly", f"building prefect's wheel at {sha[:12]}")
        artifact = build_wheel(source, sha, Path(tmp), options.build.index, reporter)
        reporter.step(
            "nightly",
            f"built {artifact.wheel.name} (prefect {artifact.version}, "
            f"committed {artifact.revision.date} UTC)",
        )
        images = plan(matrix, nightly=True, revision=artifact.revision).select(select).images
        the_plan = Plan(
            images=tuple(dataclasses.replace(i, prefect_version=artifact.version) for i in images)
        )
        settings = dataclasses.replace(
            options.build, nightly=NightlySource(wheel=artifact.wheel, revision=sha, ui=artifact.ui)
        )
        return publish(matrix, the_plan, dataclasses.replace(options, build=settings), reporter)


def _published(selected: Plan, options: Options, sha: str, reporter: Reporter) -> bool:
    """True when every nightly image's rolling tag in the registry was built from ``sha``.

    The commit is read from the registry (the revision label of the image config), never
    from local state, so any machine can run the nightly. An image without a rolling tag
    cannot be looked up before its commit date is known, so it counts as not published.
    """
    if options.destination is None:
        return False
    with open_registry(options.destination, options.credentials) as client:
        for image in selected.images:
            if not image.rolling_tags:
                return False
            repo = options.destination.path(image.repository)
            for tag in image.rolling_tags:
                if client.digest(repo, tag) is None:
                    return False
                if client.labels(repo, tag).get(labels.REVISION) != sha:
                    return False
    tags = ", ".join(t for i in selected.images for t in i.rolling_tags)
    reporter.step(
        "nightly",
        f"{tags} in {options.destination} already built from {sha[:12]}; "
        "nothing to build (--force rebuilds)",
    )
    return True


def resolve(source: Source) -> str:
    """The commit ``source.ref`` names, without fetching the source.

    A ref is a branch, a tag (an annotated one is peeled to its commit), a full ref name
    (``refs/pull/1/head``), ``HEAD`` or a full 40-character commit sha. Only exact names
    count: ``main`` never means ``refs/heads/feature/main``.
    """
    for what, value in (("source", source.location), ("ref", source.ref)):
        if not value or value.startswith("-"):
            # git would read it as an option (--upload-pack=... runs a command).
            raise SourceError(f"{what} {value!r} is not a repository or ref name")
    if _SHA.match(source.ref):
        return source.ref
    # An annotated tag's commit is listed as "<tag>^{}" only when asked for by that name.
    output = _git(
        "ls-remote",
        "--",
        source.location,
        source.ref,
        f"{source.ref}^{{}}",
        what=f"look up {source.ref!r}",
    )
    candidates: dict[str, str] = {}
    for line in output.splitlines():
        sha, _, name = line.partition("\t")
        candidates[name.strip()] = sha.strip()
    for name in (
        f"refs/heads/{source.ref}",
        f"refs/tags/{source.ref}^{{}}",
        f"refs/tags/{source.ref}",
        f"{source.ref}^{{}}",
        source.ref,
    ):
        if name in candidates:
            return candidates[name]
    raise SourceError(f"ref {source.ref!r} does not exist in {redact(source.location)}")


def build_wheel(
    source: Source,
    sha: str,
    workdir: Path,
    index: IndexOptions,
    reporter: Reporter | None = None,
) -> Artifact:
    """Fetch ``sha`` with its history and tags and build prefect's wheel from it on the host,
    with its UI bundles unless the source has none or ``source.ui`` is off."""
    checkout = workdir / "source"
    checkout.mkdir(parents=True)
    fetch(source, sha, checkout)
    date = _git(
        "-C",
        str(checkout),
        "show",
        "-s",
        "--format=%cd",
        "--date=format-local:%Y%m%d",
        "HEAD",
        what="read the commit date",
        env={"TZ": "UTC"},
    ).strip()
    env = dict(os.environ)
    ui_state = _ui(source, checkout, reporter, index)
    if ui_state == labels.UI_BUILT:
        # As upstream's Dockerfile: a bundle that did not make it into the wheel fails it.
        env[ui.REQUIRE_BUNDLES] = "1"
    out = workdir / "dist"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--disable-pip-version-check",
            "--wheel-dir",
            str(out),
            *index.pip_args(),
            str(checkout),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if result.returncode != 0:
        raise SourceError(
            f"building a wheel from {redact(source.location)} at {sha[:12]} failed: "
            f"{_pip_reason(result.stdout + result.stderr)}"
        )
    built = sorted(out.glob("*.whl"))
    if len(built) != 1:
        raise SourceError(
            f"{redact(source.location)} at {sha[:12]} built {len(built)} wheels, expected one"
        )
    name, version = _wheel_metadata(built[0])
    if name.lower() != "prefect":
        raise SourceError(
            f"{redact(source.location)} at {sha[:12]} built {built[0].name}, not a prefect wheel"
        )
    return Artifact(
        wheel=built[0], version=version, revision=Revision(sha=sha, date=date), ui=ui_state
    )


def _ui(source: Source, checkout: Path, reporter: Reporter | None, index: IndexOptions) -> str:
    """Build the checkout's UI bundles when asked to; what the image's label records."""
    if not ui.projects(checkout):
        return labels.UI_ABSENT
    if not source.ui:
        if reporter:
            reporter.step("ui", "skipped (--no-ui): the wheel has no UI bundles")
        return labels.UI_SKIPPED
    ui.build(checkout, reporter, index=index)
    return labels.UI_BUILT


def fetch(source: Source, sha: str, checkout: Path) -> None:
    """Check out ``sha`` in ``checkout`` with the commits and tags behind it.

    The build backend (versioningit for Prefect 3, versioneer for 0.14) computes the
    version from `git describe`: with the commit alone it finds no tag and falls back to a
    default that main is not. A treeless partial clone brings the history as commits only;
    the trees and blobs of the one commit checked out are fetched on demand.
    """

    def git(*args: str, what: str) -> str:
        return _git("-C", str(checkout), *args, what=what)

    where = redact(source.location)
    _git("init", "--quiet", str(checkout), what="create a checkout")
    git("remote", "add", "origin", source.location, what=f"use {where}")
    git("config", "remote.origin.promisor", "true", what="configure the checkout")
    git("config", "remote.origin.partialclonefilter", "tree:0", what="configure the checkout")
    git(
        "fetch",
        "--quiet",
        "--filter=tree:0",
        "--tags",
        "origin",
        sha,
        what=f"fetch {sha[:12]} from {where} with its history and tags",
    )
    git("checkout", "--quiet", sha, what=f"check out {sha[:12]}")


def commit_revision(source: Source, sha: str) -> Revision:
    """The Revision (sha and commit date) of ``sha``, fetching the commit object only.

    `promote --nightly` needs the date for the nightly's tags (master-YYYYMMDD-SHA) but
    nothing of the source: a depth-1 treeless fetch brings one commit, a few hundred bytes.
    """
    with tempfile.TemporaryDirectory(prefix="publisher-commit-") as tmp:
        where = redact(source.location)
        _git("init", "--quiet", "--bare", tmp, what="create a repository")
        _git(
            "-C",
            tmp,
            "fetch",
            "--quiet",
            "--depth=1",
            "--filter=tree:0",
            "--",
            source.location,
            sha,
            what=f"fetch commit {sha[:12]} from {where}",
        )
        date = _git(
            "-C",
            tmp,
            "show",
            "-s",
            "--format=%cd",
            "--date=format-local:%Y%m%d",
            sha,
            what="read the commit date",
            env={"TZ": "UTC"},
        ).strip()
    return Revision(sha=sha, date=date)


def _wheel_metadata(wheel: Path) -> tuple[str, str]:
    """The project name and version the wheel declares (what ``prefect version`` reports)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
            if len(names) != 1:
                raise SourceError(f"{wheel.name} has no single .dist-info/METADATA")
            metadata = email.parser.HeaderParser().parsestr(archive.read(names[0]).decode())
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read {wheel.name}: {exc}") from None
    name, version = metadata.get("Name"), metadata.get("Version")
    if not name or not version:
        raise SourceError(f"{wheel.name}: METADATA names no project or version")
    return str(name), str(version)


def _pip_reason(output: str) -> str:
    """pip's own explanation: its first ERROR line (build-dependency failures included)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR:")]
    if not errors:
        return redact(lines[-1]) if lines else "pip gave no message"
    reason = errors[0]
    if "build dependencies" in output:
        reason += " (while installing the source's build requirements from the package index)"
    return redact(reason)


def _git(*args: str, what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
    )
    if result.returncode != 0:
        lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
        # git's first "fatal:"/"error:" line says what went wrong; advice lines follow it.
        errors = [ln for ln in lines if ln.startswith(("fatal:", "error:"))]
        chosen = errors[0] if errors else (lines[-1] if lines else "")
        reason = redact(chosen) if chosen else f"git exited with {result.returncode}"
        raise SourceError(f"cannot {what}: {reason}")
    return result.stdout

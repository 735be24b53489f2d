"""Nightly builds: Prefect from a git ref, built into a wheel on the host.

The image installs that wheel like any release, so it carries no git, no source checkout
and no build tools. Its tags come from the matrix's `release: nightly` rules, rendered
with the commit's date and short sha, and the commit is recorded in the image's
org.opencontainers.image.revision label, which is how the next run knows, from the
registry alone, whether there is anything new to build.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError
from .plan import Revision
from .wheels import IndexOptions, redact

_SHA = re.compile(r"^[0-9a-f]{40}$")
_WHEEL_VERSION = re.compile(r"^prefect-([^-]+)-")


@dataclass(frozen=True, kw_only=True)
class Source:
    location: str  # a git URL or a local path
    ref: str


@dataclass(frozen=True, kw_only=True)
class Artifact:
    wheel: Path
    version: str
    revision: Revision


def resolve(source: Source) -> str:
    """The commit ``source.ref`` names, without fetching the source."""
    if _SHA.match(source.ref):
        return source.ref
    output = _git("ls-remote", source.location, source.ref, what=f"look up {source.ref!r}")
    candidates: dict[str, str] = {}
    for line in output.splitlines():
        sha, _, name = line.partition("\t")
        candidates[name] = sha
    # Prefer an exact branch, then a tag (peeled to its commit), then whatever matched.
    for name in (
        f"refs/heads/{source.ref}",
        f"refs/tags/{source.ref}^{{}}",
        f"refs/tags/{source.ref}",
        source.ref,
    ):
        if name in candidates:
            return candidates[name]
    if candidates:
        return next(iter(candidates.values()))
    raise SourceError(f"ref {source.ref!r} does not exist in {redact(source.location)}")


def build_wheel(source: Source, sha: str, workdir: Path, index: IndexOptions) -> Artifact:
    """Check out ``sha`` and build prefect's wheel from it on the host."""
    checkout = workdir / "source"
    checkout.mkdir(parents=True)
    _git("init", "--quiet", str(checkout), what="create a checkout")
    _git(
        "-C",
        str(checkout),
        "fetch",
        "--quiet",
        "--depth",
        "1",
        source.location,
        sha,
        what=f"fetch {sha[:12]}",
    )
    _git("-C", str(checkout), "checkout", "--quiet", "FETCH_HEAD", what=f"check out {sha[:12]}")
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
    )
    if result.returncode != 0:
        lines = [ln for ln in (result.stderr or result.stdout).splitlines() if ln.strip()]
        raise SourceError(
            f"building a wheel from {redact(source.location)} at {sha[:12]} failed: "
            f"{redact(lines[-1].strip()) if lines else 'pip gave no message'}"
        )
    built = sorted(out.glob("prefect-*.whl"))
    if not built:
        raise SourceError(f"{redact(source.location)} at {sha[:12]} did not build a prefect wheel")
    match = _WHEEL_VERSION.match(built[0].name)
    if match is None:
        raise SourceError(f"cannot read a version from {built[0].name}")
    return Artifact(wheel=built[0], version=match.group(1), revision=Revision(sha=sha, date=date))


def _git(*args: str, what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["git", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0", **(env or {})},
    )
    if result.returncode != 0:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        reason = redact(lines[-1].strip()) if lines else f"git exited with {result.returncode}"
        raise SourceError(f"cannot {what}: {reason}")
    return result.stdout

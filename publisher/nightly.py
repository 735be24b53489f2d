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

import email.parser
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError
from .plan import Revision
from .wheels import IndexOptions, redact

_SHA = re.compile(r"^[0-9a-f]{40}$")


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


def build_wheel(source: Source, sha: str, workdir: Path, index: IndexOptions) -> Artifact:
    """Fetch ``sha`` alone (depth 1) and build prefect's wheel from it on the host."""
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
        "--",
        source.location,
        sha,
        what=f"fetch {sha[:12]} from {redact(source.location)}",
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
    return Artifact(wheel=built[0], version=version, revision=Revision(sha=sha, date=date))


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

"""Resolving an image's Python packages on the host, into its build context.

Containers cannot be trusted with the index: a URL with a password passed as a build
argument is recorded in the image history by the classic builder, and a build that
reaches the network is not reproducible. So pip resolves and downloads wheels for the
*target* interpreter on the host, with whatever index the user's pip is configured for
(PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, pip.conf, or --index-url), and the
build installs offline from the context.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError

# A credential in a URL ("https://user:secret@host/") is never echoed back to the user.
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")
_SHA = re.compile(r"\b[0-9a-f]{40}\b")

# The manylinux tags a wheel may carry and still install on a glibc >= 2.28 base such as
# Debian bookworm or python:3.x-slim. pip does not widen an explicit --platform, so each
# compatible tag is listed.
_MANYLINUX = (
    "manylinux_2_28_{arch}",
    "manylinux_2_17_{arch}",
    "manylinux2014_{arch}",
    "manylinux_2_12_{arch}",
    "manylinux2010_{arch}",
    "manylinux_2_5_{arch}",
    "manylinux1_{arch}",
)


@dataclass(frozen=True, kw_only=True)
class IndexOptions:
    """Where pip looks for packages; empty means "as pip is configured"."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    def pip_args(self) -> list[str]:
        args: list[str] = []
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


def redact(text: str) -> str:
    """Hide credentials embedded in URLs."""
    return _CREDENTIALS.sub("***@", text)


def target_args(python: str, arch: str = "x86_64") -> list[str]:
    """pip flags that resolve for CPython ``python`` on Linux ``arch`` instead of the host."""
    abi = "cp" + python.replace(".", "")
    args = [
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--abi",
        abi,
        "--abi",
        "abi3",
        "--abi",
        "none",
    ]
    for template in _MANYLINUX:
        args += ["--platform", template.format(arch=arch)]
    args += ["--platform", "any"]
    return args


def download(
    requirements: Sequence[str],
    *,
    python: str,
    dest: Path,
    index: IndexOptions,
    arch: str = "x86_64",
) -> list[Path]:
    """Download the wheels ``requirements`` resolve to for the target Python into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--dest",
        str(dest),
        "--disable-pip-version-check",
        "--progress-bar",
        "off",
        # A dead index would otherwise cost minutes of back-off per request.
        "--retries",
        "2",
        "--timeout",
        "30",
        *target_args(python, arch),
        *index.pip_args(),
        *requirements,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(
            f"cannot resolve {' '.join(requirements)} for Python {python}: "
            f"{_pip_reason(result.stderr or result.stdout)}"
        )
    return sorted(dest.glob("*.whl"))


def revision_of(wheels: Sequence[Path], project: str = "prefect") -> str | None:
    """The git commit a project's wheel was built from, when its build recorded one.

    Prefect's builds write it into a generated module (``_build_info.py`` in 3.x,
    versioneer's ``_version.py`` before).
    """
    prefix = project.replace("-", "_") + "-"
    for wheel in wheels:
        if not wheel.name.lower().startswith(prefix):
            continue
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(("/_build_info.py", "/_version.py")):
                    match = _SHA.search(archive.read(name).decode("utf-8", "replace"))
                    if match:
                        return match.group(0)
    return None


def _pip_reason(output: str) -> str:
    """pip's own one-line explanation, credentials removed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    chosen = errors[0] if errors else (lines[-1] if lines else "pip failed without a message")
    return redact(chosen.removeprefix("ERROR: "))

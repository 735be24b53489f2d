"""The docs tag table, rendered from the same plan the publisher pushes.

The generic table (``X.Y.Z`` rows) comes from the tag rules; the per-release table from
the plan of one version. Pages hold the table between two HTML-comment markers so the
prose around it stays hand-written while the table can never drift.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version
from tabulate import tabulate

from .errors import PublisherError, SelectionError
from .matrix import Matrix, Release, TagRule
from .plan import plan
from .platforms import DEFAULT_PLATFORM
from .versions import parse_version

BEGIN = "<!-- BEGIN tag-table: generated from matrix.yaml by `publisher docs --write` -->"
END = "<!-- END tag-table -->"
HEADERS = ("Tag", "Prefect Version", "Python Version")
ALIGN = ("left", "center", "right")
# A fourth column, only when some image is not built for the default platform alone: a
# matrix that names no platform keeps the table it always had.
PLATFORMS_HEADER = "Platforms"
GENERIC_FIELDS = {"version": "X.Y.Z", "major": "X", "minor": "Y", "micro": "Z"}
NIGHTLY_FIELDS = {"date": "YYYYMMDD", "sha": "SHA"}


class DocsOutOfDate(PublisherError):
    """A docs page does not hold the table the matrix gives."""

    exit_code = 1


@dataclass(frozen=True, kw_only=True)
class Row:
    tag: str
    prefect: str
    python: str
    platforms: str = DEFAULT_PLATFORM  # "linux/amd64, linux/arm64", in the matrix's order


def generic_rows(matrix: Matrix) -> list[Row]:
    """One row per (rule, python), in rule order, newest Python first."""
    plan(matrix)  # the docs must never show a table the publisher would refuse to push
    rows: list[Row] = []
    for rule in matrix.tags:
        if not rule.in_docs:
            continue
        for name in rule.variants:
            variant = matrix.variant(name)
            pythons = rule.pythons_for(variant)
            for python in sorted(pythons, key=_python_key, reverse=True):
                fields = {**GENERIC_FIELDS, **NIGHTLY_FIELDS, "python": python}
                row = Row(
                    tag=rule.template.format(**fields),
                    prefect=_prefect_text(rule, matrix),
                    python=python,
                    platforms=", ".join(matrix.platforms_of(variant)),
                )
                if row not in rows:
                    rows.append(row)
    return rows


def release_rows(matrix: Matrix, version_text: str) -> list[Row]:
    """The tags one release really gets, as planned."""
    try:
        version = parse_version(version_text)
    except ValueError as exc:
        raise SelectionError(f"--release: {exc}") from None
    if version not in matrix.versions:
        raise SelectionError(
            f"--release {version_text!r} is not listed in {matrix.path} 'versions'"
        )
    cells = [
        (tag.rule, _python_key(image.python_version), tag.name, image)
        for image in plan(matrix).images
        if Version(image.prefect_version) == version
        for tag in image.tags
    ]
    cells.sort(key=lambda cell: (cell[0], tuple(-n for n in cell[1])))
    return [
        Row(
            tag=name,
            prefect=image.prefect_version,
            python=image.python_version,
            platforms=", ".join(image.platforms),
        )
        for _, _, name, image in cells
    ]


def render(rows: list[Row]) -> str:
    cells: list[tuple[str, ...]] = [(r.tag, r.prefect, r.python) for r in rows]
    headers: tuple[str, ...] = HEADERS
    align: tuple[str, ...] = ALIGN
    if any(r.platforms != DEFAULT_PLATFORM for r in rows):
        cells = [(r.tag, r.prefect, r.python, r.platforms) for r in rows]
        headers, align = (*HEADERS, PLATFORMS_HEADER), (*ALIGN, "left")
    return tabulate(
        cells,
        headers=headers,
        tablefmt="pipe",  # "github" drops the alignment colons
        colalign=align,
        disable_numparse=True,  # "3.10" must not become 3.1
    )


def splice(page: str, table: str, *, name: str) -> str:
    """Replace what lies between the markers of ``page`` with ``table``."""
    start = page.find(BEGIN)
    end = page.find(END)
    if start < 0 or end < start:
        raise PublisherError(f"{name}: no tag-table markers; add the lines {BEGIN!r} and {END!r}")
    return page[: start + len(BEGIN)] + "\n" + table + "\n" + page[end:]


def update_pages(pages: list[Path], table: str, *, check: bool) -> list[str]:
    """Write (or with ``check``, compare) each page; returns unified diffs of stale pages."""
    diffs: list[str] = []
    for page in pages:
        try:
            current = page.read_text(encoding="utf-8")
        except OSError as exc:
            raise PublisherError(f"{page}: cannot read docs page: {exc.strerror}") from None
        wanted = splice(current, table, name=str(page))
        if wanted == current:
            continue
        if check:
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        current.splitlines(keepends=True),
                        wanted.splitlines(keepends=True),
                        fromfile=f"{page} (on disk)",
                        tofile=f"{page} (from the matrix)",
                    )
                )
            )
        else:
            page.write_text(wanted, encoding="utf-8")
    return diffs


def _prefect_text(rule: TagRule, matrix: Matrix) -> str:
    if rule.release is Release.EVERY:
        return "X.Y.Z"
    if rule.release is Release.LATEST:
        return "most recent PyPi version"
    if rule.release is Release.LATEST_IN_MAJOR:
        return "most recent X release"
    if rule.release is Release.LATEST_IN_MINOR:
        return "most recent X.Y release"
    ref = matrix.nightly.ref if matrix.nightly else "nightly"
    return f"{ref} build"


def _python_key(python: str) -> tuple[int, ...]:
    return tuple(int(part) for part in python.split("."))

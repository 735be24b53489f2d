"""Command-line interface: ``publisher plan|docs|build|publish|nightly``.

Each command is a short pipeline: load the matrix, plan, then hand the plan to one
executor. Errors are PublisherErrors, caught once in :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from . import docs
from .errors import PublisherError
from .matrix import Matrix, load
from .plan import Plan, plan

DEFAULT_PAGES = ("docs/images.md", "README.md")

ID_HELP = (
    "image ids are VARIANT-VERSION-pyPYTHON, e.g. full-0.14.10-py3.7, core-0.14.10-py3.8, "
    "full-nightly-py3.7; GLOB uses shell wildcards (full-0.14.*-py3.8); repeat to add more"
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PublisherError as exc:
        print(f"publisher: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("publisher: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="publisher",
        description=(
            "Expand matrix.yaml into Prefect's image tags, render the docs tag table from "
            "them, and build, smoke-test and push the images."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("plan", help="print the images and tags the matrix gives")
    _matrix_options(p)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--nightly", action="store_true", help="plan only the nightly images")
    p.set_defaults(func=cmd_plan)

    d = commands.add_parser(
        "docs",
        help="print or update the docs tag table",
        description=(
            "Print the generic tag table (as in the docs), update it in place between the "
            "tag-table markers (--write), or fail with a diff when a page is stale (--check)."
        ),
    )
    d.add_argument("--matrix", type=Path, default=Path("matrix.yaml"), metavar="PATH")
    mode = d.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update the pages in place")
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff if a page is stale")
    mode.add_argument(
        "--release", metavar="X.Y.Z", help="print the concrete tags of one listed release"
    )
    d.add_argument(
        "--page",
        type=Path,
        action="append",
        metavar="PATH",
        help=f"page holding the table markers (repeatable; default: {', '.join(DEFAULT_PAGES)})",
    )
    d.set_defaults(func=cmd_docs)
    return parser


def _matrix_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--matrix", type=Path, default=Path("matrix.yaml"), metavar="PATH",
        help="the matrix file (default: ./matrix.yaml)",
    )
    p.add_argument("--select", action="append", default=[], metavar="GLOB", help=ID_HELP)


def _load_plan(args: argparse.Namespace, *, nightly: bool = False) -> tuple[Matrix, Plan]:
    matrix = load(args.matrix)
    return matrix, plan(matrix, nightly=nightly).select(args.select)


def cmd_plan(args: argparse.Namespace) -> int:
    _, the_plan = _load_plan(args, nightly=args.nightly)
    if args.format == "json":
        print(json.dumps(the_plan.to_json(), indent=2))
        return 0
    rows = [
        (i.id, i.prefect_version, i.python_version, i.base_image, ", ".join(i.immutable_tags),
         ", ".join(i.rolling_tags))
        for i in the_plan.images
    ]
    print(
        tabulate(
            rows,
            headers=("Image", "Prefect", "Python", "Base image", "Immutable tags", "Rolling tags"),
            disable_numparse=True,
        )
    )
    print(f"\n{len(the_plan.images)} images, {sum(len(i.tags) for i in the_plan.images)} tags")
    return 0


def cmd_docs(args: argparse.Namespace) -> int:
    matrix = load(args.matrix)
    if args.release:
        print(docs.render(docs.release_rows(matrix, args.release)))
        return 0
    table = docs.render(docs.generic_rows(matrix))
    if not (args.write or args.check):
        print(table)
        return 0
    pages = args.page or [Path(p) for p in DEFAULT_PAGES]
    diffs = docs.update_pages(pages, table, check=args.check)
    if diffs:
        sys.stdout.write("".join(diffs))
        raise docs.DocsOutOfDate(
            f"{len(diffs)} docs page(s) out of date with {args.matrix}; "
            "run `publisher docs --write` (or `nox -s docs`)"
        )
    verb = "up to date" if args.check else "written"
    print(f"{', '.join(map(str, pages))}: {verb}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

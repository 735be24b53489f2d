"""Command-line interface: ``publisher plan|docs|build|publish|promote|status|diff|nightly``.

Parse the arguments, call one command (in :mod:`publisher.commands`), report. Each
command is a short pipeline: load the matrix, plan, then hand the plan to one
executor. Errors are PublisherErrors, caught once in :func:`main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import local_registry, shards
from .commands import (
    DEFAULT_PAGES,
    cmd_build,
    cmd_diff,
    cmd_docs,
    cmd_nightly,
    cmd_plan,
    cmd_promote,
    cmd_publish,
    cmd_status,
)
from .errors import PublisherError

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
    except Exception as exc:  # the last line of defence against a traceback
        if os.environ.get("PUBLISHER_DEBUG"):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else ""
        print(
            f"publisher: internal error: {type(exc).__name__}: {detail} "
            "(set PUBLISHER_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 70


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
    p.add_argument(
        "--format",
        choices=("table", "json", "github-matrix"),
        default="table",
        help="github-matrix: one line of JSON for a GitHub Actions strategy.matrix, "
        '{"include": [{"name", "select", "platform", "runner"}, ...]}, one entry per shard',
    )
    p.add_argument("--nightly", action="store_true", help="plan only the nightly images")
    p.add_argument(
        "--shard-by",
        choices=shards.SHARD_BY,
        help="with --format github-matrix: one shard per Python (default), platform, Prefect "
        "version or image, each split by platform too; images sharing a core build always "
        "share a shard, so 'image' shards by that group",
    )
    p.add_argument(
        "--max-shards",
        type=int,
        metavar="N",
        help=f"with --format github-matrix: merge shards of one platform until at most N "
        f"remain (default and most: {shards.MAX_SHARDS}, GitHub's limit)",
    )
    p.add_argument(
        "--runner",
        action="append",
        default=[],
        metavar="PLATFORM=LABEL",
        help="with --format github-matrix: the runner label for a platform (repeatable; "
        f"default: {', '.join(f'{k}={v}' for k, v in shards.DEFAULT_RUNNERS.items())}, "
        f"others {shards.EMULATION_RUNNER} under emulation)",
    )
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

    b = commands.add_parser(
        "build",
        help="build and smoke-test images into the local daemon",
        description="Build and smoke-test the selected images, then tag them locally "
        "with their planned tags (e.g. prefecthq/prefect:latest). Pushes nothing.",
    )
    _matrix_options(b)
    _build_options(b)
    b.set_defaults(func=cmd_build)

    pub = commands.add_parser(
        "publish",
        help="build, smoke-test and push images, then move rolling tags",
        description="Read what the registry holds, build and smoke-test the images it does "
        "not have; only when all pass, push their immutable tags, read them back, and then "
        "re-point the rolling tags (latest*, core, master) by manifest copy. A published "
        "image is never rebuilt and its immutable tags never move, unless --replace names "
        "it; a rolling tag never moves to an older release than the one it names. With "
        "--registry, --dry-run prints the same table as `publisher diff`.",
    )
    _matrix_options(pub)
    _build_options(pub)
    _registry_options(pub)
    _policy_options(pub)
    _shard_options(pub)
    pub.add_argument(
        "--format", choices=("table", "json"), default="table", help="of the --dry-run table"
    )
    pub.set_defaults(func=cmd_publish)

    pro = commands.add_parser(
        "promote",
        help="after shards on several machines: write the indexes, then move rolling tags",
        description="Registry only, no Docker daemon. Check that every planned image is "
        "published or has every planned platform staged by the shards (`publish "
        "--platform P --no-rolling`); if any is missing, write nothing, list what is "
        "missing (one line per image) and exit 7. Otherwise write each staged image's "
        "index under its tags, read them back, and move the rolling tags (never to an "
        "older release). Running it again changes nothing.",
    )
    _matrix_options(pro)
    _registry_options(pro, required=True)
    _allow_downgrade_option(pro)
    pro.add_argument(
        "--nightly",
        action="store_true",
        help="promote the nightly images of --ref (its commit date is fetched: the commit "
        "object only) instead of the releases",
    )
    pro.add_argument(
        "--source", metavar="PATH_OR_URL", help="with --nightly: as for `publisher nightly`"
    )
    pro.add_argument(
        "--ref", help="with --nightly: the commit the shards built (pass the same sha)"
    )
    pro.set_defaults(func=cmd_promote)

    st = commands.add_parser(
        "status",
        help="say which planned images are missing, published or stale in a registry",
        description="Read the registry and, for each planned image, say whether it is "
        "missing, published, or stale: published from build inputs (base image, "
        "Dockerfiles, build arguments, extras) that differ from today's, and which. "
        "Reports only; `publish --replace` is how a stale image is rebuilt. Needs the "
        "Docker daemon to identify the base images as a build would.",
    )
    _matrix_options(st)
    _reading_options(st)
    st.set_defaults(func=cmd_status)

    df = commands.add_parser(
        "diff",
        help="show every tag a publish would create, move or keep, before it does",
        description="For every planned tag: what the registry holds now and what it will "
        "hold after `publish` with the same options: create, keep, add alias, move "
        "OLD (version) -> NEW (version), replace, keep (the registry holds a newer "
        "release), stale (kept). Touches nothing.",
    )
    _matrix_options(df)
    _reading_options(df)
    _policy_options(df)
    df.set_defaults(func=cmd_diff)

    n = commands.add_parser(
        "nightly",
        help="build and publish the nightly images from a git ref",
        description="Resolve the nightly ref, and unless the registry's rolling nightly tag "
        "(master) already carries that commit, build prefect's wheel from it on the host, "
        "build, smoke-test and push the nightly images (master-YYYYMMDD-SHA first, then "
        "move master). Never touches a release tag.",
    )
    _matrix_options(n)
    _build_options(n)
    _registry_options(n)
    n.add_argument(
        "--source",
        metavar="PATH_OR_URL",
        help="git repository to build (default: the matrix's nightly.repository)",
    )
    n.add_argument("--ref", help="branch, tag or commit (default: the matrix's nightly.ref)")
    _shard_options(n)
    n.add_argument(
        "--no-ui",
        dest="ui",
        action="store_false",
        help="do not build the UI bundles (npm): the wheel and image have no UI "
        "(label io.prefect.publisher.ui=skipped)",
    )
    n.set_defaults(func=cmd_nightly)
    return parser


def _build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--base-image",
        metavar="TEMPLATE",
        help="base image template overriding the matrix's, e.g. mirror.local/python:{python}-slim",
    )
    p.add_argument(
        "--index-url",
        metavar="URL",
        help="package index to resolve wheels from (default: what pip is configured "
        "with: PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, pip.conf)",
    )
    p.add_argument("--extra-index-url", action="append", default=[], metavar="URL")
    p.add_argument("--find-links", action="append", default=[], metavar="PATH_OR_URL")
    p.add_argument(
        "--dockerfiles",
        type=Path,
        metavar="DIR",
        help="folder with core.Dockerfile and entrypoint.sh "
        "(default: the matrix's 'dockerfiles' key, else dockerfiles/ beside it)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=_default_jobs(),
        metavar="N",
        help="Python versions built at once, each in its own lane (versions of one Python "
        f"build one after another to share layers; default: {_default_jobs()})",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild images this machine has already built (never moves a published tag; "
        "that is --replace)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be done and touch nothing"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="stream build output")


def _policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="GLOB",
        help="rebuild these published images with today's inputs and move their immutable "
        "tags (e.g. after a base image security fix); globs over image ids, repeatable",
    )
    _allow_downgrade_option(p)


def _allow_downgrade_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="let rolling tags move to an older release than the one they name now "
        "(e.g. after a release was yanked)",
    )


def _shard_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--platform",
        action="append",
        metavar="OS/ARCH",
        help="build only this platform of each selected image (a shard on a runner of "
        "that platform; repeatable). Its images are pushed under staging tags and get "
        "their tags from `publisher promote`; implies --no-rolling",
    )
    p.add_argument(
        "--no-rolling",
        dest="rolling",
        action="store_false",
        help="push immutable tags only; `publisher promote` moves the rolling tags once "
        "every shard is done",
    )


def _reading_options(p: argparse.ArgumentParser) -> None:
    _registry_options(p, required=True)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--base-image",
        metavar="TEMPLATE",
        help="base image template overriding the matrix's, e.g. mirror.local/python:{python}-slim",
    )
    p.add_argument("--dockerfiles", type=Path, metavar="DIR", help="as for publish")


def _registry_options(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    p.add_argument(
        "--registry",
        required=required,
        metavar="HOST[:PORT][/NAMESPACE]",
        help="the registry to read"
        if required
        else "where to push; NAMESPACE replaces the matrix's (default: a throwaway "
        f"registry at {local_registry.ADDRESS}, started if needed)",
    )
    p.add_argument("--username", help="registry user (default: from the Docker config)")
    secret = p.add_mutually_exclusive_group()
    secret.add_argument(
        "--password-stdin", action="store_true", help="read the registry password from stdin"
    )
    secret.add_argument(
        "--password-env", metavar="VAR", help="read the registry password from this variable"
    )


def _default_jobs() -> int:
    # Builds are mostly pip and layer I/O; more than two at once on a small machine only
    # makes them contend.
    return max(1, min(4, (os.cpu_count() or 2) // 2 + 1))


def _matrix_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--matrix",
        type=Path,
        default=Path("matrix.yaml"),
        metavar="PATH",
        help="the matrix file (default: ./matrix.yaml)",
    )
    p.add_argument("--select", action="append", default=[], metavar="GLOB", help=ID_HELP)


if __name__ == "__main__":
    sys.exit(main())

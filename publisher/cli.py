"""Command-line interface: ``publisher plan|docs|build|publish|nightly``.

Each command is a short pipeline: load the matrix, plan, then hand the plan to one
executor. Errors are PublisherErrors, caught once in :func:`main`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tabulate import tabulate

from . import docs, local_registry, nightly
from .destination import Destination
from .errors import BuildError, MatrixError, PublisherError
from .matrix import Matrix, load
from .plan import Plan, Revision, plan
from .progress import Reporter
from .publish import REVISION_LABEL, Options, Outcome, publish, registry_client
from .registry import Credentials
from .wheels import IndexOptions, redact

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
        description="Build and smoke-test every selected image; only when all pass, push "
        "their immutable tags, read them back from the registry, and then re-point the "
        "rolling tags (latest*, core, master) by manifest copy. Images already in the "
        "registry with the same input fingerprint are not rebuilt.",
    )
    _matrix_options(pub)
    _build_options(pub)
    _registry_options(pub)
    pub.set_defaults(func=cmd_publish)

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
        help="folder with core.Dockerfile, full.Dockerfile, entrypoint.sh "
        "(default: the matrix's 'dockerfiles' key, else dockerfiles/ beside it)",
    )
    p.add_argument(
        "--jobs",
        "-j",
        type=int,
        default=_default_jobs(),
        metavar="N",
        help=f"images built at once (default: {_default_jobs()})",
    )
    p.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be done and touch nothing"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="stream build output")


def _registry_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--registry",
        metavar="HOST[:PORT][/NAMESPACE]",
        help="where to push; NAMESPACE replaces the matrix's (default: a throwaway "
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


def _load_plan(args: argparse.Namespace, *, nightly: bool = False) -> tuple[Matrix, Plan]:
    matrix = load(args.matrix)
    return matrix, plan(matrix, nightly=nightly).select(args.select)


def cmd_plan(args: argparse.Namespace) -> int:
    _, the_plan = _load_plan(args, nightly=args.nightly)
    if args.format == "json":
        print(json.dumps(the_plan.to_json(), indent=2))
        return 0
    rows = [
        (
            i.id,
            i.prefect_version,
            i.python_version,
            i.base_image,
            ", ".join(i.immutable_tags),
            ", ".join(i.rolling_tags),
        )
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


def _options(
    args: argparse.Namespace,
    matrix: Matrix,
    destination: Destination | None,
    credentials: Credentials | None = None,
) -> Options:
    if args.jobs < 1:
        raise PublisherError(f"--jobs {args.jobs}: must be at least 1")
    if args.base_image is not None and "{python}" not in args.base_image:
        raise PublisherError(f"--base-image {args.base_image!r} must contain {{python}}")
    return Options(
        destination=destination,
        credentials=credentials,
        index=IndexOptions(
            index_url=args.index_url,
            extra_index_urls=tuple(args.extra_index_url),
            find_links=tuple(args.find_links),
        ),
        base_image=args.base_image,
        dockerfiles=_dockerfiles(args.dockerfiles or matrix.dockerfiles),
        dry_run=args.dry_run,
        force=args.force,
        jobs=args.jobs,
    )


def _dockerfiles(folder: Path) -> Path:
    for name in ("core.Dockerfile", "full.Dockerfile", "entrypoint.sh"):
        if not (folder / name).is_file():
            raise PublisherError(
                f"{folder / name}: no such file; point --dockerfiles (or the matrix's "
                "'dockerfiles' key) at the folder holding the image Dockerfiles"
            )
    return folder


def _credentials(args: argparse.Namespace) -> Credentials | None:
    password: str | None = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise PublisherError(f"--password-env {args.password_env}: variable is not set")
    if password is None and args.username is None:
        return None
    if password is None or not args.username:
        raise PublisherError(
            "--username and a password (--password-stdin or --password-env) go together"
        )
    return Credentials(username=args.username, password=password)


def cmd_build(args: argparse.Namespace) -> int:
    matrix, the_plan = _load_plan(args)
    reporter = Reporter(verbose=args.verbose)
    return _run(matrix, the_plan, _options(args, matrix, None), reporter)


def cmd_publish(args: argparse.Namespace) -> int:
    matrix, the_plan = _load_plan(args)
    reporter = Reporter(verbose=args.verbose)
    credentials = _credentials(args)
    destination = _destination(args, reporter)
    return _run(matrix, the_plan, _options(args, matrix, destination, credentials), reporter)


def cmd_nightly(args: argparse.Namespace) -> int:
    matrix = load(args.matrix)
    if matrix.nightly is None:
        raise MatrixError(f"{matrix.path}: has no 'nightly' section, so there is nothing to build")
    reporter = Reporter(verbose=args.verbose)
    if args.source:
        location = args.source
        local = Path(location)
    else:
        # A local path in the matrix is relative to the matrix, like its other paths.
        location = matrix.nightly.repository
        local = matrix.path.parent / location
    if local.exists():
        location = str(local.resolve())
    source = nightly.Source(location=location, ref=args.ref or matrix.nightly.ref)
    selected = plan(matrix, nightly=True).select(args.select)
    options = _options(args, matrix, None, _credentials(args))

    # The ref first: a ref that does not exist costs no registry and no build.
    sha = nightly.resolve(source)
    reporter.step("nightly", f"{source.ref} in {redact(source.location)} is {sha}")
    options = dataclasses.replace(options, destination=_destination(args, reporter))
    if not (args.force or args.dry_run) and _nightly_published(selected, options, sha, reporter):
        return 0
    with tempfile.TemporaryDirectory(prefix="publisher-nightly-") as tmp:
        if args.dry_run:
            revision = Revision(sha=sha, date="YYYYMMDD")
            version, wheel = "(built from source)", None
        else:
            reporter.step("nightly", f"building prefect's wheel at {sha[:12]}")
            artifact = nightly.build_wheel(source, sha, Path(tmp), options.index)
            revision, version, wheel = artifact.revision, artifact.version, artifact.wheel
            reporter.step(
                "nightly",
                f"built {wheel.name} (prefect {version}, committed {revision.date} UTC)",
            )
        images = plan(matrix, nightly=True, revision=revision).select(args.select).images
        the_plan = Plan(
            images=tuple(dataclasses.replace(i, prefect_version=version) for i in images)
        )
        options = dataclasses.replace(options, wheel=wheel, revision=sha)
        return _run(matrix, the_plan, options, reporter)


def _nightly_published(selected: Plan, options: Options, sha: str, reporter: Reporter) -> bool:
    """True when every nightly image's rolling tag in the registry was built from ``sha``.

    The commit is read from the registry (the revision label of the image config), never
    from local state, so any machine can run the nightly. An image without a rolling tag
    cannot be looked up before its commit date is known, so it counts as not published.
    """
    if options.destination is None:
        return False
    client = registry_client(options)
    try:
        for image in selected.images:
            if not image.rolling_tags:
                return False
            repo = options.destination.path(image.repository)
            for tag in image.rolling_tags:
                if client.digest(repo, tag) is None:
                    return False
                if client.labels(repo, tag).get(REVISION_LABEL) != sha:
                    return False
    finally:
        client.close()
    tags = ", ".join(t for i in selected.images for t in i.rolling_tags)
    reporter.step(
        "nightly",
        f"{tags} in {options.destination} already built from {sha[:12]}; "
        "nothing to build (--force rebuilds)",
    )
    return True


def _destination(args: argparse.Namespace, reporter: Reporter) -> Destination:
    if args.registry:
        return Destination.parse(args.registry)
    if args.dry_run:
        return Destination.parse(local_registry.ADDRESS)
    return Destination.parse(local_registry.ensure(reporter))


def _run(matrix: Matrix, the_plan: Plan, options: Options, reporter: Reporter) -> int:
    verb = "publishing" if options.destination else "building"
    reporter.step("plan", f"{verb} {len(the_plan.images)} images from {matrix.path}")
    outcomes = publish(matrix, the_plan, options, reporter)
    if options.dry_run:
        return 0
    print(summary(outcomes))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise BuildError(
            f"{len(failed)} of {len(outcomes)} images failed "
            f"({', '.join(o.image.id for o in failed)}); "
            "nothing was pushed and no rolling tag moved"
        )
    return 0


def summary(outcomes: list[Outcome]) -> str:
    rows = [
        (
            o.image.id,
            ", ".join(t.name for t in o.image.tags),
            f"{o.size / 1e6:.0f} MB" if o.size else "-",
            o.digest[:19] if o.digest else "-",
            f"{o.seconds:.1f}",
            o.status if not o.error else f"{o.status}: {o.error}",
        )
        for o in outcomes
    ]
    return tabulate(
        rows,
        headers=("Image", "Tags", "Size", "Digest", "Seconds", "Status"),
        disable_numparse=True,
        maxcolwidths=[None, 48, None, None, None, 60],
    )


if __name__ == "__main__":
    sys.exit(main())

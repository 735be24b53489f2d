"""The commands behind the CLI: each loads the matrix, plans, and hands the plan on.

Each takes the parsed arguments and returns the exit code; what goes wrong is a
PublisherError, which :func:`publisher.cli.main` reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from tabulate import tabulate

from . import docker_client, docs, local_registry, nightly, review, shards
from .build import Settings
from .changes import Action
from .destination import Destination, open_registry
from .engine import Engine
from .errors import BuildError, DockerUnavailable, PublisherError, SelectionError
from .matrix import Matrix, load
from .outcome import Outcome
from .plan import Plan, plan
from .platforms import DEFAULT_PLATFORM, DEFAULT_PLATFORMS, normalise
from .progress import Reporter
from .publish import Options, Publication, Result, describe, publish
from .recipe import Sources
from .registry import Credentials
from .wheels import IndexOptions, redact

DEFAULT_PAGES = ("docs/images.md", "README.md")


def _load_plan(args: argparse.Namespace, *, nightly: bool = False) -> tuple[Matrix, Plan]:
    matrix = load(args.matrix)
    return matrix, plan(matrix, nightly=nightly).select(args.select)


def cmd_plan(args: argparse.Namespace) -> int:
    sharding = {
        "--shard-by": args.shard_by is not None,
        "--max-shards": args.max_shards is not None,
        "--runner": bool(args.runner),
    }
    for flag, given in sharding.items():
        if given and args.format != "github-matrix":
            raise SelectionError(f"{flag} applies only to --format github-matrix")
    _, the_plan = _load_plan(args, nightly=args.nightly)
    if args.format == "github-matrix":
        pieces = shards.shard(
            the_plan,
            by=args.shard_by or "python",
            max_shards=shards.MAX_SHARDS if args.max_shards is None else args.max_shards,
            runners=dict(shards.parse_runner(text) for text in args.runner),
        )
        # One line: a workflow writes it to $GITHUB_OUTPUT as matrix=...
        print(json.dumps(shards.github_matrix(pieces), separators=(",", ":")))
        return 0
    if args.format == "json":
        print(json.dumps(the_plan.to_json(), indent=2))
        return 0
    headers = ["Image", "Prefect", "Python", "Base image", "Immutable tags", "Rolling tags"]
    rows = [
        [
            i.id,
            i.prefect_version,
            i.python_version,
            i.base_image,
            ", ".join(i.immutable_tags),
            ", ".join(i.rolling_tags),
        ]
        for i in the_plan.images
    ]
    # Only a matrix that names platforms gets the column; the default table stays as it was.
    if any(i.platforms != DEFAULT_PLATFORMS for i in the_plan.images):
        headers.append("Platforms")
        for row, image in zip(rows, the_plan.images, strict=True):
            row.append(", ".join(image.platforms))
    print(tabulate(rows, headers=headers, disable_numparse=True))
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


def _options(args: argparse.Namespace, matrix: Matrix, destination: Destination | None) -> Options:
    if args.jobs < 1:
        raise PublisherError(f"--jobs {args.jobs}: must be at least 1")
    if args.base_image is not None and "{python}" not in args.base_image:
        raise PublisherError(f"--base-image {args.base_image!r} must contain {{python}}")
    settings = Settings(
        dockerfiles=_dockerfiles(args.dockerfiles or matrix.dockerfiles),
        index=IndexOptions(
            index_url=args.index_url,
            extra_index_urls=tuple(args.extra_index_url),
            find_links=tuple(args.find_links),
        ),
        base_image=args.base_image,
        force=args.force,
    )
    platforms = tuple(_platform(text) for text in getattr(args, "platform", None) or ())
    return Options(
        build=settings,
        destination=destination,
        credentials=_credentials(args) if destination is not None else None,
        jobs=args.jobs,
        replace=tuple(getattr(args, "replace", ())),
        allow_downgrade=getattr(args, "allow_downgrade", False),
        dry_run=args.dry_run,
        platforms=platforms,
        # A platform shard cannot move a rolling tag: the index it would name is not
        # written until `promote` finds every platform staged.
        rolling=getattr(args, "rolling", True) and not platforms,
    )


def _platform(text: str) -> str:
    try:
        return normalise(text)
    except ValueError as exc:
        raise SelectionError(f"--platform: {exc}") from None


def _dockerfiles(folder: Path) -> Path:
    for name in ("core.Dockerfile", "entrypoint.sh"):
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
    options = _options(args, matrix, _destination(args, reporter))
    if options.dry_run and args.registry:
        # With a destination to compare with, a dry run is the release review.
        return _print_diff(matrix, the_plan, options, args.format)
    return _run(matrix, the_plan, options, reporter)


def cmd_nightly(args: argparse.Namespace) -> int:
    matrix = load(args.matrix)
    source = dataclasses.replace(nightly.source_of(matrix, args.source, args.ref), ui=args.ui)
    reporter = Reporter(verbose=args.verbose)
    # The ref first: a ref that does not exist costs no registry and no build.
    sha = nightly.resolve(source)
    reporter.step("nightly", f"{source.ref} in {redact(source.location)} is {sha}")
    options = _options(args, matrix, _destination(args, reporter))
    result = nightly.run(matrix, source, sha, args.select, options, reporter)
    return 0 if result is None else _report(result)


def cmd_promote(args: argparse.Namespace) -> int:
    reporter = Reporter()
    if args.nightly:
        matrix = load(args.matrix)
        source = nightly.source_of(matrix, args.source, args.ref)
        sha = nightly.resolve(source)
        revision = nightly.commit_revision(source, sha)
        reporter.step("nightly", f"{source.ref} is {sha}, committed {revision.date} UTC")
        the_plan = plan(matrix, nightly=True, revision=revision).select(args.select)
    elif args.source or args.ref:
        raise SelectionError("--source and --ref go with --nightly")
    else:
        matrix, the_plan = _load_plan(args)
    options = Options(
        build=Settings(dockerfiles=matrix.dockerfiles),  # never read: nothing is built
        destination=Destination.parse(args.registry),
        credentials=_credentials(args),
        allow_downgrade=args.allow_downgrade,
    )
    assert options.destination is not None
    with ExitStack() as stack:
        registry = stack.enter_context(open_registry(options.destination, options.credentials))
        registry.ping()
        reporter.step("registry", f"{options.destination} answers")
        run = Publication(
            matrix=matrix,
            options=options,
            reporter=reporter,
            registry=registry,
            engines=_no_daemon,
        )
        outcomes = run.promote(the_plan)
        reporter.step("registry", f"{registry.requests_made} requests")
    return _report(Result(outcomes=outcomes, notes=run.notes))


def _no_daemon() -> AbstractContextManager[Engine]:
    raise PublisherError("promote needs no Docker daemon and never builds")


def cmd_status(args: argparse.Namespace) -> int:
    matrix, the_plan = _load_plan(args)
    options = _options_for_reading(args, matrix)
    assert options.destination is not None
    repo = options.destination.path(matrix.image)
    with ExitStack() as stack:
        registry = stack.enter_context(open_registry(options.destination, options.credentials))
        found = review.status(registry, repo, the_plan, _today(stack, options))
    if args.format == "json":
        print(json.dumps({"images": [s.to_json() for s in found]}, indent=2))
        return 0
    rows = [
        [
            s.image.id,
            s.state,
            s.version or "-",
            s.digest.removeprefix("sha256:")[:12] if s.digest else "-",
            "; ".join(s.causes),
        ]
        for s in found
    ]
    headers = ["Image", "State", "Prefect", "Digest", "What changed"]
    widths: list[int | None] = [None, None, None, None, 70]
    if any(s.image.platforms != (DEFAULT_PLATFORM,) or s.platforms for s in found):
        # Only where platforms are in play: the default matrix's view stays as it was.
        for row, s in zip(rows, found, strict=True):
            row.insert(4, ", ".join(s.platforms) or ("single image" if s.digest else "-"))
        headers.insert(4, "Platforms")
        widths.insert(4, 30)
    print(tabulate(rows, headers=headers, disable_numparse=True, maxcolwidths=widths))
    counts = {state: sum(s.state == state for s in found) for state in _STATES}
    print("\n" + ", ".join(f"{n} {state}" for state, n in counts.items()))
    return 0


_STATES = ("published", "stale", "missing")


def cmd_diff(args: argparse.Namespace) -> int:
    matrix, the_plan = _load_plan(args)
    return _print_diff(matrix, the_plan, _options_for_reading(args, matrix), args.format)


def _options_for_reading(args: argparse.Namespace, matrix: Matrix) -> Options:
    return Options(
        build=Settings(
            dockerfiles=_dockerfiles(args.dockerfiles or matrix.dockerfiles),
            base_image=args.base_image,
        ),
        destination=Destination.parse(args.registry),
        credentials=_credentials(args),
        replace=tuple(getattr(args, "replace", ())),
        allow_downgrade=getattr(args, "allow_downgrade", False),
    )


def _today(stack: ExitStack, options: Options) -> review.Today:
    client = docker_client.connect()
    stack.callback(client.close)
    identities: dict[str, str] = {}

    def identity(base: str) -> str:
        if base not in identities:
            identities[base] = docker_client.image_identity(client, base)
        return identities[base]

    return review.Today(
        sources=Sources.read(options.build.dockerfiles),
        base_for=options.build.base_for,
        base_identity=identity,
    )


def _print_diff(matrix: Matrix, the_plan: Plan, options: Options, fmt: str) -> int:
    assert options.destination is not None
    repo = options.destination.path(matrix.image)
    with ExitStack() as stack:
        registry = stack.enter_context(open_registry(options.destination, options.credentials))
        try:
            today: review.Today | None = _today(stack, options)
        except DockerUnavailable:
            today = None  # without a daemon the base images cannot be identified
        rows = review.release_diff(registry, repo, the_plan, options, today)
    if fmt == "json":
        print(json.dumps({"tags": [r.to_json() for r in rows]}, indent=2))
        return 0
    print(
        tabulate(
            review.diff_table_rows(rows),
            headers=("Tag", "Image", "Action", "Registry now -> after"),
            disable_numparse=True,
            maxcolwidths=[None, None, None, 80],
        )
    )
    moving = sum(r.action not in _STILL for r in rows)
    print(
        f"\n{len(rows)} tags in {options.destination}/{repo.rsplit('/', 1)[-1]}: "
        f"{moving} change, {len(rows) - moving} stay"
    )
    if today is None:
        print("(staleness not checked: no Docker daemon to identify the base images)")
    return 0


_STILL = frozenset({Action.KEEP, Action.KEEP_NEWER, Action.KEEP_OTHER, Action.STALE_KEPT})


def _destination(args: argparse.Namespace, reporter: Reporter) -> Destination:
    if args.registry:
        return Destination.parse(args.registry)
    if args.dry_run:
        return Destination.parse(local_registry.ADDRESS)
    return Destination.parse(local_registry.ensure(reporter))


def _run(matrix: Matrix, the_plan: Plan, options: Options, reporter: Reporter) -> int:
    verb = "publishing" if options.destination else "building"
    reporter.step("plan", f"{verb} {len(the_plan.images)} images from {matrix.path}")
    if options.dry_run:
        describe(the_plan, options, reporter)
        return 0
    return _report(publish(matrix, the_plan, options, reporter))


def _report(result: Result) -> int:
    print(summary(result.outcomes))
    for note in result.notes:
        print(note)
    failed = [o for o in result.outcomes if o.failed]
    if failed:
        named = ", ".join(o.image.id for o in failed[:3])
        more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
        raise BuildError(
            f"{len(failed)} of {len(result.outcomes)} images failed ({named}{more}); "
            "nothing was released: no tag was written and no rolling tag moved"
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
            str(o.status) if not o.error else f"{o.status}: {o.error}",
        )
        for o in outcomes
    ]
    return tabulate(
        rows,
        headers=("Image", "Tags", "Size", "Digest", "Seconds", "Status"),
        disable_numparse=True,
        maxcolwidths=[None, 48, None, None, None, 60],
    )

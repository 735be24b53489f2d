"""`nox -s bench`: the publisher against two per-cell loops, side by side, on one machine.

Methods:
  publisher     this project;
  careful       what a careful maintainer writes today: per cell, one BuildKit build of a
                lean Dockerfile (tini, no compiler, pip's cache in a cache mount), tag, push;
  naive         the seed-era CI jobs: per cell, a classic build with gcc, tag, push.

Scenarios, each run by every method against registries of their own:
  cold          empty builder cache, empty registry, the whole matrix;
  cold-1        the same with only the oldest version (it seeds `incremental`);
  incremental   the newest version added to what cold-1 published;
  no-op         the whole matrix again, on an emptied builder cache, registry full;
  base-update   the oldest version published (not measured), then the base images get a
                new identity (as python:X.Y-slim does every few weeks) and the newest
                version is added: released images must be neither rebuilt nor re-pushed.
  multi-platform  (the publisher only, not run by default) the newest version's Python 3.13
                images cold, for linux/amd64 alone and then for linux/amd64 + linux/arm64 on a
                base index of the bootstrap's two bases: what the second platform costs.
After the cold scenario, the physical limit of that run (tests/bench/limit.py): the
distinct environments installed once, as many at once as there are cores, plus the bytes
uploaded at the registry's measured bandwidth; and the same with the publisher's smoke
probes run in those environments (the floor for a tool that checks what it checks).
Every measured run starts from an emptied builder cache (base images kept) and with the
publisher's download caches emptied, as on a fresh CI runner. "Bytes uploaded" is what the
registry's storage grew by; "images built" is the number of image builds the method ran;
"core-s" is how many core-seconds the whole machine was busy during the run (/proc/stat,
steal left out): the work done, every process counted, which a slower machine stretches
far less than the wall time of a run that keeps every core busy; under each run's line
and in a table at the end, those core-seconds by part (tests/bench/work.py: the daemon,
build steps, smoke tests, resolving, installing, the bench process, the index, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import docker
import yaml
from tabulate import tabulate

from publisher import debs, smoke, target, wheels
from publisher.build import Settings
from publisher.destination import Destination
from publisher.matrix import load
from publisher.outcome import Status
from publisher.plan import plan
from publisher.progress import Reporter
from publisher.publish import Options, publish
from publisher.wheels import IndexOptions
from tests.base_index import push_base_index
from tests.bench.limit import Limit
from tests.bench.limit import measure as measure_limit
from tests.bench.work import PARTS, Sampler
from tests.registry_server import run_registry
from tests.services import (
    Bootstrap,
    bootstrap_wheelhouse,
    package_index,
    tools_python,
)

SCENARIOS = ("cold", "cold-1", "incremental", "no-op", "base-update")
BASELINES = ("careful", "naive")
METHODS = ("publisher", *BASELINES)
MULTI_PLATFORM = "multi-platform"
SWEEP = "cold, --jobs "  # scenario name prefix of the --sweep-jobs runs
HERE = Path(__file__).resolve().parent
PROC_STAT = Path("/proc/stat")
ROOT = HERE.parent.parent


@dataclass(frozen=True, kw_only=True)
class Measure:
    scenario: str
    method: str
    seconds: float
    bytes_uploaded: int
    images_built: int
    core_seconds: float = 0.0  # the whole machine's busy core-seconds during the run
    work: dict[str, float] = field(default_factory=dict)  # core_seconds by part (work.py)


@contextlib.contextmanager
def registry(storage: Path) -> Iterator[str]:
    """A docker-registry of the bench's own, so its storage growth is what was uploaded."""
    with run_registry(storage) as address:
        yield address


@contextlib.contextmanager
def index_and_base(
    work: Path, index_url: str | None, base_image: str | None
) -> Iterator[tuple[str, str | None]]:
    """The index URL and base image template given, or the tests' own from the bootstrap."""
    if index_url:
        yield index_url, base_image
        return
    boot = Bootstrap.load()
    wheelhouse = bootstrap_wheelhouse(boot)
    with package_index(wheelhouse, tools_python(boot.cache_dir), work / "index") as index:
        yield index, base_image or boot.base_image


def stored_bytes(storage: Path) -> int:
    data = storage / "data"
    return sum(p.stat().st_size for p in data.rglob("*") if p.is_file()) if data.exists() else 0


def measured(
    client: docker.DockerClient,
    keep: tuple[str, ...],
    storage: Path,
    scenario: str,
    method: str,
    publish_with: Callable[[], int],
) -> Measure:
    """Run one method on an emptied builder: its seconds, what the registry's storage grew
    by, and the builds it reported."""
    fresh_builder(client, keep)
    # The publisher's own caches go too (pip's, the fetched wheels and .debs, the probed
    # interpreters, the smoke reports), as the careful loop's pip cache mount goes with the
    # builder's cache.
    for cache in (wheels.CACHE, wheels.STORE, debs.CACHE, target.CACHE, smoke.CACHE):
        shutil.rmtree(cache, ignore_errors=True)
    before = stored_bytes(storage)
    busy = busy_core_seconds(PROC_STAT.read_text())
    started = time.monotonic()
    with Sampler() as sampler:
        built = publish_with()
    seconds = time.monotonic() - started
    work = busy_core_seconds(PROC_STAT.read_text()) - busy
    parts = sampler.work(work)
    print(
        f"bench: {scenario:12} {method:9} {seconds:8.1f} s  {work:7.1f} core-s  built {built}"
        f"\nbench:   core-s by part: {parts.line()}",
        flush=True,
    )
    return Measure(
        scenario=scenario,
        method=method,
        seconds=round(seconds, 2),
        bytes_uploaded=stored_bytes(storage) - before,
        images_built=built,
        core_seconds=round(work, 1),
        work=parts.parts,
    )


def busy_core_seconds(proc_stat: str) -> float:
    """Core-seconds the machine has been busy since it booted, from /proc/stat's first
    line: user, nice, system, irq and softirq (guests count as user). Not idle or iowait,
    nor steal: the hypervisor gave that time to another machine."""
    fields = proc_stat.split("\n", 1)[0].split()
    if len(fields) < 8 or fields[0] != "cpu":
        raise ValueError(f"not /proc/stat: {proc_stat[:40]!r}")
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def fresh_builder(client: docker.DockerClient, keep_prefix: tuple[str, ...]) -> None:
    """Empty the builder: every image but the base images goes, with its layers."""
    for image in client.images.list(all=True):
        if any(tag.startswith(keep_prefix) for tag in image.tags):
            continue
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(image.id, force=True, noprune=False)
    # (images.prune(dangling=False) is not used: it would take the base images too.)
    with contextlib.suppress(docker.errors.APIError):
        client.api.prune_builds(all=True)


@dataclass(frozen=True, kw_only=True)
class Loop:
    """A per-cell loop: `docker build`, `docker tag`, `docker push` for every image."""

    dockerfile: str
    buildkit: bool
    cli: str = "docker"


# The seed-era CI jobs: gcc in every image, the classic builder.
NAIVE = Loop(dockerfile="naive.Dockerfile", buildkit=False)
# What a careful maintainer writes today: a lean Dockerfile built by BuildKit, with pip's
# download cache in a cache mount (Debian's docker CLI 20.10 drives the daemon's BuildKit
# with DOCKER_BUILDKIT=1; the newer CLI wants buildx).
CAREFUL = Loop(dockerfile="careful.Dockerfile", buildkit=True, cli="/usr/bin/docker")


def per_cell(loop: Loop, matrix_path: Path, destination: str, index_url: str) -> int:
    """Run ``loop`` over the plan's images; returns the number of builds."""
    matrix = load(matrix_path)
    env = {**os.environ, "DOCKER_BUILDKIT": "1" if loop.buildkit else "0"}
    built = 0
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        shutil.copy2(HERE / loop.dockerfile, context / "Dockerfile")
        shutil.copy2(matrix.dockerfiles / "entrypoint.sh", context / "entrypoint.sh")
        for image in plan(matrix).images:
            extras = f"[{','.join(image.extras)}]" if image.extras else ""
            ref = f"{destination}/{image.repository.rsplit('/', 1)[-1]}"
            first = f"{ref}:{image.tags[0].name}"
            subprocess.run(
                [
                    loop.cli,
                    "build",
                    "--quiet",
                    "--network",
                    "host",
                    "--build-arg",
                    f"BASE_IMAGE={image.base_image}",
                    "--build-arg",
                    f"PIP_INDEX_URL={index_url}",
                    "--build-arg",
                    f"PREFECT_REQUIREMENT=prefect{extras}=={image.prefect_version}",
                    "-t",
                    first,
                    str(context),
                ],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            built += 1
            for tag in image.tags:
                subprocess.run(["docker", "tag", first, f"{ref}:{tag.name}"], check=True)
                subprocess.run(
                    ["docker", "push", f"{ref}:{tag.name}"], check=True, stdout=subprocess.DEVNULL
                )
    return built


def ours(matrix_path: Path, destination: str, index_url: str, jobs: int, log: Path | None) -> int:
    """The publisher; its progress lines go to ``log`` (appended) when one is given."""
    matrix = load(matrix_path)
    options = Options(
        build=Settings(dockerfiles=matrix.dockerfiles, index=IndexOptions(index_url=index_url)),
        destination=Destination.parse(destination),
        jobs=jobs,
    )
    with open(log or os.devnull, "a") as stream:
        outcomes = publish(matrix, plan(matrix), options, Reporter(stream=stream)).outcomes
    failed = [o for o in outcomes if o.failed]
    if failed:
        raise SystemExit(f"publisher failed: {failed[0].image.id}: {failed[0].error}")
    return sum(1 for o in outcomes if o.status in (Status.PUSHED, Status.REPLACED))


def physical_limit(matrix_path: Path, base_image: str | None, upload_bytes: int) -> Limit:
    """tests/bench/limit.py on the bench matrix, with the bootstrap's wheelhouse."""
    boot = Bootstrap.load()
    wheelhouse = bootstrap_wheelhouse(boot)
    with tempfile.TemporaryDirectory() as tmp:
        data = yaml.safe_load(matrix_path.read_text())
        data["base_image"] = base_image or boot.base_image
        data["dockerfiles"] = str(ROOT / "dockerfiles")
        path = Path(tmp) / "matrix.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return measure_limit(path, wheelhouse, upload_bytes)


def refresh_base(client: docker.DockerClient, template: str, pythons: list[str]) -> None:
    """Give each base image a new identity: the same image with one more label."""
    for python in pythons:
        ref = template.format(python=python)
        client.images.build(
            fileobj=io.BytesIO(f"FROM {ref}\nLABEL refreshed={time.time()}\n".encode()),
            tag=ref,
            rm=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=Path, default=ROOT / "tests" / "e2e" / "matrix.yaml")
    parser.add_argument(
        "--index-url", help="default: an index of the tests' wheelhouse (needs .ci/bootstrap up)"
    )
    parser.add_argument("--base-image", help="default: the bootstrap's base images")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--sweep-jobs",
        type=int,
        nargs="+",
        metavar="N",
        help="then the publisher's cold run once per --jobs N, one after the other",
    )
    parser.add_argument("--output", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--log", type=Path, help="append the publisher's progress lines here")
    parser.add_argument(
        "--no-limit",
        dest="limit",
        action="store_false",
        help="do not measure the physical limit after the cold scenario",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=(*SCENARIOS, MULTI_PLATFORM),
        help=f"run only these scenarios (repeatable; default: all but {MULTI_PLATFORM})",
    )
    parser.add_argument(
        "--method",
        action="append",
        choices=METHODS,
        help="run only these methods (repeatable; default: all)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="publisher-bench-"))
    try:
        with index_and_base(work, args.index_url, args.base_image) as (index_url, base_image):
            wanted = args.scenario or SCENARIOS
            results = run(
                args.matrix,
                work,
                index_url,
                base_image,
                args.jobs,
                wanted,
                args.method or METHODS,
                args.log,
            )
            if MULTI_PLATFORM in wanted:
                results += multi_platform(args.matrix, work, index_url, args.jobs)
            for jobs in args.sweep_jobs or ():
                # A folder (so a registry) of its own: the release must not be there yet.
                sweep = work / f"sweep-{jobs}"
                sweep.mkdir()
                measures = run(
                    args.matrix,
                    sweep,
                    index_url,
                    base_image,
                    jobs,
                    ["cold"],
                    ["publisher"],
                    args.log,
                )
                results += [
                    replace(r, scenario=f"{SWEEP}{jobs}") for r in measures if r.scenario == "cold"
                ]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(report(results))
    if work_table := report_work(results):
        print(work_table)
    limit = None
    cold = next((r for r in results if (r.scenario, r.method) == ("cold", "publisher")), None)
    if cold is not None and args.limit:
        limit = physical_limit(args.matrix, args.base_image, cold.bytes_uploaded)
        print(
            f"physical limit (cold): {limit.environments} environments installed "
            f"{os.cpu_count()} at once in {limit.install_seconds:.1f} s + "
            f"{limit.upload_bytes / 1e6:.0f} MB at {limit.bandwidth / 1e6:.0f} MB/s "
            f"({limit.upload_seconds:.1f} s) = {limit.seconds:.1f} s; "
            f"the publisher's cold run is {cold.seconds / limit.seconds:.2f}x that"
        )
        print(
            f"with checks: the same installs with {limit.probes} smoke probes "
            f"({limit.ui_probes} starting the server) in {limit.checked_seconds:.1f} s + "
            f"{limit.upload_seconds:.1f} s = {limit.seconds_with_checks:.1f} s; "
            f"the publisher's cold run is {cold.seconds / limit.seconds_with_checks:.2f}x that"
        )
    if MULTI_PLATFORM in wanted:
        print(report_multi_platform(results))
    if args.sweep_jobs:
        print(report_sweep(results))
    if args.output:
        payload = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
            "matrix": str(args.matrix),
            "results": [asdict(r) for r in results],
            "limit": (
                {
                    **asdict(limit),
                    "seconds": limit.seconds,
                    "seconds_with_checks": limit.seconds_with_checks,
                }
                if limit
                else None
            ),
        }
        args.output.write_text(json.dumps(payload, indent=2))
    return 0


def run(
    matrix: Path,
    work: Path,
    index_url: str,
    base_image: str | None,
    jobs: int,
    wanted: tuple[str, ...] | list[str],
    only: tuple[str, ...] | list[str] = METHODS,
    log: Path | None = None,
) -> list[Measure]:
    """Every scenario by both methods; the figures."""
    client = docker.from_env(timeout=600)
    base = yaml.safe_load(matrix.read_text())
    versions = base["versions"]
    matrices = {}
    for name, chosen in (("all", versions), ("oldest", versions[:1])):
        data = {**base, "versions": chosen, "dockerfiles": str(ROOT / "dockerfiles")}
        if base_image:
            data["base_image"] = base_image
        path = work / f"matrix-{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        matrices[name] = path
    shared_base = data["base_image"]
    # The base-update scenario refreshes a base of its own, so the shared one stays as it is.
    own_base = "publisher-bench/python:{python}-slim"
    pythons = sorted({p for v in base["variants"].values() for p in v["pythons"]})
    for python in pythons:
        client.images.get(shared_base.format(python=python)).tag(
            "publisher-bench/python", f"{python}-slim"
        )
    for name, chosen in (("own-oldest", versions[:1]), ("own-all", versions)):
        data = {**base, "versions": chosen, "dockerfiles": str(ROOT / "dockerfiles")}
        data["base_image"] = own_base
        path = work / f"matrix-{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        matrices[name] = path
    keep = (shared_base.split("{", 1)[0], "publisher-bench/python:")

    methods: dict[str, Callable[[Path, str], int]] = {
        "naive": lambda m, d: per_cell(NAIVE, m, d, index_url),
        "careful": lambda m, d: per_cell(CAREFUL, m, d, index_url),
        "publisher": lambda m, d: ours(m, d, index_url, jobs, log),
    }
    results: list[Measure] = []

    def measure(scenario: str, method: str, matrix: Path, storage: Path, address: str) -> None:
        results.append(
            measured(
                client,
                keep,
                storage,
                scenario,
                method,
                lambda: methods[method](matrix, f"{address}/bench"),
            )
        )

    for method in [m for m in methods if m in only]:
        if {"cold-1", "incremental"} & set(wanted):
            storage = work / f"incremental-{method}"
            with registry(storage) as address:
                measure("cold-1", method, matrices["oldest"], storage, address)
                measure("incremental", method, matrices["all"], storage, address)
        if {"cold", "no-op"} & set(wanted):
            storage = work / f"cold-{method}"
            with registry(storage) as address:
                measure("cold", method, matrices["all"], storage, address)
                measure("no-op", method, matrices["all"], storage, address)
        if "base-update" in wanted:
            storage = work / f"base-update-{method}"
            with registry(storage) as address:
                # The release as it was: published by the same method, not measured.
                fresh_builder(client, keep)
                methods[method](matrices["own-oldest"], f"{address}/bench")
                refresh_base(client, own_base, pythons)
                measure("base-update", method, matrices["own-all"], storage, address)
    fresh_builder(client, keep)
    return results


def multi_platform(matrix: Path, work: Path, index_url: str, jobs: int) -> list[Measure]:
    """The multi-platform scenario: the same cells cold for one platform, then for two."""
    boot = Bootstrap.load()
    python = "3.13"
    images = {p: boot.platform_image(python, p) for p in ("linux/amd64", "linux/arm64")}
    client = docker.from_env(timeout=600)
    data = yaml.safe_load(matrix.read_text())
    data["versions"] = data["versions"][-1:]
    data["dockerfiles"] = str(ROOT / "dockerfiles")
    data["variants"] = {
        "core": {"pythons": [python]},
        "full": {"pythons": [python], "default_python": python, "extras": ["docker"]},
    }
    results = []
    storage = work / MULTI_PLATFORM
    with registry(storage) as address:
        base = push_base_index(client, address, images, tag=f"{python}-slim")
        data["base_image"] = base.reference.rsplit(":", 1)[0] + ":{python}-slim"
        keep = tuple(sorted({i.split(":", 1)[0] + ":" for i in images.values()}))
        for platforms in (["linux/amd64"], ["linux/amd64", "linux/arm64"]):
            path = work / f"matrix-{len(platforms)}-platforms.yaml"
            path.write_text(yaml.safe_dump({**data, "platforms": platforms}, sort_keys=False))
            destination = f"{address}/bench-{len(platforms)}"
            results.append(
                measured(
                    client,
                    keep,
                    storage,
                    MULTI_PLATFORM,
                    f"publisher {' + '.join(platforms)}",
                    functools.partial(ours, path, destination, index_url, jobs, None),
                )
            )
    fresh_builder(client, keep)
    return results


def report_multi_platform(results: list[Measure]) -> str:
    one, both = [r for r in results if r.scenario == MULTI_PLATFORM]
    second = both.seconds - one.seconds
    return tabulate(
        [
            (one.method, f"{one.seconds:.1f}", f"{one.bytes_uploaded / 1e6:.1f}"),
            (both.method, f"{both.seconds:.1f}", f"{both.bytes_uploaded / 1e6:.1f}"),
            ("second platform / first", f"{second / one.seconds:.2f}", ""),
        ],
        headers=("multi-platform, cold", "seconds", "MB up"),
        disable_numparse=True,
    )


def report_sweep(results: list[Measure]) -> str:
    """The cold run's seconds per --jobs, and each against the fastest."""
    runs = [r for r in results if r.scenario.startswith(SWEEP)]
    fastest = min(r.seconds for r in runs)
    return tabulate(
        [
            (r.scenario.removeprefix(SWEEP), f"{r.seconds:.1f}", _ratio(r.seconds, fastest))
            for r in runs
        ],
        headers=("cold, --jobs", "seconds", "x fastest"),
        disable_numparse=True,
    )


def report(results: list[Measure]) -> str:
    """One row per scenario: each method's seconds and bytes, and the publisher's ratio to
    each baseline measured in the same run."""
    by = {(r.scenario, r.method): r for r in results}
    baselines = [m for m in BASELINES if any(r.method == m for r in results)]
    headers = ["scenario", "publisher s", "publisher MB up", "publisher core-s"]
    for method in baselines:
        headers += [f"{method} s", f"time x{method}", f"bytes x{method}", f"core-s x{method}"]
    rows = []
    for scenario in SCENARIOS:
        ours_r = by.get((scenario, "publisher"))
        if ours_r is None:
            continue
        row = [
            scenario,
            f"{ours_r.seconds:.1f}",
            f"{ours_r.bytes_uploaded / 1e6:.1f}",
            f"{ours_r.core_seconds:.0f}",
        ]
        for method in baselines:
            other = by.get((scenario, method))
            if other is None:
                row += ["-"] * 4
                continue
            row += [
                f"{other.seconds:.1f}",
                _ratio(ours_r.seconds, other.seconds),
                _ratio(ours_r.bytes_uploaded, other.bytes_uploaded),
                _ratio(ours_r.core_seconds, other.core_seconds),
            ]
        rows.append(row)
    return tabulate(rows, headers=headers, disable_numparse=True)


def report_work(results: list[Measure]) -> str:
    """Where each run's core-seconds went: one column per run, one row per part."""
    runs = [r for r in results if r.work and r.core_seconds >= 1]
    if not runs:
        return ""
    headers = ["core-s by part", *(f"{r.scenario} {r.method}" for r in runs)]
    rows = [
        [part, *(f"{r.work.get(part, 0.0):.0f}" for r in runs)]
        for part in PARTS
        if any(r.work.get(part, 0.0) >= 0.5 for r in runs)
    ]
    rows.append(["all", *(f"{r.core_seconds:.0f}" for r in runs)])
    return tabulate(rows, headers=headers, disable_numparse=True)


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.3f}" if theirs else "-"


if __name__ == "__main__":
    sys.exit(main())

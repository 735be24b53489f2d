"""What a nightly's source costs: the fetch, and the UI build with a cold and a warm npm cache.

    python -m tests.bench.nightly_costs [--bundle PATH] [--no-ui]

The source is a clone of the upstream bundle (shared/upstream beside this checkout, or
PUBLISHER_UPSTREAM_BUNDLE), served over file:// by `git upload-pack` as a remote would be.
A local upload-pack ignores --filter unless uploadpack.allowFilter is set (GitHub allows
filters), so the filtered fetches are measured with it set, and once without it, which is
what a nightly from a plain local clone gets. Each fetch ends with the checkout of the
commit, which is when a partial clone fetches the trees and blobs it left out.
Prints a Markdown table; no Docker needed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from publisher import ui

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT.parent / "shared" / "upstream" / "prefect-main-3.8.4.dev6.bundle"
ALLOW_FILTER = "git -c uploadpack.allowFilter=true upload-pack"

# name -> (fetch options, whether the source allows filters, partialclonefilter to record)
MODES: dict[str, tuple[Sequence[str], bool, str | None]] = {
    "treeless + tags (`--filter=tree:0 --tags`, what the nightly does)": (
        ["--filter=tree:0", "--tags"],
        True,
        "tree:0",
    ),
    "blobless + tags (`--filter=blob:none --tags`)": (
        ["--filter=blob:none", "--tags"],
        True,
        "blob:none",
    ),
    "one commit (`--depth 1`, no tags)": (["--depth", "1"], True, None),
    "treeless + tags, source without uploadpack.allowFilter": (
        ["--filter=tree:0", "--tags"],
        False,
        "tree:0",
    ),
}


def git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fetch(source: Path, sha: str, work: Path, name: str) -> tuple[float, int, str]:
    options, allow_filter, partial = MODES[name]
    checkout = work / "checkout"
    shutil.rmtree(checkout, ignore_errors=True)
    git("init", "--quiet", str(checkout))
    git("remote", "add", "origin", source.as_uri(), cwd=checkout)
    if partial:
        git("config", "remote.origin.promisor", "true", cwd=checkout)
        git("config", "remote.origin.partialclonefilter", partial, cwd=checkout)
    if allow_filter:
        git("config", "remote.origin.uploadpack", ALLOW_FILTER, cwd=checkout)
    started = time.monotonic()
    git("fetch", "--quiet", *options, "origin", sha, cwd=checkout)
    git("checkout", "--quiet", sha, cwd=checkout)
    seconds = time.monotonic() - started
    described = git("describe", "--tags", "--always", cwd=checkout)
    return seconds, size(checkout / ".git" / "objects"), described


def ui_build(source: Path, work: Path, cache: Path) -> float:
    checkout = work / "ui-checkout"
    shutil.rmtree(checkout, ignore_errors=True)
    git("clone", "--quiet", str(source), str(checkout))
    started = time.monotonic()
    ui.build(checkout, cache=cache)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bundle", type=Path, default=os.environ.get("PUBLISHER_UPSTREAM_BUNDLE", BUNDLE)
    )
    parser.add_argument("--no-ui", action="store_true", help="measure the fetches only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nightly-costs-") as tmp:
        work = Path(tmp)
        source = work / "source"
        git("clone", "--quiet", str(args.bundle), str(source))
        sha = git("rev-parse", "HEAD", cwd=source)
        print(
            f"source: {args.bundle} at {sha[:12]},"
            f" {size(source / '.git' / 'objects')} bytes of objects"
        )
        print()
        print("| fetch | seconds (median of 3) | .git/objects bytes | git describe |")
        print("|---|---:|---:|---|")
        for name in MODES:
            # The median of three: one fetch is well under a second and the machine is noisy.
            runs = sorted((fetch(source, sha, work, name) for _ in range(3)), key=lambda r: r[0])
            seconds, stored, described = runs[1]
            print(f"| {name} | {seconds:.2f} | {stored:,} | {described} |")
        if args.no_ui:
            return
        print()
        print("| UI build (both projects, npm ci + npm run build) | seconds |")
        print("|---|---:|")
        cache = work / "cache"
        # Node itself comes from the usual cache: only npm's cache starts cold.
        (cache / "node").parent.mkdir(parents=True, exist_ok=True)
        (ui.CACHE / "node").mkdir(parents=True, exist_ok=True)
        (cache / "node").symlink_to(ui.CACHE / "node")
        print(f"| cold npm cache (empty) | {ui_build(source, work, cache):.1f} |")
        print(f"| warm npm cache (the cold run's) | {ui_build(source, work, cache):.1f} |")


if __name__ == "__main__":
    main()

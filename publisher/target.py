"""The interpreter an image's packages are for, read once from its image, so that pip on the
daemon's own platform can resolve and install them for another platform.

Under QEMU user emulation a linux/arm64 build spent 20 minutes in pip: resolving, unpacking
and byte-compiling 102 wheels. None of that depends on the platform: a .pyc depends on the
Python version only, and pip's choice of wheels depends on two things it reads from the
interpreter running it, the wheel tags it accepts and the PEP 508 marker environment
(``platform_machine``...). So those are read from the foreign image, one short emulated
Python start, and a native pip of the same Python is told to use them (``PIP_WRAPPER``).

pip's own ``--platform``/``--abi`` options cannot do it: they set the tags only, markers are
still evaluated for the running interpreter (pypa/pip#6117, #11010), and pip refuses them
for an installation unless it is ``--target`` (which lays out scripts as TARGET/bin). With
the tags and markers replaced, a plain ``pip install --root`` on the native image of the
same base tag writes the tree the foreign image's pip would: same scheme, same script
shebangs, same byte code. ``check_same`` refuses a native image that differs in Python or
layout.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
from packaging.utils import canonicalize_name

from . import cache, docker_client
from .errors import BuildError

CACHE = cache.folder("interpreters")  # what images said, by image id

# Runs in the image with its own Python. pip's vendored packaging gives the marker keys pip
# evaluates; compatibility_tags.get_supported() is the tag list pip itself uses. Only what
# these need is imported: under QEMU every import costs.
_PROBE = r"""
import json, sys, sysconfig
from importlib import metadata
from pip._vendor.packaging import markers
from pip._internal.utils.compatibility_tags import get_supported
PIP_PYTHON
paths = sysconfig.get_paths()
print(json.dumps({
    "markers": markers.default_environment(),
    "tags": [str(tag) for tag in get_supported()],
    "layout": {
        "pip runs on": pip_python(),
        **{key: paths[key] for key in ("purelib", "platlib", "scripts", "data")},
    },
    "installed": {d.metadata["Name"]: d.version for d in metadata.distributions()},
}))
"""

# Runs pip (the arguments after the first) on the native image as if it ran in the foreign
# one whose probe is the JSON file named first (``{}``: pip's own). Marker.evaluate looks
# default_environment up at each call, and every tag check goes through
# TargetPython.get_sorted_tags (get_unsorted_tags caches it).
#
# Whatever the target, byte code records its source's mtime (and pip extracts with the time
# of the installation), so each source gets EPOCH before it is compiled: the layer archive
# gives every file EPOCH (assemble.archive_layer), and byte code that recorded any
# other time would be stale in the image. The same wheels then make the same layer bytes.
PIP_WRAPPER = r"""
import compileall, json, os, sys
PIP_PYTHON
sys.executable = pip_python()
with open(sys.argv[1]) as file:
    target = json.load(file)
if target:
    from pip._vendor.packaging import markers
    from pip._vendor.packaging.tags import parse_tag
    from pip._internal.models.target_python import TargetPython
    own = markers.default_environment()
    markers.default_environment = lambda: {**own, **target["markers"]}
    tags = [tag for text in target["tags"] for tag in parse_tag(text)]
    TargetPython.get_sorted_tags = lambda self: list(tags)
    TargetPython.get_tags = TargetPython.get_sorted_tags  # pip before 22.3
compile_file = compileall.compile_file
def fixed_mtime_compile(fullname, *args, **kwargs):
    os.utime(fullname, (EPOCH, EPOCH))
    return compile_file(fullname, *args, **kwargs)
compileall.compile_file = fixed_mtime_compile
from pip._internal.cli.main import main
sys.exit(main(sys.argv[2:]))
"""
# 1980-01-01T00:00:00Z, the earliest time a wheel (a zip file) can record.
EPOCH = 315532800

# The interpreter the image's `pip` command runs on, from its shebang (/usr/bin/python3 in
# Debian, /usr/local/bin/python3 in python:X.Y-slim): pip writes it into the scripts it
# installs (sys.executable), and the wrapper, started as `python`, must write the same.
_PIP_PYTHON = r"""
def pip_python():
    import shutil
    pip = shutil.which("pip")
    try:
        with open(pip, "rb") as file:
            line = file.readline().decode()
    except (OSError, TypeError, UnicodeDecodeError):
        return sys.executable
    words = line[2:].split() if line.startswith("#!") else []
    return words[0] if len(words) == 1 and "python" in words[0] else sys.executable
"""
PIP_WRAPPER = PIP_WRAPPER.replace("EPOCH", str(EPOCH)).replace("PIP_PYTHON", _PIP_PYTHON)
_PROBE = _PROBE.replace("PIP_PYTHON", _PIP_PYTHON)


@dataclass(frozen=True, kw_only=True)
class Interpreter:
    """What pip needs to know of an image's Python to install for it."""

    markers: Mapping[str, str]  # PEP 508 marker environment
    tags: tuple[str, ...]  # wheel tags pip accepts, most preferred first
    layout: Mapping[str, str]  # sys.executable and the sysconfig install paths
    installed: Mapping[str, str]  # canonical project name -> version

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Interpreter:
        return cls(
            markers={str(k): str(v) for k, v in document["markers"].items()},
            tags=tuple(str(t) for t in document["tags"]),
            layout={str(k): str(v) for k, v in document["layout"].items()},
            installed={canonicalize_name(str(k)): str(v) for k, v in document["installed"].items()},
        )

    @property
    def python(self) -> str:
        return self.markers.get("python_full_version", "?")


@dataclass(frozen=True, kw_only=True)
class Target:
    """A foreign image's interpreter, and the native image's whose pip installs for it."""

    platform: str  # the foreign one ("linux/arm64")
    native_platform: str
    foreign: Interpreter
    native: Interpreter

    def to_json(self) -> str:
        """What PIP_WRAPPER reads: the foreign markers and tags."""
        return json.dumps({"markers": dict(self.foreign.markers), "tags": list(self.foreign.tags)})


def read(client: docker.DockerClient, image: str, platform: str) -> Interpreter:
    """Probe ``image``'s Python (emulated when ``platform`` is foreign: one Python start).

    What an image says is kept on disk under its image id, which names its content: under
    QEMU each probe is a Python start of 20 to 60 s, and every run of a multi-platform
    release would otherwise probe the same bases again."""
    cached = CACHE / f"{docker_client.image_id(client, image).replace(':', '-')}.json"
    try:
        return Interpreter.from_json(cache.read_json(cached))
    except (ValueError, LookupError, AttributeError, TypeError):
        pass  # not probed yet (or a damaged entry): probe it
    found = _probe(client, image, platform)
    cache.write_json(cached, dataclasses.asdict(found))
    return found


def _probe(client: docker.DockerClient, image: str, platform: str) -> Interpreter:
    code, output = docker_client.run(client, image, ["python", "-c", _PROBE], network_mode="none")
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if code != 0 or not lines:
        last = output.strip().splitlines()[-1:] or ["no output"]
        raise BuildError(f"cannot read the {platform} Python of {image}: {last[0]}")
    try:
        return Interpreter.from_json(json.loads(lines[-1]))
    except (ValueError, LookupError, AttributeError) as exc:
        raise BuildError(
            f"the {platform} Python of {image} described itself oddly: {exc!r}"
        ) from None


def check_same(native: Interpreter, foreign: Interpreter, *, what: str) -> None:
    """Refuse to install for ``foreign`` with a native image whose Python or layout differs:
    its byte code or paths would be wrong there. ``what`` names the two images."""
    if native.python != foreign.python:
        raise BuildError(
            f"{what}: the native image has Python {native.python}, the foreign one "
            f"{foreign.python}; byte code is per Python version"
        )
    differ = sorted(k for k in foreign.layout if native.layout.get(k) != foreign.layout[k])
    if differ:
        key = differ[0]
        raise BuildError(
            f"{what}: {key} is {native.layout.get(key)} natively but {foreign.layout[key]} "
            "on the foreign platform"
        )


def constraints(parent: Interpreter, native: Interpreter, exclude: tuple[str, ...]) -> list[str]:
    """Pins that make a native resolution keep what the foreign ``parent`` image has and the
    native image lacks (a core's packages, when resolving its extras): in the parent, pip
    would have kept them."""
    skip = {canonicalize_name(name) for name in exclude}
    return [
        f"{name}=={version}"
        for name, version in sorted(parent.installed.items())
        if native.installed.get(name) != version and name not in skip
    ]

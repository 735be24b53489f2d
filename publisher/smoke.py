"""Smoke tests: run a built image and check it is the image the plan asked for.

One container per image, started through the image's own entrypoint (tini and
entrypoint.sh) and waited for: a test started detached can never fail. Inside it a
probe runs `prefect version` (so the CLI really starts), reads what PID 1 is, asks the
image's own Python for its version and for which extras' packages are installed, and
prints all of it as one JSON document. The checks on that report are pure functions.

The UI, what most users of the image start it for, is checked the way they use it: the
probe looks for the installed bundles (``prefect/server/ui``, ``prefect/server/ui-v2``)
and, when there are any, runs `prefect server start` on 127.0.0.1 with a throwaway
PREFECT_HOME and asks it for ``/`` with Python's urllib, as a browser would, for a bounded
time. The container has no network but its own loopback, so no port is published and none
can collide. Whether a missing UI is a failure is decided from the image's labels
(`ui_check`): a nightly whose UI was built must have it, one built with --no-ui is not
checked, and a release is checked when its wheel carries the bundles (Prefect 3 does,
Prefect 0.14 had no server UI).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from . import cache, docker_client, labels
from .errors import BuildError

REPORT_MARKER = "publisher-smoke-report: "

# How the UI is checked (the probe's --ui=MODE).
UI_REQUIRED = "required"  # bundles must be there and served
UI_IF_PRESENT = "if-present"  # served when there are bundles; none is no failure
UI_SKIP = "skip"  # not looked at
UI_MODES = (UI_REQUIRED, UI_IF_PRESENT, UI_SKIP)
# How long `prefect server start` may take to answer: it migrates a fresh SQLite database
# first, 27-35 s on a 2-core machine at load 6 and 60 s at load 8 (docs/benchmarks.md);
# at 90 s every image of three concurrent e2e sessions timed out. Bounded so that a server
# that never answers fails the test; only such a failure waits this long.
UI_TIMEOUT = 180
BUNDLES = ("ui", "ui-v2")  # under prefect/server, as upstream's wheels install them
CACHE = cache.folder("smoke")  # reports of probes that passed (see `check`)

# Runs inside the image with its own Python, as the container's command. pip vendors
# `packaging`, so the extra markers of prefect's requirements are evaluated exactly as
# pip evaluated them. It always prints a report; the checks decide what is wrong.
_PROBE = r"""
import json, os, platform, subprocess, sys, time

def read(path, binary=False):
    try:
        with open(path, "rb" if binary else "r") as file:
            return file.read()
    except OSError:
        return b"" if binary else ""

class PrefectVersion:
    # Started first and collected last: the CLI's start (its ~1,400 imports, 5 s natively and
    # minutes under QEMU) runs while this process does the other checks on the other core.
    def __init__(self, package):
        # prefect-client installs the `prefect` module but no `prefect` command.
        command = ["prefect", "version"]
        if package != "prefect":
            show = "import prefect; print('Version: ' + prefect.__version__)"
            command = [sys.executable, "-c", show]
        self.error = None
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True,
            )
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def result(self):
        if self.error is None:
            try:
                output, _ = self.process.communicate(timeout=600)
                return {"code": self.process.returncode, "output": output}
            except subprocess.SubprocessError as exc:
                self.process.kill()
                self.error = f"{type(exc).__name__}: {exc}"
        return {"code": 127, "output": self.error}

def extras(wanted, package):
    from importlib import metadata
    from pip._vendor.packaging.requirements import Requirement

    def installed(name):
        try:
            metadata.distribution(name)
            return True
        except metadata.PackageNotFoundError:
            return False

    requirements = [Requirement(r) for r in (metadata.requires(package) or [])]
    base = {
        r.name.lower() for r in requirements
        if r.marker is None or r.marker.evaluate({"extra": ""})
    }
    report = {}
    for extra in wanted:
        names = sorted({
            r.name for r in requirements
            if r.marker is not None and r.marker.evaluate({"extra": extra})
            and not r.marker.evaluate({"extra": ""}) and r.name.lower() not in base
        })
        report[extra] = {"packages": names, "installed": [n for n in names if installed(n)]}
    return report

def server_dir():
    import importlib.util
    spec = importlib.util.find_spec("prefect")
    return os.path.join(os.path.dirname(spec.origin), "server")

class Server:
    # `prefect server start` on a free loopback port with a throwaway PREFECT_HOME. Started
    # before the other checks run, so that it boots meanwhile.
    def __init__(self):
        import socket, tempfile  # only here: every import costs under QEMU
        self.home = tempfile.mkdtemp(prefix="prefect-home-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = dict(os.environ, PREFECT_HOME=self.home, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        self.log = open(os.path.join(self.home, "server.log"), "w+")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            ["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )

    def get(self, timeout):
        # Poll `GET /` until it answers or ``timeout`` s after the start; then stop the server.
        import urllib.error, urllib.request
        found = {"status": None, "error": "no answer within %d s" % timeout}
        try:
            while time.monotonic() - self.started < timeout:
                if self.process.poll() is not None:
                    found["error"] = "exited with %d before it answered" % self.process.returncode
                    break
                request = urllib.request.Request(
                    "http://127.0.0.1:%d/" % self.port, headers={"Accept": "text/html"}
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        status, url, headers = response.status, response.geturl(), response.headers
                        body = response.read(65536)
                except urllib.error.HTTPError as exc:
                    status, url, headers = exc.code, exc.geturl(), exc.headers
                    body = exc.read(65536)
                except (OSError, ValueError):
                    time.sleep(0.5)  # not listening yet
                    continue
                found = {
                    "status": status,
                    "url": url,
                    "content_type": headers.get("Content-Type", ""),
                    "body": body.decode("utf-8", "replace"),
                }
                break
        finally:
            found["seconds"] = round(time.monotonic() - self.started, 2)
            self.stop()
            self.log.seek(0)
            found["output"] = self.log.read()[-4000:]
        return found

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

def ui_bundles(mode):
    bundles = {}
    if mode != "skip":
        server = server_dir()
        for name in BUNDLES:
            folder = os.path.join(server, name)
            if os.path.isdir(folder):
                bundles[name] = read(os.path.join(folder, "index.html"))
    return bundles

args = sys.argv[1:]
ui_mode = args.pop(0).split("=", 1)[1] if args and args[0].startswith("--ui=") else "skip"
package = args.pop(0).split("=", 1)[1] if args and args[0].startswith("--package=") else "prefect"
version = PrefectVersion(package)
ui_report, server = {"bundles": {}, "served": None}, None
try:
    ui_report["bundles"] = ui_bundles(ui_mode)
    if any(ui_report["bundles"].values()):
        server = Server()
except Exception as exc:
    ui_report = None
    ui_error = f"{type(exc).__name__}: {exc}"
cmdline = read("/proc/1/cmdline", binary=True).split(b"\0")
report = {
    "pid1": {
        "cmdline": [arg.decode("utf-8", "replace") for arg in cmdline if arg],
        "comm": read("/proc/1/comm").strip(),
    },
    "python": platform.python_version(),
    "machine": platform.machine(),
    "extras": {},
}
if args:
    try:
        report["extras"] = extras(args, package)
    except Exception as exc:
        report["extras_error"] = f"{type(exc).__name__}: {exc}"
report["prefect"] = version.result()
if server is not None:
    try:
        ui_report["served"] = server.get(UI_TIMEOUT)
    except Exception as exc:
        server.stop()
        ui_report, ui_error = None, f"{type(exc).__name__}: {exc}"
if ui_report is None:
    report["ui_error"] = ui_error
else:
    report["ui"] = ui_report
print(MARKER + json.dumps(report), flush=True)
"""
_PROBE = (
    _PROBE.replace("MARKER", repr(REPORT_MARKER))
    .replace("UI_TIMEOUT", str(UI_TIMEOUT))
    .replace("BUNDLES", repr(BUNDLES))
)

_VERSION_LINE = re.compile(r"^\s*Version:\s*(\S+)", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class SmokeResult:
    prefect_version: str
    python_version: str
    machine: str = ""
    ui: str = ""  # what the UI check found, for the progress line ("UI served in 9 s")
    earlier: bool = False  # answered by the kept report of an earlier run (see `check`)


@dataclass(frozen=True, kw_only=True)
class Extra:
    packages: tuple[str, ...]  # what prefect declares for the extra beyond its core
    installed: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Report:
    """What the probe saw inside the container."""

    pid1: str  # the program name of PID 1
    python_version: str
    machine: str  # platform.machine(): the architecture the image's code runs as
    prefect_exit_code: int
    prefect_output: str
    extras: Mapping[str, Extra]
    extras_error: str | None = None
    ui: UiReport | None = None  # None: the probe's UI part failed to run (ui_error says why)
    ui_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class Served:
    """What `prefect server start` answered to `GET /` (``status`` None: it never did)."""

    status: int | None
    seconds: float  # from starting the server to its answer (or giving up)
    error: str = ""  # why there is no answer
    url: str = ""  # after redirects (Prefect 3 sends `/` on to the preferred UI's base)
    content_type: str = ""
    body: str = ""
    output: str = ""  # the end of the server's output


@dataclass(frozen=True, kw_only=True)
class UiReport:
    bundles: Mapping[str, str]  # bundle found under prefect/server -> its index.html ("": none)
    served: Served | None  # None: the server was not started


def ui_check(image_labels: Mapping[str, str]) -> str:
    """How to check an image's UI, from its labels.

    A nightly records whether its UI was built: built means the bundles must be there (a
    UI build that did not reach the image fails before anything is pushed), skipped
    (--no-ui) means there is nothing to look for. Anything else (a release, or a nightly
    of a source without UI projects, such as an sdist that ships built bundles) is checked
    when the installed prefect carries bundles: Prefect 3's wheels do, 0.14's have none.
    """
    state = image_labels.get(labels.UI)
    if state == labels.UI_BUILT:
        return UI_REQUIRED
    if state == labels.UI_SKIPPED:
        return UI_SKIP
    return UI_IF_PRESENT


def check(
    client: docker.DockerClient,
    image: str,
    *,
    python: str,
    prefect_version: str | None,
    extras_present: Sequence[str],
    extras_absent: Sequence[str],
    ui: str,
    machine: str | None = None,
    package: str = "prefect",
    reuse: bool = False,
    on_probe: Callable[[], None] | None = None,
) -> SmokeResult:
    """Raise BuildError naming the first check that fails.

    ``prefect_version`` None accepts whatever version the image reports (nightly builds
    learn their version from the build). ``ui`` is one of UI_MODES (see ``ui_check``).
    ``package`` is the distribution installed: prefect-client has no `prefect` command, so
    its version is read from the module, and its extras from its own metadata.

    The report of a probe that passed is kept, by image id and probe. With ``reuse``, a kept
    report that passes these checks answers without running the image (the result says
    ``earlier``): an image id names the image's content and the probe reads nothing else
    (no network, a fresh PREFECT_HOME), so the same probe of the same image reports the
    same. A run that publishes images built and tested before (a resumed release, a shard
    run again, a push that failed) then does not start prefect's CLI and server again:
    20 s an image natively, minutes under QEMU. A failure, or a server too slow under load,
    is never kept. ``on_probe`` is called before the image is run.
    """
    command = probe_command(ui, package, extras_present, extras_absent)
    entry = _entry(client, image, command)

    def judged(kept: Any) -> SmokeResult:
        return verify(
            parse_report(int(kept["code"]), str(kept["output"])),
            python=python,
            prefect_version=prefect_version,
            extras_present=extras_present,
            extras_absent=extras_absent,
            ui=ui,
            machine=machine,
        )

    if reuse:
        try:
            kept = cache.read_json(entry)
            return dataclasses.replace(judged(kept), earlier=True)
        except (BuildError, TypeError, LookupError, ValueError):
            pass  # none kept, damaged, or asked other questions of the image: probe it
    if on_probe is not None:
        on_probe()
    code, output = docker_client.run(
        client,
        image,
        command,
        # Nothing the probe does needs a network: the server it starts answers on the
        # container's own loopback, so its port can collide with nothing on the host.
        network_mode="none",
    )
    result = judged({"code": code, "output": output})
    cache.write_json(entry, {"code": code, "output": output})
    return result


def probe_command(
    ui: str, package: str, extras_present: Sequence[str], extras_absent: Sequence[str]
) -> list[str]:
    """The probe's command line: run it in an image and read its output with
    ``parse_report``."""
    if ui not in UI_MODES:
        raise ValueError(f"unknown UI check {ui!r}")
    return [
        *("python", "-c", _PROBE, f"--ui={ui}", f"--package={package}"),
        *extras_present,
        *extras_absent,
    ]


def _entry(client: docker.DockerClient, image: str, command: Sequence[str]) -> Path:
    """Where the report of ``command`` run in ``image`` is kept: under the image's id and the
    probe's whole command line, so a changed probe never reads an old one's report."""
    key = hashlib.sha256(json.dumps(list(command)).encode()).hexdigest()[:32]
    image_id = docker_client.image_id(client, image).removeprefix("sha256:")
    return CACHE / f"{image_id}-{key}.json"


def parse_report(code: int, output: str) -> Report:
    """The probe's report from the container's exit code and output."""
    lines = [line for line in output.splitlines() if line.startswith(REPORT_MARKER)]
    if code != 0 or not lines:
        raise BuildError(f"the smoke probe exited with {code}: {_last_line(output)}")
    try:
        document: dict[str, Any] = json.loads(lines[-1].removeprefix(REPORT_MARKER))
        cmdline, comm = document["pid1"]["cmdline"], document["pid1"]["comm"]
        return Report(
            pid1=_program(cmdline) if cmdline else str(comm),
            python_version=str(document["python"]),
            machine=str(document.get("machine", "")),
            prefect_exit_code=int(document["prefect"]["code"]),
            prefect_output=str(document["prefect"]["output"]),
            extras={
                str(name): Extra(
                    packages=tuple(entry["packages"]), installed=tuple(entry["installed"])
                )
                for name, entry in document["extras"].items()
            },
            extras_error=document.get("extras_error"),
            ui=_ui_report(document["ui"]) if "ui" in document else None,
            ui_error=document.get("ui_error"),
        )
    except (ValueError, LookupError, TypeError, AttributeError) as exc:
        raise BuildError(f"the smoke probe's report is malformed: {exc!r}") from None


def _ui_report(document: Mapping[str, Any]) -> UiReport:
    served = document["served"]
    return UiReport(
        bundles={str(name): str(index) for name, index in document["bundles"].items()},
        served=None
        if served is None
        else Served(
            status=None if served["status"] is None else int(served["status"]),
            seconds=float(served["seconds"]),
            error=str(served.get("error", "")) if served["status"] is None else "",
            url=str(served.get("url", "")),
            content_type=str(served.get("content_type", "")),
            body=str(served.get("body", "")),
            output=str(served.get("output", "")),
        ),
    )


def verify(
    report: Report,
    *,
    python: str,
    prefect_version: str | None,
    extras_present: Sequence[str],
    extras_absent: Sequence[str],
    ui: str = UI_SKIP,
    machine: str | None = None,
) -> SmokeResult:
    """Raise BuildError naming the first check the report fails.

    ``machine`` is the ``platform.machine()`` the image must report (None: any).
    """
    if not report.pid1.startswith("tini"):
        raise BuildError(
            f"PID 1 is {report.pid1 or 'unknown'!r}, not tini: the entrypoint does not start "
            "through tini"
        )
    reported = _prefect_version(report)
    if prefect_version is not None and reported != prefect_version:
        raise BuildError(f"`prefect version` reports {reported}, expected {prefect_version}")

    actual = report.python_version
    if not (actual == python or actual.startswith(python + ".")):
        raise BuildError(f"`python` in the image is Python {actual}, expected Python {python}")
    if machine is not None and report.machine != machine:
        raise BuildError(
            f"the image runs as {report.machine or 'an unknown machine'}, expected {machine}"
        )

    if (extras_present or extras_absent) and report.extras_error is not None:
        raise BuildError(f"extras check failed to run: {report.extras_error}")
    for extra in extras_present:
        found = report.extras[extra]
        if not found.packages:
            raise BuildError(f"prefect declares no packages for extra {extra!r}")
        missing = sorted(set(found.packages) - set(found.installed))
        if missing:
            raise BuildError(f"extra {extra!r} is missing {', '.join(missing)}")
    for extra in extras_absent:
        present = report.extras[extra].installed
        if present:
            raise BuildError(
                f"a core image must not carry extra {extra!r}, but has {', '.join(present)}"
            )
    return SmokeResult(
        prefect_version=reported,
        python_version=actual,
        ui=verify_ui(report, ui),
        machine=report.machine,
    )


# The entry script of a built UI's index.html (Vite writes one module script per page).
_ENTRY_SCRIPT = re.compile(r"<script\b[^>]*\btype=[\"']module[\"'][^>]*\bsrc=[\"']([^\"']+)[\"']")
# The element a UI mounts into (`<div id="app">` in ui, `<div id="root">` in ui-v2): what
# identifies the page when its index.html loads no module script.
_MOUNT_POINT = re.compile(r"<div\s+id=[\"'](app|root)[\"']")


def verify_ui(report: Report, mode: str) -> str:
    """Raise BuildError when the UI check fails; else say what was checked."""
    if mode == UI_SKIP:
        return "UI not checked"
    if report.ui is None:
        raise BuildError(f"the UI check failed to run: {report.ui_error or 'no report'}")
    bundles = report.ui.bundles
    for name, index in bundles.items():
        if not index.strip():
            raise BuildError(f"the UI bundle prefect/server/{name} has no index.html")
    if not bundles:
        if mode == UI_REQUIRED:
            raise BuildError(
                "the image has no UI bundles (prefect/server/ui, prefect/server/ui-v2), "
                f"but its UI was built ({labels.UI}={labels.UI_BUILT})"
            )
        return "no UI"
    served = report.ui.served
    if served is None:
        raise BuildError("the UI check did not start `prefect server start`")
    if served.status is None:
        raise BuildError(
            f"`prefect server start` did not serve the UI: {served.error}; "
            f"its output ends: {_last_line(served.output)}"
        )
    if served.status != 200:
        raise BuildError(f"GET / from `prefect server start` answered {served.status}")
    if "text/html" not in served.content_type.lower():
        raise BuildError(f"GET / answered {served.content_type or 'no content type'}, not HTML")
    if not _serves_a_bundle(served.body, bundles.values()):
        raise BuildError(
            f"GET / answered a page that is none of the UI bundles' index.html "
            f"({served.url}: {_first_words(served.body)})"
        )
    return f"UI served in {served.seconds:.0f}s ({', '.join(sorted(bundles))})"


def _serves_a_bundle(body: str, indexes: Iterable[str]) -> bool:
    """Whether ``body`` is one of the bundles' index.html, as the server rewrites it.

    The server replaces the base-path placeholder in the copy it serves, so the page is
    recognised by the file name of its entry script (content-hashed by the UI's build).
    """
    for index in indexes:
        entries = {os.path.basename(src) for src in _ENTRY_SCRIPT.findall(index)}
        if entries and any(os.path.basename(src) in entries for src in _ENTRY_SCRIPT.findall(body)):
            return True
        if not entries and _MOUNT_POINT.search(index) and _MOUNT_POINT.search(body):
            return True
    return False


def _first_words(text: str, limit: int = 80) -> str:
    words = " ".join(text.split())
    return words[:limit] + ("..." if len(words) > limit else "") if words else "(empty)"


def _program(cmdline: list[str]) -> str:
    """The program a command line runs. Under QEMU user emulation (binfmt_misc with the P
    flag, as qemu-user-static registers it) the kernel starts the emulator with the
    program's path and its own argv[0] after it: PID 1 of an emulated container reads
    `/usr/libexec/qemu-binfmt/aarch64-binfmt-P /usr/bin/tini tini -g ...`."""
    name = os.path.basename(cmdline[0])
    if (name.startswith("qemu-") or "-binfmt-" in name) and len(cmdline) > 1:
        return os.path.basename(cmdline[1])
    return name


def _prefect_version(report: Report) -> str:
    if report.prefect_exit_code != 0:
        raise BuildError(
            f"`prefect version` exited with {report.prefect_exit_code}: "
            f"{_last_line(report.prefect_output)}"
        )
    match = _VERSION_LINE.search(report.prefect_output)
    if match:
        return match.group(1)
    # Prefect 0.x prints the bare version.
    words = report.prefect_output.split()
    if not words:
        raise BuildError("`prefect version` printed nothing")
    return words[-1]


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"

"""wheels: resolving an image's packages with the base image's own pip (in a fake container)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from publisher import docker_client, target, wheels
from publisher.errors import BuildError
from publisher.wheels import IndexOptions, _pins, _pip_reason, redact, revision_of

SHA = "0123456789abcdef0123456789abcdef01234567"


def item(name: str, version: str, url: str = "", sha256: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {"metadata": {"name": name, "version": version}}
    if url:
        found["download_info"] = {"url": url}
    if sha256:
        found["download_info"]["archive_info"] = {"hashes": {"sha256": sha256}}
    return found


# -- pure helpers ------------------------------------------------------------------------


def test_pins_pin_exact_versions_and_name_local_wheels_by_file() -> None:
    report = {
        "install": [
            item("Prefect", "3.10.0.dev1", "file:///source/prefect-3.10.0.dev1-py3-none-any.whl"),
            item("anyio", "4.0.0", "https://files.example/anyio-4.0.0-py3-none-any.whl"),
            item("Typing_Extensions", "4.12.2"),
        ]
    }
    assert _pins(report) == [
        "Prefect @ file:///source/prefect-3.10.0.dev1-py3-none-any.whl",
        "anyio==4.0.0",
        "Typing_Extensions==4.12.2",
    ]
    # Excluded by canonical name, whatever the spelling.
    assert _pins(report, exclude=("prefect", "typing-extensions")) == ["anyio==4.0.0"]
    assert _pins({}) == []


def test_index_options_pip_args() -> None:
    assert IndexOptions().pip_args() == []
    options = IndexOptions(
        index_url="https://idx/simple",
        extra_index_urls=("https://a/simple", "https://b/simple"),
        find_links=("/wheels",),
    )
    assert options.pip_args() == [
        "--index-url",
        "https://idx/simple",
        "--extra-index-url",
        "https://a/simple",
        "--extra-index-url",
        "https://b/simple",
        "--find-links",
        "/wheels",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:s3cret@idx.example/simple", "https://***@idx.example/simple"),
        ("https://token@idx.example/", "https://***@idx.example/"),
        ("see http://a:b@x/ and https://c:d@y/z", "see http://***@x/ and https://***@y/z"),
        ("https://idx.example/simple", "https://idx.example/simple"),
        ("mail me: someone@example.com", "mail me: someone@example.com"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def wheel(folder: Path, name: str, files: dict[str, str]) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        for inner, text in files.items():
            archive.writestr(inner, text)
    return path


def test_revision_of_reads_the_commit_prefect_recorded(tmp_path: Path) -> None:
    other = wheel(tmp_path, "anyio-4.0.0-py3-none-any.whl", {"anyio/_version.py": SHA})
    v3 = wheel(
        tmp_path,
        "prefect-3.9.1-py3-none-any.whl",
        {"prefect/__init__.py": "", "prefect/_build_info.py": f'BUILD_COMMIT = "{SHA}"\n'},
    )
    assert revision_of([other, v3]) == SHA
    old = wheel(
        tmp_path,
        "prefect-0.14.10-py3-none-any.whl",
        {"prefect/_version.py": f'version_json = \'{{"full-revisionid": "{SHA[::-1]}"}}\''},
    )
    assert revision_of([old]) == SHA[::-1]
    bare = wheel(tmp_path, "prefect-3.0.0-py3-none-any.whl", {"prefect/_build_info.py": "x"})
    assert revision_of([bare]) is None
    assert revision_of([other]) is None  # only prefect's wheel counts
    assert revision_of([]) is None


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "Looking in indexes: https://u:p@idx/simple\n"
            "ERROR: Could not find a version that satisfies prefect==9 (from https://u:p@idx/)\n"
            "ERROR: No matching distribution found for prefect==9\n",
            "Could not find a version that satisfies prefect==9 (from https://***@idx/)",
        ),
        ("some output\nlast words\n\n", "last words"),
        ("", "pip failed without a message"),
    ],
)
def test_pip_reason(output: str, expected: str) -> None:
    assert _pip_reason(output) == expected


# -- download, with pip in a fake container ------------------------------------------------


class FakePip:
    """Stands in for docker_client.run: "pip" in a container with /wheels mounted."""

    def __init__(self, report: dict[str, Any], *, install: tuple[int, str] = (0, "")) -> None:
        self.report = report
        self.install = install
        self.fetch: tuple[int, str] = (0, "")
        self.calls: list[dict[str, Any]] = []
        self.fetches = 0  # runs of the fetch script
        self.no_python = False  # an image without `python`

    def __call__(self, client: Any, image: str, command: list[str], **kw: Any) -> tuple[int, str]:
        host = next(h for h, m in kw["volumes"].items() if m["bind"] == "/wheels")
        files = {p.name: p.read_text() for p in Path(host).glob("*.*") if p.suffix != ".whl"}
        self.calls.append({"image": image, "command": command, "files": files, **kw})
        if command[:3] == ["python", "-c", wheels._FETCH]:
            # The fetch script is the real one, run by this Python with /wheels on ``host``.
            self.fetches += 1
            if self.no_python:
                return 127, 'exec: "python": executable file not found in $PATH'
            args = [arg.replace("/wheels", host) for arg in command[3:]]
            done = subprocess.run(
                [sys.executable, "-c", command[2], *args], capture_output=True, text=True
            )
            return done.returncode, done.stdout + done.stderr
        # pip, or pip through the wrapper (python -c WRAPPER TARGET.json ...)
        command = command[3:] if command[0] == "python" else command
        if command[1] == "install":
            code, output = self.install
            if code == 0:
                (Path(host) / "report.json").write_text(json.dumps(self.report))
            return code, output
        code, output = self.fetch
        if code == 0:
            pins = command[command.index("--wheel-dir") + 2 :]
            for pin in pins:
                if pin == "--no-deps":
                    continue
                if pin.startswith("--"):  # the index options
                    break
                name, _, version = pin.partition("==")
                (Path(host) / f"{name}-{version or '0'}-py3-none-any.whl").write_bytes(b"")
        return code, output


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setattr(wheels, "CACHE", folder)
    monkeypatch.setattr(wheels, "STORE", tmp_path / "store")
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TRUSTED_HOST"):
        monkeypatch.delenv(key, raising=False)
    return folder


def download(tmp_path: Path, **kw: Any) -> list[Path]:
    request = wheels.PipRequest(requirements=("prefect==3.9.1",), **kw)
    return wheels.download(
        None,  # type: ignore[arg-type]
        request,
        base_image="python:3.13-slim",
        dest=tmp_path / "wheels",
        index=IndexOptions(index_url="https://u:p@idx/simple"),
    )


def test_download_resolves_then_fetches_exactly_the_pins(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip = FakePip({"install": [item("prefect", "3.9.1"), item("anyio", "4.0.0")]})
    monkeypatch.setattr(docker_client, "run", pip)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "https://extra/simple")

    found = download(tmp_path)

    assert [p.name for p in found] == [
        "anyio-4.0.0-py3-none-any.whl",
        "prefect-3.9.1-py3-none-any.whl",
    ]
    assert not (tmp_path / "wheels" / "report.json").exists()
    resolve, fetch = pip.calls
    index = ["--index-url", "https://u:p@idx/simple"]
    assert resolve["command"] == [
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--report",
        "/wheels/report.json",
        "prefect==3.9.1",
        *index,
    ]
    assert fetch["command"] == [
        "pip",
        "wheel",
        "--wheel-dir",
        "/wheels",
        "--no-deps",
        "prefect==3.9.1",
        "anyio==4.0.0",
        *index,
    ]
    assert resolve["image"] == "python:3.13-slim"
    assert resolve["env"]["PIP_EXTRA_INDEX_URL"] == "https://extra/simple"
    assert resolve["env"]["PIP_CACHE_DIR"] == "/cache"
    assert resolve["user"] == f"{os.getuid()}:{os.getgid()}"
    assert resolve["volumes"][str(cache)] == {"bind": "/cache", "mode": "rw"}
    assert cache.is_dir()


def test_download_mounts_a_local_wheel_and_leaves_out_excluded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "dist" / "prefect-3.10.0.dev1-py3-none-any.whl"
    local.parent.mkdir()
    local.write_bytes(b"")
    report = {"install": [item("prefect", "3.10.0.dev1"), item("docker", "7.1.0")]}
    pip = FakePip(report)
    monkeypatch.setattr(docker_client, "run", pip)

    found = download(tmp_path, local_wheel=local, exclude=("prefect",))

    assert [p.name for p in found] == ["docker-7.1.0-py3-none-any.whl"]
    assert pip.calls[0]["volumes"][str(local.parent.resolve())] == {
        "bind": "/source",
        "mode": "ro",
    }
    assert pip.calls[1]["command"][4:6] == ["--no-deps", "docker==7.1.0"]


def test_download_with_nothing_to_add_fetches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip = FakePip({"install": []})
    monkeypatch.setattr(docker_client, "run", pip)
    assert download(tmp_path) == []
    assert len(pip.calls) == 1


def test_download_with_an_old_pip_fetches_the_whole_closure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pip = FakePip({}, install=(2, "Usage: ...\nno such option: --report\n"))
    monkeypatch.setattr(docker_client, "run", pip)
    download(tmp_path)
    assert pip.calls[1]["command"][:5] == [
        "pip",
        "wheel",
        "--wheel-dir",
        "/wheels",
        "prefect==3.9.1",
    ]
    assert "--no-deps" not in pip.calls[1]["command"]


def test_download_failures_say_why_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = FakePip({}, install=(1, "ERROR: 401 Client Error for url https://u:p@idx/simple\n"))
    monkeypatch.setattr(docker_client, "run", failing)
    with pytest.raises(BuildError) as caught:
        download(tmp_path)
    assert str(caught.value) == (
        "cannot resolve prefect==3.9.1 with python:3.13-slim: "
        "401 Client Error for url https://***@idx/simple"
    )

    fetching = FakePip({"install": [item("prefect", "3.9.1")]})
    fetching.fetch = (1, "ERROR: HTTP error 503\n")
    monkeypatch.setattr(docker_client, "run", fetching)
    with pytest.raises(BuildError, match=r"cannot fetch wheels for prefect==3\.9\.1 with python"):
        download(tmp_path)


@pytest.fixture
def files(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder of wheels served over HTTP, and its URL."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, directory=str(folder), **kw)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def served(folder: Path, url: str, name: str, version: str) -> dict[str, Any]:
    """A report item for a wheel put in the served ``folder``, with its URL and hash."""
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    wheel.write_bytes(f"{name} {version} content".encode())
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    return item(name, version, f"{url}/{wheel.name}", digest)


def test_download_fetches_what_was_resolved_by_its_url_and_hash_without_pip(
    tmp_path: Path, files: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = files
    report = {
        "install": [served(folder, url, "prefect", "3.9.1"), served(folder, url, "anyio", "4.0.0")]
    }
    pip = FakePip(report)
    monkeypatch.setattr(docker_client, "run", pip)

    found = download(tmp_path)

    assert [p.name for p in found] == [
        "anyio-4.0.0-py3-none-any.whl",
        "prefect-3.9.1-py3-none-any.whl",
    ]
    assert [p.read_bytes() for p in found] == [b"anyio 4.0.0 content", b"prefect 3.9.1 content"]
    resolve, fetch = pip.calls
    assert fetch["command"][:3] == ["python", "-c", wheels._FETCH]
    # The same container as pip's: the base image, its user, /wheels and the index's env.
    assert fetch["image"] == resolve["image"] == "python:3.13-slim"
    assert fetch["volumes"] == resolve["volumes"] and fetch["user"] == resolve["user"]
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == [p.name for p in found]


def test_a_fetched_wheel_is_kept_by_its_hash_for_later_resolutions(
    tmp_path: Path, files: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = files
    hashed = served(folder, url, "anyio", "4.0.0")
    unhashed = served(folder, url, "sniffio", "1.3.1")
    del unhashed["download_info"]["archive_info"]
    pip = FakePip({"install": [hashed, unhashed]})
    monkeypatch.setattr(docker_client, "run", pip)
    download(tmp_path / "first")
    assert pip.fetches == 1

    (folder / "anyio-4.0.0-py3-none-any.whl").unlink()  # the index cannot answer it now
    found = download(tmp_path / "second")

    # Only the wheel without a hash is fetched again; the other comes from the store.
    assert pip.fetches == 2
    listing = json.loads(pip.calls[-1]["files"]["fetch.json"])
    assert [entry["pin"] for entry in listing] == ["sniffio==1.3.1"]
    stored = tmp_path / "store" / hashed["download_info"]["archive_info"]["hashes"]["sha256"]
    anyio = tmp_path / "second" / "wheels" / "anyio-4.0.0-py3-none-any.whl"
    assert anyio in found and anyio.read_bytes() == b"anyio 4.0.0 content"
    assert anyio.stat().st_ino == stored.stat().st_ino  # linked, not copied
    assert [p.name for p in (tmp_path / "store").iterdir()] == [stored.name]


def test_download_leaves_to_pip_what_the_fetch_could_not_fetch(
    tmp_path: Path, files: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = files
    good = served(folder, url, "anyio", "4.0.0")
    tampered = served(folder, url, "prefect", "3.9.1")
    (folder / "prefect-3.9.1-py3-none-any.whl").write_bytes(b"not what was resolved")
    after = served(folder, url, "sniffio", "1.3.1")
    sdist = item("docker", "7.1.0", f"{url}/docker-7.1.0.tar.gz")
    pip = FakePip({"install": [good, sdist, tampered, after]})
    monkeypatch.setattr(docker_client, "run", pip)

    found = download(tmp_path)

    # pip is asked for the sdist, the file whose hash differs and all after it, by pin.
    assert pip.calls[-1]["command"][:9] == [
        "pip", "wheel", "--wheel-dir", "/wheels", "--no-deps",
        "docker==7.1.0", "prefect==3.9.1", "sniffio==1.3.1", "--index-url",
    ]  # fmt: skip
    by_name = {p.name: p.read_bytes() for p in found}
    assert by_name["anyio-4.0.0-py3-none-any.whl"] == b"anyio 4.0.0 content"
    # Written by (fake) pip, not the tampered file the fetch refused.
    assert by_name["prefect-3.9.1-py3-none-any.whl"] == b""
    assert not {"fetch.json", "left.json"} & {p.name for p in (tmp_path / "wheels").iterdir()}


def test_download_without_urls_or_python_fetches_with_pip(
    tmp_path: Path, files: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, url = files
    pip = FakePip({"install": [item("anyio", "4.0.0"), item("docker", "7.1.0", f"{url}/d.tar.gz")]})
    monkeypatch.setattr(docker_client, "run", pip)
    download(tmp_path)
    assert pip.fetches == 0
    assert pip.calls[-1]["command"][5:7] == ["anyio==4.0.0", "docker==7.1.0"]

    pip = FakePip({"install": [served(folder, url, "anyio", "4.0.0")]})
    pip.no_python = True
    monkeypatch.setattr(docker_client, "run", pip)
    found = download(tmp_path / "second")
    assert pip.fetches == 1
    assert pip.calls[-1]["command"][4:6] == ["--no-deps", "anyio==4.0.0"]
    assert [p.read_bytes() for p in found] == [b""]  # pip's


# -- for a foreign platform, with a native pip -------------------------------------------------

FOREIGN = target.Interpreter(
    markers={"platform_machine": "aarch64", "python_full_version": "3.13.5"},
    tags=("cp313-cp313-manylinux_2_17_aarch64", "py3-none-any"),
    layout={},
    installed={"pip": "25.1.1", "prefect": "3.9.1", "anyio": "4.0.0"},
)
NATIVE = target.Interpreter(
    markers={"platform_machine": "x86_64", "python_full_version": "3.13.5"},
    tags=("cp313-cp313-manylinux_2_17_x86_64", "py3-none-any"),
    layout={},
    installed={"pip": "25.1.1"},
)
ARM64 = target.Target(
    platform="linux/arm64", native_platform="linux/amd64", foreign=FOREIGN, native=NATIVE
)


def test_download_for_a_target_runs_the_wrapper_with_its_tags_markers_and_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = {"install": [item("prefect", "3.9.1"), item("anyio", "4.0.0"), item("docker", "7")]}
    pip = FakePip(report)
    monkeypatch.setattr(docker_client, "run", pip)
    request = wheels.PipRequest(requirements=("prefect[docker]==3.9.1",), exclude=("prefect",))
    found = wheels.download(
        None,  # type: ignore[arg-type]
        request,
        base_image="native@sha256:a",
        dest=tmp_path / "wheels",
        index=IndexOptions(),
        target=ARM64,
    )
    # What the foreign core has is kept (pinned), and not added again.
    assert [p.name for p in found] == ["docker-7-py3-none-any.whl"]
    resolve, fetch = pip.calls
    wrapper = ["python", "-c", target.PIP_WRAPPER, "/wheels/target.json"]
    assert resolve["command"][:5] == [*wrapper, "install"]
    assert resolve["command"][-4:] == [
        "--constraint",
        "/wheels/constraints.txt",
        "--only-binary",
        ":all:",
    ]
    assert resolve["files"]["constraints.txt"] == "anyio==4.0.0\n"
    assert json.loads(resolve["files"]["target.json"]) == json.loads(ARM64.to_json())
    assert fetch["command"][:4] == wrapper and "--only-binary" in fetch["command"]
    assert resolve["image"] == "native@sha256:a"
    # Nothing of it is left among the wheels.
    assert sorted(p.name for p in (tmp_path / "wheels").iterdir()) == ["docker-7-py3-none-any.whl"]


def test_constraints_of_a_request_pin_the_resolution_and_join_a_target_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = {"install": [item("prefect", "3.9.1"), item("anyio", "4.0.0"), item("docker", "7")]}

    def resolve(request: wheels.PipRequest, where: target.Target | None) -> tuple[Any, ...]:
        pip = FakePip(report)
        monkeypatch.setattr(docker_client, "run", pip)
        found = wheels.download(
            None,  # type: ignore[arg-type]
            request,
            base_image="python:3.13-slim",
            dest=tmp_path / str(len(pip.calls)) / str(where is None) / "wheels",
            index=IndexOptions(),
            target=where,
        )
        command = pip.calls[0]["command"]
        at = command.index("--constraint")
        return (
            [p.name for p in found],
            command[at : at + 2],
            pip.calls[0]["files"]["constraints.txt"],
        )

    # Natively: the parent's packages pinned by the request, and left out.
    pinned = wheels.PipRequest(
        requirements=("prefect[docker]==3.9.1",),
        exclude=("anyio", "prefect"),
        constraints=("anyio==4.0.0", "prefect==3.9.1"),
    )
    assert resolve(pinned, None) == (
        ["docker-7-py3-none-any.whl"],
        ["--constraint", "/wheels/constraints.txt"],
        "anyio==4.0.0\nprefect==3.9.1\n",
    )
    # For a target, its own pins (what the foreign image has) follow the request's.
    only_prefect = wheels.PipRequest(
        requirements=("prefect[docker]==3.9.1",),
        exclude=("prefect",),
        constraints=("prefect==3.9.1",),
    )
    assert resolve(only_prefect, ARM64) == (
        ["docker-7-py3-none-any.whl"],
        ["--constraint", "/wheels/constraints.txt"],
        "prefect==3.9.1\nanyio==4.0.0\n",
    )


def test_a_target_without_a_wheel_fails_naming_its_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = "ERROR: No matching distribution found for greenlet==3.2.4\n"
    monkeypatch.setattr(docker_client, "run", FakePip({}, install=(1, missing)))
    with pytest.raises(BuildError) as caught:
        wheels.download(
            None,  # type: ignore[arg-type]
            wheels.PipRequest(requirements=("prefect==3.9.1",)),
            base_image="native@sha256:a",
            dest=tmp_path / "wheels",
            index=IndexOptions(),
            target=ARM64,
        )
    assert str(caught.value) == (
        "cannot resolve prefect==3.9.1 for linux/arm64 with the linux/amd64 pip of "
        "native@sha256:a: No matching distribution found for greenlet==3.2.4"
    )
    assert not (tmp_path / "wheels" / "target.json").exists()


def test_install_installs_offline_with_root_under_the_staging_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def run(client: Any, image: str, command: list[str], **kw: Any) -> tuple[int, str]:
        wheels_dir = next(h for h, m in kw["volumes"].items() if m["bind"] == "/wheels")
        target_json = (Path(wheels_dir) / "target.json").read_text()
        calls.append({"image": image, "command": command, "target": target_json, **kw})
        return 0, ""

    monkeypatch.setattr(docker_client, "run", run)
    folder = tmp_path / "wheels-deps"
    folder.mkdir()
    (folder / "anyio-4.0.0-py3-none-any.whl").write_bytes(b"")
    (folder / "requirements.txt").write_text("anyio==4.0.0\n")
    dest = tmp_path / "context" / "deps"
    for chosen in (None, ARM64):
        wheels.install(None, image="base", wheels=folder, dest=dest, target=chosen)  # type: ignore[arg-type]
    native, foreign = calls
    assert native["command"] == [
        "python",
        "-c",
        target.PIP_WRAPPER,
        "/wheels/target.json",
        "install",
        "--no-cache-dir",
        "--no-index",
        "--no-deps",
        "--no-warn-script-location",
        "--ignore-installed",
        "--find-links",
        "/wheels",
        "--root",
        "/staging/deps",
        "--requirement",
        "/wheels/requirements.txt",
    ]
    assert native["volumes"] == {
        str(folder.resolve()): {"bind": "/wheels", "mode": "ro"},
        str(dest.resolve()): {"bind": "/staging/deps", "mode": "rw"},
    }
    assert native["network_mode"] == "none"
    assert native["target"] == "{}"
    assert json.loads(foreign["target"]) == json.loads(ARM64.to_json())
    assert not (folder / "target.json").exists()


def test_install_of_nothing_makes_an_empty_layer_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docker_client, "run", lambda *a, **kw: pytest.fail("ran pip"))
    folder = tmp_path / "wheels-extras"
    folder.mkdir()
    (folder / "requirements.txt").write_text("")
    wheels.install(None, image="base", wheels=folder, dest=tmp_path / "c" / "extras")  # type: ignore[arg-type]
    assert list((tmp_path / "c" / "extras").iterdir()) == []


def test_install_failures_say_for_which_platform(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docker_client, "run", lambda *a, **kw: (1, "ERROR: disk full\n"))
    folder = tmp_path / "wheels-deps"
    folder.mkdir()
    (folder / "anyio-4.0.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(BuildError) as caught:
        wheels.install(None, image="n", wheels=folder, dest=tmp_path / "d", target=ARM64)  # type: ignore[arg-type]
    assert str(caught.value) == "cannot install d for linux/arm64 with n: disk full"


# -- a parent's packages shown to pip as installed -------------------------------------------


def dist(folder: Path, name: str, version: str, *requires: str) -> Path:
    """A wheel whose METADATA is as a build backend writes it, description included."""
    metadata = "".join(
        [
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "Summary: a test package\nClassifier: Programming Language :: Python :: 3\n",
            *(f"Requires-Dist: {requirement}\n" for requirement in requires),
            "Requires-Python: >=3.8\nProvides-Extra: fast\n",
            "Description-Content-Type: text/markdown\n\n# A long description\n\nName: no\n",
        ]
    )
    return wheel(
        folder,
        f"{name}-{version}-py3-none-any.whl",
        {
            f"{name}/__init__.py": "",
            f"{name}-{version}.dist-info/METADATA": metadata,
            f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nTag: py3-none-any\n",
        },
    )


def test_as_installed_keeps_the_metadata_pip_resolves_with_and_drops_the_rest(
    tmp_path: Path,
) -> None:
    made = dist(tmp_path, "alpha", "1.0", 'beta>=2; extra == "fast"', "gamma<3")
    no_metadata = wheel(tmp_path, "broken-1.0-py3-none-any.whl", {"broken/__init__.py": ""})
    wheels._as_installed([made, no_metadata], tmp_path / "installed")
    (written,) = (tmp_path / "installed").iterdir()
    assert written.name == "alpha-1.0.dist-info"
    assert [p.name for p in written.iterdir()] == ["METADATA"]
    assert (written / "METADATA").read_text() == (
        "Metadata-Version: 2.1\nName: alpha\nVersion: 1.0\nRequires-Python: >=3.8\n"
        'Requires-Dist: beta>=2; extra == "fast"\nRequires-Dist: gamma<3\n'
        "Provides-Extra: fast\n"
    )


def test_real_pip_resolves_against_what_as_installed_shows_without_fetching_it(
    tmp_path: Path,
) -> None:
    # Only the extra is on the "index"; the parent's package is shown as installed.
    index = tmp_path / "index"
    index.mkdir()
    parent = dist(tmp_path, "alpha", "1.0")
    dist(index, "beta", "2.0", "alpha>=1")
    wheels._as_installed([parent], tmp_path / "installed")

    def resolve(**env: str) -> subprocess.CompletedProcess[str]:
        report = tmp_path / "report.json"
        report.unlink(missing_ok=True)
        return subprocess.run(
            [
                *(sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-index"),
                *("--find-links", str(index), "--report", str(report), "beta==2.0"),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **env},
        )

    shown = resolve(PYTHONPATH=str(tmp_path / "installed"))
    assert shown.returncode == 0, shown.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert [i["metadata"]["name"] for i in report["install"]] == ["beta"]
    # Without it, the parent's package would have to come from the index.
    assert resolve().returncode != 0


def test_download_shows_the_parent_s_wheels_as_installed_to_the_dry_run_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = dist(tmp_path, "anyio", "4.0.0")
    pip = FakePip({"install": [item("docker", "7")]})
    seen: list[tuple[str | None, list[str]]] = []

    def run(client: Any, image: str, command: list[str], **kw: Any) -> tuple[int, str]:
        host = Path(next(h for h, m in kw["volumes"].items() if m["bind"] == "/wheels"))
        shown = sorted(str(p.relative_to(host / "installed")) for p in host.glob("installed/**/*"))
        seen.append((kw["env"].get("PYTHONPATH"), shown))
        return pip(client, image, command, **kw)

    monkeypatch.setattr(docker_client, "run", run)
    dest = tmp_path / "wheels"
    found = wheels.download(
        None,  # type: ignore[arg-type]
        wheels.PipRequest(
            requirements=("prefect[docker]==3.9.1",),
            exclude=("anyio",),
            constraints=("anyio==4.0.0",),
            installed=(parent,),
        ),
        base_image="python:3.13-slim",
        dest=dest,
        index=IndexOptions(),
    )
    assert [p.name for p in found] == ["docker-7-py3-none-any.whl"]
    shown = ["anyio-4.0.0.dist-info", "anyio-4.0.0.dist-info/METADATA"]
    # The dry run; then pip, fetching what it resolved (the report gave no URL), sees no
    # installed packages: they are only the resolution's business.
    assert seen[0] == ("/wheels/installed", shown)
    assert [env for env, _ in seen[1:]] == [None]
    assert not (dest / "installed").exists()

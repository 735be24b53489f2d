"""target: what a foreign image's Python tells a native pip (probe parsed, checks, pins)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from publisher import docker_client, target
from publisher.errors import BuildError
from publisher.target import Interpreter, Target, check_same, constraints

LAYOUT = {
    "pip runs on": "/usr/bin/python3",
    "purelib": "/usr/local/lib/python3.13/dist-packages",
    "scripts": "/usr/local/bin",
}


def interpreter(machine: str = "aarch64", python: str = "3.13.5", **kw: Any) -> Interpreter:
    return Interpreter(
        markers={"platform_machine": machine, "python_full_version": python},
        tags=(f"cp313-cp313-manylinux_2_17_{machine}", "py3-none-any"),
        layout=kw.pop("layout", LAYOUT),
        installed=kw.pop("installed", {"pip": "25.1.1"}),
    )


@pytest.fixture(autouse=True)
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty cache of probes, and image ids that follow the reference."""
    monkeypatch.setattr(target, "CACHE", tmp_path / "interpreters")
    monkeypatch.setattr(docker_client, "image_id", lambda client, ref: f"sha256:id-of-{ref[-1]}")
    return tmp_path / "interpreters"


def test_read_parses_the_probe_and_canonicalises_names(monkeypatch: pytest.MonkeyPatch) -> None:
    document = {
        "markers": {"platform_machine": "aarch64", "python_full_version": "3.13.5"},
        "tags": ["cp313-cp313-manylinux_2_41_aarch64", "py3-none-any"],
        "layout": LAYOUT,
        "installed": {"Typing_Extensions": "4.12.2", "pip": "25.1.1"},
    }
    calls = []

    def run(client: Any, image: str, command: list[str], **kw: Any) -> tuple[int, str]:
        calls.append((image, command[:2], kw))
        return 0, "WARNING: the platform differs\n" + json.dumps(document) + "\n"

    monkeypatch.setattr(docker_client, "run", run)
    found = target.read(None, "base@sha256:a", "linux/arm64")  # type: ignore[arg-type]
    assert found.python == "3.13.5"
    assert found.tags[0] == "cp313-cp313-manylinux_2_41_aarch64"
    assert found.installed == {"typing-extensions": "4.12.2", "pip": "25.1.1"}
    assert calls == [("base@sha256:a", ["python", "-c"], {"network_mode": "none"})]


def test_an_image_is_probed_once(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    document = {
        "markers": {"platform_machine": "aarch64", "python_full_version": "3.13.5"},
        "tags": ["cp313-cp313-manylinux_2_41_aarch64"],
        "layout": LAYOUT,
        "installed": {"pip": "25.1.1"},
    }
    calls = []

    def run(client: Any, image: str, command: list[str], **kw: Any) -> tuple[int, str]:
        calls.append(image)
        return 0, json.dumps(document) + "\n"

    monkeypatch.setattr(docker_client, "run", run)
    first = target.read(None, "base@sha256:a", "linux/arm64")  # type: ignore[arg-type]
    # The same image by another name (its id is the same), and a later run: no probe.
    assert target.read(None, "other:a", "linux/arm64") == first  # type: ignore[arg-type]
    assert calls == ["base@sha256:a"]
    # Another image is probed; a damaged entry is probed again and rewritten.
    target.read(None, "base@sha256:b", "linux/arm64")  # type: ignore[arg-type]
    (cache / "sha256-id-of-a.json").write_text("{")
    assert target.read(None, "base@sha256:a", "linux/arm64") == first  # type: ignore[arg-type]
    assert calls == ["base@sha256:a", "base@sha256:b", "base@sha256:a"]
    assert sorted(p.name for p in cache.iterdir()) == ["sha256-id-of-a.json", "sha256-id-of-b.json"]


def test_a_failed_probe_is_not_kept(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.setattr(docker_client, "run", lambda *a, **kw: (1, "Segmentation fault\n"))
    with pytest.raises(BuildError):
        target.read(None, "base@sha256:a", "linux/arm64")  # type: ignore[arg-type]
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "output", "message"),
    [
        (1, "ModuleNotFoundError: No module named 'pip'\n", "No module named 'pip'"),
        (0, "{not json\n", "described itself oddly"),
        (0, '{"markers": {}}\n', "described itself oddly"),
    ],
)
def test_read_failures_name_image_and_platform(
    monkeypatch: pytest.MonkeyPatch, code: int, output: str, message: str
) -> None:
    monkeypatch.setattr(docker_client, "run", lambda *a, **kw: (code, output))
    with pytest.raises(BuildError, match=r"linux/arm64 Python of base@sha256:a") as caught:
        target.read(None, "base@sha256:a", "linux/arm64")  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_check_same_accepts_the_same_python_in_the_same_layout() -> None:
    check_same(interpreter("x86_64"), interpreter("aarch64"), what="b")


def test_check_same_refuses_another_python_or_layout() -> None:
    with pytest.raises(BuildError, match=r"^b: the native image has Python 3\.13\.1, the fo"):
        check_same(interpreter("x86_64", "3.13.1"), interpreter(), what="b")
    moved = {**LAYOUT, "scripts": "/opt/bin"}
    with pytest.raises(
        BuildError, match=r"^b: scripts is /usr/local/bin natively but /opt/bin on the foreign"
    ):
        check_same(interpreter("x86_64"), interpreter(layout=moved), what="b")


def test_constraints_pin_what_the_foreign_parent_has_and_the_native_image_lacks() -> None:
    parent = interpreter(installed={"pip": "25.1.1", "prefect": "3.9.1", "anyio": "4.0.0"})
    native = interpreter("x86_64", installed={"pip": "25.1.1", "anyio": "3.0.0"})
    assert constraints(parent, native, exclude=("Prefect",)) == ["anyio==4.0.0"]
    assert constraints(native, native, exclude=()) == []


def test_the_wrapper_reads_the_foreign_markers_and_tags() -> None:
    found = Target(
        platform="linux/arm64",
        native_platform="linux/amd64",
        foreign=interpreter("aarch64"),
        native=interpreter("x86_64"),
    )
    assert json.loads(found.to_json()) == {
        "markers": {"platform_machine": "aarch64", "python_full_version": "3.13.5"},
        "tags": ["cp313-cp313-manylinux_2_17_aarch64", "py3-none-any"],
    }
    # The wrapper is Python that compiles, with its placeholders filled in.
    compile(target.PIP_WRAPPER, "<wrapper>", "exec")
    assert "EPOCH" not in target.PIP_WRAPPER and "PIP_PYTHON" not in target.PIP_WRAPPER


# -- the wrapper, run with this machine's pip ------------------------------------------------


def tiny_wheel(folder: Path, name: str, tag: str, requires: str = "") -> Path:
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n{requires}",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    path = folder / f"{name}-1.0-{tag}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for inner, text in files.items():
            archive.writestr(inner, text)
    return path


def wrapped_pip(work: Path, markers: dict[str, str] | None, *args: str) -> Any:
    (work / "target.json").write_text(
        json.dumps({"markers": markers, "tags": [ARM, "py3-none-any"]}) if markers else "{}"
    )
    return subprocess.run(
        [sys.executable, "-c", target.PIP_WRAPPER, str(work / "target.json"), *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"},
    )


AARCH64 = {"platform_machine": "aarch64"}
ARM = f"cp3{sys.version_info[1]}-cp3{sys.version_info[1]}-manylinux_2_17_aarch64"


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    tiny_wheel(
        folder, "demo", "py3-none-any", 'Requires-Dist: armonly; platform_machine == "aarch64"\n'
    )
    tiny_wheel(folder, "armonly", ARM)
    return folder


def test_the_wrapper_resolves_with_the_foreign_markers_and_tags(
    tmp_path: Path, wheelhouse: Path
) -> None:
    args = ["install", "--dry-run", "--quiet", "--find-links", str(wheelhouse)]
    done = wrapped_pip(
        tmp_path,
        {"platform_machine": "aarch64"},
        *args,
        "--report",
        str(tmp_path / "r.json"),
        "demo",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert sorted(i["metadata"]["name"] for i in report["install"]) == ["armonly", "demo"]
    # pip's own view: no aarch64 dependency, and no aarch64 wheel it could install.
    assert wrapped_pip(tmp_path, None, *args, "armonly").returncode != 0


def test_the_wrapper_byte_compiles_reproducibly(tmp_path: Path, wheelhouse: Path) -> None:
    root = tmp_path / "root"  # the same place twice: byte code records its path
    trees = []
    for _run in range(2):
        shutil.rmtree(root, ignore_errors=True)
        args = ["install", "--no-deps", "--ignore-installed", "--find-links", str(wheelhouse)]
        done = wrapped_pip(tmp_path, AARCH64, *args, "--root", str(root), "armonly")
        assert done.returncode == 0, done.stderr
        trees.append({p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()})
        time.sleep(1.1)  # a second later: an unfixed mtime would show in the byte code
    assert trees[0] == trees[1]
    (source,) = root.rglob("armonly/__init__.py")
    assert source.stat().st_mtime == target.EPOCH
    assert any(p.suffix == ".pyc" for p in root.rglob("*"))

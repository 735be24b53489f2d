"""tests/services.py: the one way the tests run a server, and the bootstrap's hand-over."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.helpers import assert_one_error_line
from tests.services import Bootstrap, serve, wheel_flags


def http_server(directory: Path) -> Callable[[int], list[str | Path]]:
    def command(port: int) -> list[str | Path]:
        return [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", directory, str(port)]

    return command


def test_serve_waits_until_the_url_answers_and_stops_the_server(tmp_path: Path) -> None:
    (tmp_path / "ready").write_text("yes")
    command = http_server(tmp_path)
    with serve(command, "http://127.0.0.1:{port}/ready", tmp_path / "log") as port:
        assert requests.get(f"http://127.0.0.1:{port}/ready", timeout=5).text == "yes"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/ready", timeout=5)


def test_serve_gives_up_with_the_log_when_the_server_keeps_exiting(tmp_path: Path) -> None:
    def command(port: int) -> list[str]:
        return [sys.executable, "-c", f"print('cannot bind {port}'); raise SystemExit(1)"]

    with (
        pytest.raises(RuntimeError, match=r"failed to start 2 times(?s:.)*cannot bind"),
        serve(command, "http://127.0.0.1:{port}/", tmp_path / "log", attempts=2),
    ):
        pass


def test_bootstrap_json_is_read_into_a_dataclass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUBLISHER_TEST_CACHE", raising=False)
    path = tmp_path / "bootstrap.json"
    data = {
        "docker_host": "unix:///var/run/docker.sock",
        "base_image": "publisher-test/python:{python}-slim",
        "pythons": ["3.11", "3.13"],
        "cache_dir": "/var/cache/publisher-test",
        "state_dir": str(tmp_path),
        "started_dockerd": False,
    }
    path.write_text(json.dumps(data))
    boot = Bootstrap.load(path)
    assert boot.pythons == ("3.11", "3.13")
    assert boot.cache_dir == Path("/var/cache/publisher-test")
    assert not boot.started_dockerd
    monkeypatch.setenv("PUBLISHER_TEST_CACHE", str(tmp_path / "mine"))
    assert Bootstrap.load(path).cache_dir == tmp_path / "mine"
    # Written before arm64 bases: the amd64 base is the only platform.
    assert boot.platform_images == {"linux/amd64": "publisher-test/python:{python}-slim"}
    assert boot.multi_platform_pythons == ()
    assert boot.platform_image("3.13", "linux/amd64") == "publisher-test/python:3.13-slim"
    with pytest.raises(KeyError):
        boot.platform_image("3.13", "linux/arm64")
    assert boot.second_docker_host is None  # written before the second dockerd


def test_bootstrap_json_names_the_per_platform_bases_and_the_second_dockerd(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.json"
    data = {
        "docker_host": "unix:///var/run/docker.sock",
        "second_docker_host": "unix:///tmp/publisher-bootstrap/dockerd2/docker.sock",
        "base_image": "publisher-test/python:{python}-slim",
        "pythons": ["3.11", "3.13"],
        "platform_images": {
            "linux/amd64": "publisher-test/python:{python}-slim-linux-amd64",
            "linux/arm64": "publisher-test/python:{python}-slim-linux-arm64",
        },
        "multi_platform_pythons": ["3.13"],
        "cache_dir": "/var/cache/publisher-test",
        "state_dir": str(tmp_path),
        "started_dockerd": True,
    }
    path.write_text(json.dumps(data))
    boot = Bootstrap.load(path)
    assert boot.multi_platform_pythons == ("3.13",)
    arm64 = boot.platform_image("3.13", "linux/arm64")
    assert arm64 == "publisher-test/python:3.13-slim-linux-arm64"
    assert boot.platform_image("3.11", "linux/amd64").endswith("3.11-slim-linux-amd64")
    with pytest.raises(KeyError):
        boot.platform_image("3.11", "linux/arm64")
    assert boot.second_docker_host == "unix:///tmp/publisher-bootstrap/dockerd2/docker.sock"


def test_wheel_flags_name_the_interpreter_and_every_platform() -> None:
    flags = wheel_flags("3.13")
    assert flags[:6] == [
        "--only-binary=:all:",
        "--implementation",
        "cp",
        "--python-version",
        "3.13",
        "--abi",
    ]
    assert flags[6] == "cp313"
    platforms = [flags[i + 1] for i, flag in enumerate(flags) if flag == "--platform"]
    assert platforms[0] == "manylinux_2_28_x86_64" and platforms[-1] == "any"


def test_wheel_flags_for_aarch64_name_only_aarch64_manylinux_tags() -> None:
    flags = wheel_flags("3.13", "aarch64")
    platforms = [flags[i + 1] for i, flag in enumerate(flags) if flag == "--platform"]
    assert platforms == [
        "manylinux_2_28_aarch64",
        "manylinux_2_17_aarch64",
        "manylinux2014_aarch64",
        "any",
    ]


def test_one_error_line_allows_progress_only_when_asked() -> None:
    err = "publish: building\npublisher: error: cannot reach registry x\n"
    assert_one_error_line(4, err, "registry", exit_code=4, progress=True)
    with pytest.raises(AssertionError):
        assert_one_error_line(4, err, "registry", exit_code=4)
    with pytest.raises(AssertionError):
        assert_one_error_line(3, err, exit_code=4, progress=True)

"""Start a real Docker registry (distribution 2.8) on a loopback port for tests.

Tests that use it are skipped when ``/usr/bin/docker-registry`` is missing, so a
developer without it still gets a green run; CI sets ``PUBLISHER_E2E=1`` and a
missing registry then fails loudly instead of silently skipping the coverage.

htpasswd files are written with the ``bcrypt`` package (a test-only dependency),
which avoids needing ``htpasswd`` from apache2-utils on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
import requests

REGISTRY_BINARY = Path("/usr/bin/docker-registry")
STARTUP_TIMEOUT = 15.0


def require_registry_binary() -> Path:
    """Return the registry binary, or skip (fail under PUBLISHER_E2E=1) when absent."""
    if REGISTRY_BINARY.is_file() and os.access(REGISTRY_BINARY, os.X_OK):
        return REGISTRY_BINARY
    _missing(f"{REGISTRY_BINARY} not found: install it with `apt-get install -y docker-registry`")


def _missing(reason: str) -> NoReturn:
    if os.environ.get("PUBLISHER_E2E") == "1":
        pytest.fail(f"PUBLISHER_E2E=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    # The port may be taken again between close() and the registry's bind();
    # run_registry() notices an early exit and tries another port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    try:
        import bcrypt  # test-only dependency, imported here so unit tests never need it
    except ImportError:
        _missing("the bcrypt package is needed to write htpasswd files: pip install bcrypt")

    # Cost 4 is bcrypt's minimum: the registry checks every request's password,
    # and the default cost (12) would make each request take a noticeable time.
    lines = [
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")


def _config(root: Path, port: int, htpasswd_path: Path | None) -> dict[str, object]:
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if htpasswd_path is not None:
        config["auth"] = {"htpasswd": {"realm": "publisher-test", "path": str(htpasswd_path)}}
    return config


def _wait_until_ready(proc: subprocess.Popen[bytes], host: str) -> bool:
    """True once GET /v2/ answers; False if the process died first (port taken)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            status = requests.get(f"http://{host}/v2/", timeout=1).status_code
        except requests.ConnectionError:
            time.sleep(0.05)
            continue
        if status in (200, 401):
            return True
        time.sleep(0.05)
    raise RuntimeError(f"registry at {host} did not answer GET /v2/ within {STARTUP_TIMEOUT}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def run_registry(tmp_path: Path, *, htpasswd: dict[str, str] | None = None) -> Iterator[str]:
    """Run a registry storing into ``tmp_path``; yield its ``127.0.0.1:PORT``."""
    binary = require_registry_binary()
    tmp_path.mkdir(parents=True, exist_ok=True)
    htpasswd_path: Path | None = None
    if htpasswd is not None:
        htpasswd_path = tmp_path / "htpasswd"
        write_htpasswd(htpasswd_path, htpasswd)
    log_path = tmp_path / "registry.log"
    for _attempt in range(3):
        port = free_port()
        host = f"127.0.0.1:{port}"
        config_path = tmp_path / "config.yml"
        # JSON is valid YAML, so no YAML library is needed to write the config.
        config_path.write_text(json.dumps(_config(tmp_path, port, htpasswd_path), indent=2))
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [str(binary), "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            if _wait_until_ready(proc, host):
                yield host
                return
        finally:
            _stop(proc)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"registry failed to start three times; its log ends with:\n{tail}")

"""Start a real Docker registry (distribution 2.8) on a loopback port for tests (`serve`).

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
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.services import free_port, serve

__all__ = ["free_port", "require_registry_binary", "run_registry", "write_htpasswd"]

REGISTRY_BINARY = Path("/usr/bin/docker-registry")


def require_registry_binary() -> Path:
    """Return the registry binary, or skip (fail under PUBLISHER_E2E=1) when absent."""
    if REGISTRY_BINARY.is_file() and os.access(REGISTRY_BINARY, os.X_OK):
        return REGISTRY_BINARY
    _missing(f"{REGISTRY_BINARY} not found: install it with `apt-get install -y docker-registry`")


def _missing(reason: str) -> NoReturn:
    if os.environ.get("PUBLISHER_E2E") == "1":
        pytest.fail(f"PUBLISHER_E2E=1 but {reason}", pytrace=False)
    pytest.skip(reason)


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


@contextlib.contextmanager
def run_registry(tmp_path: Path, *, htpasswd: dict[str, str] | None = None) -> Iterator[str]:
    """Run a registry storing into ``tmp_path``; yield its ``127.0.0.1:PORT``."""
    binary = require_registry_binary()
    tmp_path.mkdir(parents=True, exist_ok=True)
    htpasswd_path: Path | None = None
    if htpasswd is not None:
        htpasswd_path = tmp_path / "htpasswd"
        write_htpasswd(htpasswd_path, htpasswd)

    def command(port: int) -> list[str | Path]:
        config_path = tmp_path / "config.yml"
        # JSON is valid YAML, so no YAML library is needed to write the config.
        config_path.write_text(json.dumps(_config(tmp_path, port, htpasswd_path), indent=2))
        return [binary, "serve", config_path]

    # 401 is "up" too: an htpasswd registry refuses the anonymous probe.
    url = "http://127.0.0.1:{port}/v2/"
    with serve(command, url, tmp_path / "registry.log", ready=(200, 401)) as port:
        yield f"127.0.0.1:{port}"

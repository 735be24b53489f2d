"""Shared fixtures for the unit tests: matrices written into tmp_path, and the shipped files."""

from __future__ import annotations

import copy
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent

# The smallest matrix `publisher.matrix.load` accepts with a plan that covers every image.
MINIMAL_MATRIX: dict[str, Any] = {
    "image": "prefecthq/prefect",
    "base_image": "python:{python}-slim",
    "versions": ["0.14.9", "0.14.10"],
    "variants": {
        "full": {
            "pythons": ["3.7", "3.8"],
            "default_python": "3.7",
            "extras": ["all_orchestration_extras"],
        },
    },
    "tags": [{"tag": "{version}-python{python}", "variant": "full"}],
}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository checkout, which holds matrix.yaml, examples/, docs/ and README.md."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shipped_matrix_path(repo_root: Path) -> Path:
    return repo_root / "matrix.yaml"


@pytest.fixture(scope="session")
def prefect3_matrix_path(repo_root: Path) -> Path:
    return repo_root / "examples" / "prefect3.yaml"


@pytest.fixture
def write_yaml(tmp_path: Path) -> Callable[[str], Path]:
    """Write YAML text verbatim (dedented) to a fresh file in tmp_path and return its path.

    For inputs whose spelling matters (unquoted ``3.10``, duplicate keys, broken syntax).
    """
    counter = iter(range(1_000_000))

    def write(text: str, name: str | None = None) -> Path:
        path = tmp_path / (name or f"matrix-{next(counter)}.yaml")
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def make_matrix(write_yaml: Callable[..., Path]) -> Callable[..., Path]:
    """Write the minimal valid matrix with top-level overrides; ``None`` drops a key.

    ``make_matrix(versions=["1.0rc1"], tags=[...])`` -> Path of the written file.
    Values go through ``yaml.safe_dump``, so strings such as "3.10" stay strings.
    """

    def make(**overrides: Any) -> Path:
        data = copy.deepcopy(MINIMAL_MATRIX)
        for key, value in overrides.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        return write_yaml(yaml.safe_dump(data, sort_keys=False))

    return make


@pytest.fixture(autouse=True)
def _own_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """What one test keeps (smoke reports, probed interpreters, fetched .debs, all keyed by
    ids that fakes reuse) is not what the next one finds, nor the machine's own cache."""
    from publisher import assemble, debs, push, smoke, target

    root = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr(smoke, "CACHE", root / "smoke")
    monkeypatch.setattr(target, "CACHE", root / "interpreters")
    monkeypatch.setattr(debs, "CACHE", root / "debs")
    monkeypatch.setattr(push, "RECORD", root / "layers")
    monkeypatch.setattr(assemble, "CONFIGS", root / "configs")

"""Nightly wheels from Prefect's real source layout: the version the build backend computes.

The upstream bundle (shared/upstream beside this checkout, or PUBLISHER_UPSTREAM_BUNDLE)
is a trimmed clone of PrefectHQ/prefect whose versions come from git tags (versioningit).
A checkout of the commit alone would build a wheel calling itself the `default-tag`
fallback of pyproject.toml (3.6.24); the nightly must fetch what `git describe` needs.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from publisher.nightly import Source, build_wheel, resolve
from publisher.wheels import IndexOptions

from .conftest import REPO_ROOT, Services, _require

FALLBACK = "3.6.24"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = Path(
        os.environ.get("PUBLISHER_UPSTREAM_BUNDLE")
        or REPO_ROOT.parent / "shared" / "upstream" / "prefect-main-3.8.4.dev6.bundle"
    )
    if not bundle.is_file():
        _require(f"{bundle} not found (set PUBLISHER_UPSTREAM_BUNDLE)")
    source = tmp_path_factory.mktemp("upstream") / "prefect"
    subprocess.run(["git", "clone", "--quiet", str(bundle), str(source)], check=True)
    return source


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, env=env, text=True, capture_output=True
    )
    return done.stdout.strip()


def _build(upstream: Path, ref: str, services: Services, tmp_path: Path) -> tuple[str, Path]:
    source = Source(location=str(upstream), ref=ref)
    artifact = build_wheel(
        source, resolve(source), tmp_path / ref, IndexOptions(index_url=services.index)
    )
    return artifact.version, artifact.wheel


def test_a_commit_after_a_tag_gets_the_version_git_describe_gives(
    upstream: Path, services: Services, tmp_path: Path
) -> None:
    _git(upstream, "commit", "--quiet", "--allow-empty", "-m", "a nightly's new commit")
    short = _git(upstream, "rev-parse", "--short", "HEAD")
    version, wheel = _build(upstream, "main", services, tmp_path)
    assert version.startswith("3.8.4.dev6+1.g"), version
    assert short.startswith(version.rsplit(".g", 1)[1][:7])
    assert not version.startswith(FALLBACK)
    with zipfile.ZipFile(wheel) as archive:
        info = archive.read("prefect/_build_info.py").decode()
    assert _git(upstream, "rev-parse", "HEAD") in info


def test_a_release_tag_builds_that_release(
    upstream: Path, services: Services, tmp_path: Path
) -> None:
    version, _ = _build(upstream, "3.8.3", services, tmp_path)
    assert version == "3.8.3"

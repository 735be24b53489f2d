"""Nightly wheels from Prefect's real source layout: the version the build backend computes.

The upstream bundle (shared/upstream beside this checkout, or PUBLISHER_UPSTREAM_BUNDLE)
is a trimmed clone of PrefectHQ/prefect whose versions come from git tags (versioningit).
A checkout of the commit alone would build a wheel calling itself the `default-tag`
fallback of pyproject.toml (3.6.24); the nightly must fetch what `git describe` needs.
Its UI bundles are not committed: the nightly builds them with npm (from the npm registry)
as upstream's Dockerfile does; the version tests skip them (--no-ui) to stay quick.
"""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from publisher import labels
from publisher.nightly import Artifact, Source, build_wheel, resolve
from publisher.progress import Reporter
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


def _build(
    upstream: Path, ref: str, services: Services, tmp_path: Path, *, build_ui: bool = False
) -> Artifact:
    source = Source(location=str(upstream), ref=ref, ui=build_ui)
    return build_wheel(
        source,
        resolve(source),
        tmp_path / ref,
        IndexOptions(index_url=services.index),
        Reporter(),
    )


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_a_commit_after_a_tag_gets_the_version_git_describe_gives(
    upstream: Path, services: Services, tmp_path: Path
) -> None:
    _git(upstream, "commit", "--quiet", "--allow-empty", "-m", "a nightly's new commit")
    short = _git(upstream, "rev-parse", "--short", "HEAD")
    artifact = _build(upstream, "main", services, tmp_path)
    version, wheel = artifact.version, artifact.wheel
    assert version.startswith("3.8.4.dev6+1.g"), version
    assert short.startswith(version.rsplit(".g", 1)[1][:7])
    assert not version.startswith(FALLBACK)
    with zipfile.ZipFile(wheel) as archive:
        info = archive.read("prefect/_build_info.py").decode()
    assert _git(upstream, "rev-parse", "HEAD") in info


def test_a_release_tag_builds_that_release(
    upstream: Path, services: Services, tmp_path: Path
) -> None:
    assert _build(upstream, "3.8.3", services, tmp_path).version == "3.8.3"


UI_INDEXES = {"prefect/server/ui/index.html", "prefect/server/ui-v2/index.html"}


def test_the_wheel_of_main_carries_both_ui_bundles(
    upstream: Path, services: Services, tmp_path: Path
) -> None:
    built = _build(upstream, "main", services, tmp_path, build_ui=True)
    assert built.ui == labels.UI_BUILT
    assert _names(built.wheel) >= UI_INDEXES

    skipped = _build(upstream, "main", services, tmp_path / "no-ui")
    assert skipped.ui == labels.UI_SKIPPED
    assert not {
        n
        for n in _names(skipped.wheel)
        if n.startswith(("prefect/server/ui/", "prefect/server/ui-v2/"))
    }

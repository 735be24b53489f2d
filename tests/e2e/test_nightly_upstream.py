"""Nightlies from Prefect's real source layout: the version the build backend computes,
the UI bundles, and the image users pull.

The upstream bundle (tests/services.py: UPSTREAM_BUNDLE) is a trimmed clone of
PrefectHQ/prefect whose versions come from git tags (versioningit). A checkout of the
commit alone would build a wheel calling itself the `default-tag` fallback of
pyproject.toml (3.6.24); the nightly must fetch what `git describe` needs. Its UI bundles
are not committed: the nightly builds them with npm (from the npm registry) as upstream's
Dockerfile does; the wheel-version tests skip them (--no-ui) to stay quick. One nightly
image, core on Python 3.13 (the smallest matrix), is published once from a commit added on
main and inspected by several tests; the index serves its dependency closure
(tests/services.py: ensure_upstream_wheels).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from publisher import labels, smoke
from publisher.nightly import Artifact, Source, build_wheel, resolve
from publisher.progress import Reporter
from publisher.registry import RegistryClient
from publisher.wheels import IndexOptions
from tests.services import UPSTREAM_BUNDLE

from .conftest import Services, _require, run_publisher, write_matrix
from .test_nightly import nightly_env

FALLBACK = "3.6.24"


def _clone(directory: Path) -> Path:
    if not UPSTREAM_BUNDLE.is_file():
        _require(f"{UPSTREAM_BUNDLE} not found (set PUBLISHER_UPSTREAM_BUNDLE)")
    source = directory / "prefect"
    subprocess.run(["git", "clone", "--quiet", str(UPSTREAM_BUNDLE), str(source)], check=True)
    return source


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _clone(tmp_path_factory.mktemp("upstream"))


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


def test_the_wheel_of_main_built_with_no_ui_carries_no_bundles(
    upstream: Path, services: Services, tmp_path: Path
) -> None:
    # The wheel built with its UI is the nightly image's below, which serves both bundles:
    # building the UI (minutes) once is enough.
    skipped = _build(upstream, "main", services, tmp_path / "no-ui")
    assert skipped.ui == labels.UI_SKIPPED
    assert not {
        n
        for n in _names(skipped.wheel)
        if n.startswith(("prefect/server/ui/", "prefect/server/ui-v2/"))
    }


# --- a nightly image of main, published ------------------------------------------------

# A real line in a module of the wheel, so the image can be asked whether it holds the commit.
MARKER = "UPSTREAM_NIGHTLY_E2E = True"
NIGHTLY_TAGS = [
    {"tag": "master", "variant": "core", "python": "3.13", "release": "nightly"},
    {"tag": "master-{date}-{sha}", "variant": "core", "python": "3.13", "release": "nightly"},
    {"tag": "core-{version}", "variant": "core"},
]
IMAGE_ID = "core-nightly-py3.13"


@dataclass(frozen=True, kw_only=True)
class Nightly:
    sha: str  # the commit added on main
    described: str  # `git describe --tags` of it
    repo: str  # the repository path in the registry
    reference: str  # HOST:PORT/REPO, without a tag
    first: subprocess.CompletedProcess[str]
    seconds: float
    rerun: subprocess.CompletedProcess[str]  # the same run again: no new commit


@pytest.fixture(scope="module")
def nightly(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Nightly:
    work = tmp_path_factory.mktemp("upstream-nightly")
    source = _clone(work)
    module = source / "src" / "prefect" / "__init__.py"
    module.write_text(module.read_text() + f"\n{MARKER}\n")
    _git(source, "commit", "--quiet", "--all", "-m", "A nightly's new commit")
    matrix = write_matrix(
        work,
        services,
        variants={"core": {"pythons": ["3.13"]}},
        tags=NIGHTLY_TAGS,
        nightly={"repository": str(source), "ref": "main"},
    )
    namespace = f"{services.registry}/e2e-upstream"
    command = ("nightly", "--matrix", matrix, "--registry", namespace)
    started = time.monotonic()
    first = run_publisher(*command, env=nightly_env(services))
    seconds = time.monotonic() - started
    # Its progress lines time the fetch, the UI builds, the image build and the smoke test.
    print(
        f"{first.stderr}upstream nightly: {seconds:.1f} s, exit {first.returncode}", file=sys.stderr
    )
    assert first.returncode == 0, f"nightly failed:\n{first.stdout}\n{first.stderr}"
    return Nightly(
        sha=_git(source, "rev-parse", "HEAD"),
        described=_git(source, "describe", "--tags"),
        repo="e2e-upstream/prefect",
        reference=f"{services.registry}/e2e-upstream/prefect",
        first=first,
        seconds=seconds,
        rerun=run_publisher(*command, env=nightly_env(services)),
    )


@pytest.fixture(scope="module")
def master(nightly: Nightly, docker_client: docker.DockerClient) -> str:
    """`master` pulled from the registry, by digest."""
    image = docker_client.images.pull(f"{nightly.reference}:master")
    (by_digest,) = [d for d in image.attrs["RepoDigests"] if d.startswith(nightly.reference + "@")]
    return str(by_digest)


def _run(client: docker.DockerClient, image: str, *command: str) -> str:
    box = client.containers.create(image, list(command))
    try:
        box.start()
        status = box.wait(timeout=600)
        output = box.logs().decode("utf-8", "replace")
    finally:
        box.remove(force=True)
    assert status["StatusCode"] == 0, output
    return output


def test_the_nightly_image_reports_the_version_git_describe_gives(
    nightly: Nightly, services: Services, master: str, docker_client: docker.DockerClient
) -> None:
    # 3.8.4.dev6-1-gSHORT: one commit past the tag, as versioningit writes it.
    tag, distance, short = nightly.described.rsplit("-", 2)
    expected = f"{tag}+{distance}.{short}"
    assert (tag, distance) == ("3.8.4.dev6", "1") and nightly.sha.startswith(short[1:])
    labels_ = RegistryClient(services.registry).labels(nightly.repo, "master")
    assert labels_[labels.VERSION] == expected
    assert labels_[labels.REVISION] == nightly.sha
    assert labels_[labels.UI] == labels.UI_BUILT
    reported = _run(docker_client, master, "prefect", "version")
    assert re.search(rf"^Version:\s+{re.escape(expected)}$", reported, re.M), reported
    assert FALLBACK not in reported


def test_the_nightly_image_carries_its_build_info_and_its_commit(
    nightly: Nightly, master: str, docker_client: docker.DockerClient
) -> None:
    probe = (
        "import importlib.util as u, pathlib;"
        "p = pathlib.Path(u.find_spec('prefect').origin).parent;"
        "print((p / '_build_info.py').read_text());"
        "print((p / '__init__.py').read_text().count('UPSTREAM_NIGHTLY_E2E'))"
    )
    output = _run(docker_client, master, "python", "-c", probe)
    assert nightly.sha in output, output
    assert output.split()[-1] == "1", "the image does not hold the new commit's change"


def test_the_nightly_image_serves_its_ui(
    nightly: Nightly, master: str, docker_client: docker.DockerClient
) -> None:
    line = re.search(rf"{IMAGE_ID}: passed \(.*\)$", nightly.first.stderr, re.M)
    assert line and ", UI served in " in line.group(0), nightly.first.stderr
    # Pulled from the registry and checked again: the UI is what the label promises.
    image_labels = docker_client.images.get(master).labels
    assert smoke.ui_check(image_labels) == smoke.UI_REQUIRED
    result = smoke.check(
        docker_client,
        master,
        python="3.13",
        prefect_version=image_labels[labels.VERSION],
        extras_present=(),
        extras_absent=(),
        ui=smoke.UI_REQUIRED,
    )
    assert result.ui.startswith("UI served in ") and result.ui.endswith("(ui, ui-v2)"), result.ui


def test_a_rerun_without_a_new_commit_builds_and_fetches_nothing(nightly: Nightly) -> None:
    assert nightly.rerun.returncode == 0, nightly.rerun.stderr
    assert "nothing to build" in nightly.rerun.stderr and nightly.sha[:12] in nightly.rerun.stderr
    for step in ("building prefect's wheel", "ui:", "resolving", "smoke-testing", "uploading"):
        assert step not in nightly.rerun.stderr, nightly.rerun.stderr

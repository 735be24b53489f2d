"""Nightly builds for real: a git repository holding a real Prefect release's source is
built into a wheel on the host and published beside the `published` fixture's release
tags; a second commit moves `master`; a run without new commits builds nothing.

The sequence runs once (module fixture `nightlies`); the tests assert on what it recorded
and on the registry. The nightly tags are removed from the registry before and after, so
the namespace holds the release tags alone for the other e2e tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.parser import HeaderParser
from pathlib import Path

import docker
import pytest
import requests

from publisher.errors import SourceError
from publisher.staging import is_staging
from tests.helpers import assert_one_error_line

from .conftest import SECRET, Published, Services, run_publisher, write_matrix

REVISION = "org.opencontainers.image.revision"
VERSION = "org.opencontainers.image.version"

# The first commit is made late on 29 February in New York, which is 1 March in UTC: the
# dated tag must carry the UTC date of the commit (not the local one, nor today's).
FIRST_DATE = "2024-02-29T22:15:00-05:00"
SECOND_DATE = "2024-03-02T09:30:00+01:00"
# The second commit's change: a real line in a module that ends up in the wheel.
MARKER = "NIGHTLY_E2E_SECOND_COMMIT = True"
# Asks the image's Python whether the installed prefect package carries that line.
HAS_MARKER = (
    "import importlib.util, pathlib;"
    "print(pathlib.Path(importlib.util.find_spec('prefect').origin).read_text()"
    f".count({MARKER!r}))"
)


def utc_day(date: str) -> str:
    return datetime.fromisoformat(date).astimezone(timezone.utc).strftime("%Y%m%d")


def is_nightly(tag: str) -> bool:
    return tag == "master" or tag.startswith("master-")


def is_release(tag: str) -> bool:
    """A tag of a release: neither a nightly's nor a staging tag (which every upload moves)."""
    return not is_nightly(tag) and not is_staging(tag)


def git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {
        **os.environ,
        # No user or system git config: the commits (and so their shas) are the same
        # on every machine.
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Nightly Test",
        "GIT_AUTHOR_EMAIL": "nightly-test@example.invalid",
        "GIT_COMMITTER_NAME": "Nightly Test",
        "GIT_COMMITTER_EMAIL": "nightly-test@example.invalid",
    }
    if date is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


@dataclass(frozen=True, kw_only=True)
class Source:
    """A git repository (branch main) holding the source of a real Prefect release."""

    path: Path
    version: str  # the version that source declares (its PKG-INFO)
    first: str  # sha of the first commit

    def commit_change(self) -> str:
        module = self.path / "src" / "prefect" / "__init__.py"
        with module.open("a") as f:
            f.write(f"\n{MARKER}\n")
        git(
            self.path,
            "commit",
            "--quiet",
            "--all",
            "-m",
            "Mark the second commit",
            date=SECOND_DATE,
        )
        return git(self.path, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def source(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Source:
    root = tmp_path_factory.mktemp("nightly-source")
    with tarfile.open(services.sdist) as sdist:
        sdist.extractall(root, filter="data")
    (path,) = root.iterdir()
    version = HeaderParser().parsestr((path / "PKG-INFO").read_text())["Version"]
    git(path, "init", "--quiet", "--initial-branch=main")
    # --force: the sdist holds files the source tree's .gitignore lists because a build
    # generates them (prefect/_build_info.py, the UI bundles); without them the wheel
    # built from the repository would not import.
    git(path, "add", "--all", "--force")
    git(path, "commit", "--quiet", "-m", f"Prefect {version} source", date=FIRST_DATE)
    return Source(path=path, version=version, first=git(path, "rev-parse", "HEAD"))


def nightly_env(services: Services) -> dict[str, str]:
    """The package index for everything the nightly installs, and nothing else.

    The host's wheel build gets prefect's build backend from the same index the images'
    packages come from; no pip.conf, find-links or extra index of this machine may stand
    in for it. The URL carries credentials, as a private mirror's would.
    """
    return {
        "PIP_INDEX_URL": services.index_with_secret(),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
    }


@dataclass(frozen=True, kw_only=True)
class Run:
    result: subprocess.CompletedProcess[str]
    seconds: float
    digests: dict[str, str | None]  # every tag of the repository after the run

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr


@dataclass(frozen=True, kw_only=True)
class Probe:
    """`master` pulled from the registry and run."""

    digest: str  # the manifest digest docker pulled
    prefect_version: str  # what `prefect version` reports
    markers: int  # how often the installed prefect/__init__.py holds MARKER


@dataclass(frozen=True, kw_only=True)
class Nightlies:
    source: Source
    second: str  # sha of the second commit
    before: dict[str, str | None]  # every tag before the first run
    runs: tuple[Run, Run, Run]  # first commit, second commit, no new commit
    probes: tuple[Probe, Probe]  # master after the first and the second run

    @property
    def first_tag(self) -> str:
        return f"master-{utc_day(FIRST_DATE)}-{self.source.first[:7]}"

    @property
    def second_tag(self) -> str:
        return f"master-{utc_day(SECOND_DATE)}-{self.second[:7]}"


def snapshot(published: Published) -> dict[str, str | None]:
    return {
        tag: published.registry.digest(published.repo, tag)
        for tag in published.registry.tags(published.repo)
    }


def purge_nightly_tags(published: Published) -> None:
    """Delete the nightly images' manifests (and with them their tags) from the registry."""
    tags = snapshot(published)
    releases = {digest for tag, digest in tags.items() if is_release(tag)}
    for digest in {d for tag, d in tags.items() if is_nightly(tag) and d is not None}:
        assert digest not in releases, f"a nightly tag shares {digest} with a release tag"
        response = requests.delete(
            f"{published.registry.base_url}/v2/{published.repo}/manifests/{digest}", timeout=30
        )
        assert response.status_code == 202, f"DELETE {digest}: {response.status_code}"
    left = [tag for tag in published.registry.tags(published.repo) if is_nightly(tag)]
    assert not left, f"nightly tags survived the purge: {left}"


def container(client: docker.DockerClient, image: str, command: list[str]) -> tuple[int, str]:
    """Run ``command`` through the image's entrypoint; its exit status and output."""
    box = client.containers.create(image, command)
    try:
        box.start()
        status = box.wait(timeout=600)
        return int(status["StatusCode"]), box.logs().decode("utf-8", "replace")
    finally:
        box.remove(force=True)


def pulled_master(client: docker.DockerClient, published: Published) -> str:
    """Pull `master` by its registry reference; the pulled image as repository@digest."""
    reference = published.reference("master")
    repository = reference.rsplit(":", 1)[0]
    image = client.images.pull(reference)
    (by_digest,) = [d for d in image.attrs["RepoDigests"] if d.startswith(repository + "@")]
    return str(by_digest)


def probe(client: docker.DockerClient, published: Published) -> Probe:
    image = pulled_master(client, published)
    code, version = container(client, image, ["prefect", "version"])
    assert code == 0, version
    code, markers = container(client, image, ["python", "-c", HAS_MARKER])
    assert code == 0, markers
    reported = next(
        line.split(":", 1)[1].strip()
        for line in version.splitlines()
        if line.strip().startswith("Version:")
    )
    return Probe(
        digest=image.split("@", 1)[1],
        prefect_version=reported,
        markers=int(markers.strip().splitlines()[-1]),
    )


@pytest.fixture(scope="module")
def nightlies(
    published: Published,
    services: Services,
    source: Source,
    docker_client: docker.DockerClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Nightlies]:
    matrix = write_matrix(
        tmp_path_factory.mktemp("nightly-matrix"),
        services,
        nightly={"repository": str(source.path), "ref": "main"},
    )

    def nightly(what: str) -> Run:
        started = time.monotonic()
        result = run_publisher(
            "nightly",
            "--matrix",
            matrix,
            "--registry",
            published.namespace,
            env=nightly_env(services),
        )
        seconds = time.monotonic() - started
        print(f"nightly run ({what}): {seconds:.1f} s, exit {result.returncode}", file=sys.stderr)
        assert result.returncode == 0, f"nightly ({what}) failed:\n{result.stdout}\n{result.stderr}"
        return Run(result=result, seconds=seconds, digests=snapshot(published))

    purge_nightly_tags(published)  # what an interrupted earlier run may have left
    before = snapshot(published)
    try:
        first = nightly("first commit")
        first_probe = probe(docker_client, published)
        second_sha = source.commit_change()
        second = nightly("second commit")
        second_probe = probe(docker_client, published)
        third = nightly("no new commit")
        yield Nightlies(
            source=source,
            second=second_sha,
            before=before,
            runs=(first, second, third),
            probes=(first_probe, second_probe),
        )
    finally:
        purge_nightly_tags(published)


def test_first_nightly_publishes_master_and_its_dated_tag(
    nightlies: Nightlies, published: Published
) -> None:
    first = nightlies.runs[0].digests
    assert set(first) - set(nightlies.before) == {"master", nightlies.first_tag}
    assert first["master"] is not None
    assert first[nightlies.first_tag] == first["master"]
    assert nightlies.first_tag == f"master-20240301-{nightlies.source.first[:7]}"
    labels = published.registry.labels(published.repo, nightlies.first_tag)
    assert labels[REVISION] == nightlies.source.first
    assert labels[VERSION] == nightlies.source.version


def test_master_runs_the_prefect_built_from_the_source(nightlies: Nightlies) -> None:
    first, second = nightlies.probes
    assert first.digest == nightlies.runs[0].digests["master"]
    assert first.prefect_version == nightlies.source.version
    assert first.markers == 0
    assert second.digest == nightlies.runs[1].digests["master"]
    assert second.prefect_version == nightlies.source.version
    assert second.markers == 1, "master does not hold the second commit's change"


def test_second_nightly_moves_master_and_keeps_the_first_image(
    nightlies: Nightlies, published: Published
) -> None:
    first, second = nightlies.runs[0].digests, nightlies.runs[1].digests
    assert set(second) - set(first) == {nightlies.second_tag}
    assert second["master"] != first["master"]
    assert second[nightlies.second_tag] == second["master"]
    assert second[nightlies.first_tag] == first[nightlies.first_tag] == first["master"]
    labels = published.registry.labels(published.repo, "master")
    assert labels[REVISION] == nightlies.second
    assert labels[VERSION] == nightlies.source.version


def test_a_run_without_new_commits_builds_nothing(nightlies: Nightlies) -> None:
    second, third = nightlies.runs[1:]
    assert "nothing to build" in third.output
    assert nightlies.second[:12] in third.output
    for step in ("building", "resolv", "smoke-testing", "uploading", "moved"):
        assert step not in third.output, third.output
    assert third.digests == second.digests


def test_no_release_tag_moves(nightlies: Nightlies) -> None:
    releases = {tag: d for tag, d in nightlies.before.items() if is_release(tag)}
    assert releases and all(releases.values())
    for run in nightlies.runs:
        assert {tag: d for tag, d in run.digests.items() if is_release(tag)} == releases


def test_nightly_image_holds_no_git_and_no_source_checkout(
    nightlies: Nightlies, published: Published, docker_client: docker.DockerClient
) -> None:
    image = pulled_master(docker_client, published)
    code, output = container(docker_client, image, ["sh", "-c", "command -v git"])
    assert code != 0 and output.strip() == "", f"git is in the image: {output}"
    # hatch_build.py sits at the top of Prefect's source tree and is not in its wheel.
    find = "find / -path /proc -prune -o \\( -name .git -o -name hatch_build.py \\) -print"
    code, output = container(docker_client, image, ["sh", "-c", find])
    assert code == 0 and output.strip() == "", f"a source checkout is in the image:\n{output}"
    # Installed from a wheel: a directory or VCS install records where it came from.
    code, output = container(
        docker_client,
        image,
        [
            "python",
            "-c",
            "from importlib.metadata import distribution as d; p = d('prefect');"
            "print(p.read_text('WHEEL') is not None, p.read_text('direct_url.json'))",
        ],
    )
    assert code == 0 and output.split() == ["True", "None"], output


def test_nightly_image_keeps_no_index_credential(
    nightlies: Nightlies, published: Published, docker_client: docker.DockerClient
) -> None:
    image = pulled_master(docker_client, published)
    history = docker_client.images.get(image).history()
    assert SECRET not in repr(history)
    assert SECRET not in repr(published.registry.image_config(published.repo, "master"))


def test_a_ref_that_does_not_exist_is_one_line(
    source: Source, services: Services, tmp_path: Path
) -> None:
    matrix = write_matrix(tmp_path, services, nightly={"repository": str(source.path)})
    result = run_publisher(
        "nightly",
        "--matrix",
        matrix,
        "--registry",
        f"{services.registry}/e2e-nightly-refused",
        "--ref",
        "does-not-exist",
        env=nightly_env(services),
    )
    assert_one_error_line(
        result.returncode,
        result.stderr,
        "'does-not-exist'",
        str(source.path),
        exit_code=SourceError.exit_code,
    )
    assert result.stdout == ""


def test_a_source_that_is_not_a_repository_is_one_line(services: Services, tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, services, nightly={"repository": str(tmp_path / "nowhere")})
    result = run_publisher(
        "nightly", "--matrix", matrix, "--registry", f"{services.registry}/e2e-nightly-refused"
    )
    assert_one_error_line(
        result.returncode, result.stderr, "nowhere", exit_code=SourceError.exit_code
    )


def test_an_annotated_tag_names_its_commit(
    source: Source, services: Services, tmp_path: Path
) -> None:
    git(source.path, "tag", "--annotate", "-m", "A tag object", "e2e-annotated", source.first)
    matrix = write_matrix(tmp_path, services, nightly={"repository": str(source.path)})
    result = run_publisher(
        "nightly",
        "--matrix",
        matrix,
        "--registry",
        f"{services.registry}/e2e-nightly-refused",
        "--ref",
        "e2e-annotated",
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    assert f"e2e-annotated in {source.path} is {source.first}\n" in result.stderr
    assert f"master-YYYYMMDD-{source.first[:7]}" in result.stderr


def test_a_ref_git_would_read_as_an_option_is_refused(
    source: Source, services: Services, tmp_path: Path
) -> None:
    matrix = write_matrix(tmp_path, services, nightly={"repository": str(source.path)})
    planted = tmp_path / "planted"
    result = run_publisher(
        "nightly",
        "--matrix",
        matrix,
        "--registry",
        f"{services.registry}/e2e-nightly-refused",
        f"--ref=--upload-pack=touch {planted}",
    )
    assert_one_error_line(result.returncode, result.stderr, exit_code=SourceError.exit_code)
    assert not planted.exists()

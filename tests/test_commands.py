"""The registry-reading commands end to end against a real registry, with no Docker daemon:
`diff`, `publish --dry-run`, `status`, and a publish that has nothing to build."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import assert_one_error_line
from registry_server import run_registry
from tiny_image import push_image

from publisher import cli, labels
from publisher.registry import RegistryClient

pytestmark = pytest.mark.registry

TAGS = [
    {"tag": "latest", "variant": "full", "python": "default", "release": "latest"},
    {"tag": "{version}-python{python}", "variant": "full"},
]
REPO = "ns/prefect"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/no-daemon-here.sock")
    with run_registry(tmp_path / "registry") as address:
        yield address


@pytest.fixture
def matrix(make_matrix: Callable[..., Path]) -> Path:
    return make_matrix(tags=TAGS, dockerfiles=str(Path(__file__).parents[1] / "dockerfiles"))


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def seed(host: str, tag: str, version: str) -> str:
    return push_image(host, REPO, tag, labels={labels.VERSION: version}, architecture=tag)


def test_diff_of_an_empty_registry_creates_every_tag_and_says_staleness_was_not_checked(
    registry: str, matrix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "diff", "--matrix", str(matrix), "--registry", f"{registry}/ns")
    assert code == 0
    assert "create" in out and "keep" not in out
    assert "5 tags in" in out and "5 change, 0 stay" in out
    assert "staleness not checked: no Docker daemon" in out


def test_a_backport_review_keeps_latest_and_publish_moves_only_what_it_owns(
    registry: str, matrix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The registry already holds every planned image, and `latest` names a newer release.
    digests = {
        f"{v}-python{p}": seed(registry, f"{v}-python{p}", v)
        for v in ("0.14.9", "0.14.10")
        for p in ("3.7", "3.8")
    }
    newer = seed(registry, "latest", "0.15.0")
    where = f"{registry}/ns"

    code, out, _ = run(
        capsys, "diff", "--matrix", str(matrix), "--registry", where, "--format", "json"
    )
    assert code == 0
    rows = {row["tag"]: row for row in json.loads(out)["tags"]}
    assert rows["latest"]["action"] == "keep: the registry holds a newer release"
    assert rows["latest"]["now_version"] == "0.15.0"
    assert {rows[t]["action"] for t in digests} == {"keep"}

    code, out, _ = run(capsys, "publish", "--matrix", str(matrix), "--registry", where, "--dry-run")
    assert code == 0 and "keep: the registry holds a newer release" in out

    # Nothing to build, so no daemon is needed; latest stays with the newer release.
    code, out, err = run(capsys, "publish", "--matrix", str(matrix), "--registry", where)
    assert code == 0, err
    assert "kept latest: the registry holds 0.15.0, newer than 0.14.10" in out
    with RegistryClient(registry) as client:
        assert client.digest(REPO, "latest") == newer
        assert {t: client.digest(REPO, t) for t in digests} == digests

    code, out, err = run(
        capsys, "publish", "--matrix", str(matrix), "--registry", where, "--allow-downgrade"
    )
    assert code == 0, err
    with RegistryClient(registry) as client:
        assert client.digest(REPO, "latest") == digests["0.14.10-python3.7"]


def test_status_needs_the_daemon_to_identify_base_images(
    registry: str, matrix: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "status", "--matrix", str(matrix), "--registry", f"{registry}/ns")
    assert_one_error_line(code, err, "cannot reach the Docker daemon", "DOCKER_HOST", exit_code=3)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--replace", "core-*"], "--replace 'core-*' matches no planned image"),
        (["--select", "nothing-*"], "--select 'nothing-*' matches no image"),
    ],
)
def test_a_glob_matching_nothing_is_one_line(
    registry: str,
    matrix: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    fragment: str,
) -> None:
    code, _, err = run(
        capsys, "diff", "--matrix", str(matrix), "--registry", f"{registry}/ns", *args
    )
    assert_one_error_line(code, err, fragment, exit_code=2)


# -- promote: registry only ------------------------------------------------------------------


def test_promote_writes_each_staged_index_then_rolling_tags_and_is_idempotent(
    registry: str, make_matrix: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = make_matrix(tags=TAGS, versions=["0.14.10"], platforms=["linux/amd64", "linux/arm64"])
    where = f"{registry}/ns"
    code, _, err = run(capsys, "promote", "--matrix", str(matrix), "--registry", where)
    assert code == 7
    lines = err.splitlines()
    first = lines.index(
        "publisher: error: 2 of 2 planned images are not ready; nothing was written:"
    )
    assert len(lines) == first + 3
    assert "  missing full-0.14.10-py3.7: no linux/amd64, linux/arm64 image staged" in lines
    client = RegistryClient(registry)
    assert client.tags(REPO) == []

    # What two platform shards leave behind: each platform image under its staging tag.
    staged = {
        (python, arch): push_image(
            registry,
            REPO,
            f"_stage-0.14.10-python{python}-linux-{arch}",
            labels={labels.VERSION: "0.14.10"},
            architecture=arch,
        )
        for python in ("3.7", "3.8")
        for arch in ("amd64", "arm64")
    }
    code, out, err = run(capsys, "promote", "--matrix", str(matrix), "--registry", where)
    assert code == 0, err
    assert "pushed" in out
    for python in ("3.7", "3.8"):
        tag = f"0.14.10-python{python}"
        assert client.platform_images(REPO, tag) == {
            "linux/amd64": staged[(python, "amd64")],
            "linux/arm64": staged[(python, "arm64")],
        }
    assert client.digest(REPO, "latest") == client.digest(REPO, "0.14.10-python3.7")
    before = {tag: client.digest(REPO, tag) for tag in client.tags(REPO)}

    code, out, _ = run(capsys, "promote", "--matrix", str(matrix), "--registry", where)
    assert code == 0
    assert "published" in out
    assert {tag: client.digest(REPO, tag) for tag in client.tags(REPO)} == before

"""nightly: the source to build, ref resolution against a local git repository, the wheel
build (with pip stood in for by a script), and the run's decisions, without Docker."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from fakes import FakeRegistry

from publisher import labels, nightly
from publisher.build import NightlySource, Settings
from publisher.destination import Destination
from publisher.errors import MatrixError, SourceError
from publisher.matrix import Matrix, load
from publisher.nightly import Source, _pip_reason, _wheel_metadata, resolve, source_of
from publisher.progress import Reporter
from publisher.publish import Options, Result
from publisher.wheels import IndexOptions

ROOT = Path(__file__).resolve().parent.parent
MATRIX: dict[str, Any] = {
    "image": "prefecthq/prefect",
    "base_image": "python:{python}-slim",
    "versions": ["3.9.1"],
    "variants": {
        "core": {"pythons": ["3.13"]},
        "full": {"pythons": ["3.11", "3.13"], "default_python": "3.13", "extras": ["docker"]},
    },
    "nightly": {"repository": "../prefect", "ref": "main"},
    "tags": [
        {"tag": "{version}-python{python}", "variant": "full"},
        {"tag": "core-{version}", "variant": "core"},
        {"tag": "master", "variant": "full", "python": "3.13", "release": "nightly"},
        {"tag": "master-{date}-{sha}", "variant": "full", "python": "3.13", "release": "nightly"},
    ],
}


@pytest.fixture
def matrix_at(tmp_path: Path) -> Callable[..., Matrix]:
    def make(**overrides: Any) -> Matrix:
        folder = tmp_path / "project"
        folder.mkdir(exist_ok=True)
        path = folder / "matrix.yaml"
        data = {**MATRIX, **overrides}
        data = {k: v for k, v in data.items() if v is not None}
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return load(path)

    return make


# -- source_of ---------------------------------------------------------------------------


def test_source_of_a_matrix_without_nightly_is_refused(matrix_at: Callable[..., Matrix]) -> None:
    matrix = matrix_at(
        nightly=None, tags=[t for t in MATRIX["tags"] if t.get("release") != "nightly"]
    )
    with pytest.raises(MatrixError, match="has no 'nightly' section"):
        source_of(matrix, None, None)


def test_source_of_resolves_a_local_path_relative_to_the_matrix(
    matrix_at: Callable[..., Matrix], tmp_path: Path
) -> None:
    matrix = matrix_at()
    # Not there: kept as written (it may be a URL-like name git understands).
    assert source_of(matrix, None, None) == Source(location="../prefect", ref="main")
    (tmp_path / "prefect").mkdir()
    assert source_of(matrix, None, "dev") == Source(
        location=str((tmp_path / "prefect").resolve()), ref="dev"
    )


def test_source_of_arguments_override_the_matrix(
    matrix_at: Callable[..., Matrix], tmp_path: Path
) -> None:
    matrix = matrix_at(
        nightly={"repository": "https://github.com/PrefectHQ/prefect.git", "ref": "main"}
    )
    assert source_of(matrix, None, None) == Source(
        location="https://github.com/PrefectHQ/prefect.git", ref="main"
    )
    assert source_of(matrix, "https://example.com/fork.git", "v1") == Source(
        location="https://example.com/fork.git", ref="v1"
    )
    assert source_of(matrix, str(tmp_path), None).location == str(tmp_path.resolve())


# -- a local git repository --------------------------------------------------------------

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str, date: str = "2025-01-02T23:30:00-0200") -> str:
    env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    result = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """main: two commits (VERSION dev1, dev2); tags v1 (annotated) and light on the first;
    branch feature/main on the first."""
    path = tmp_path_factory.mktemp("prefect-src")
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "NAME").write_text("prefect")
    (path / "VERSION").write_text("3.10.0.dev1")
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "first")
    first = git(path, "rev-parse", "HEAD")
    git(path, "tag", "-a", "v1", "-m", "release")
    git(path, "tag", "light")
    git(path, "branch", "feature/main")
    (path / "VERSION").write_text("3.10.0.dev2")
    git(path, "commit", "--quiet", "-am", "second", date="2025-02-03T10:00:00+0000")
    second = git(path, "rev-parse", "HEAD")
    return {"path": path, "first": first, "second": second}


def test_resolve_branches_tags_and_shas(repo: dict[str, Any]) -> None:
    where = str(repo["path"])
    assert resolve(Source(location=where, ref="main")) == repo["second"]
    assert resolve(Source(location=where, ref="HEAD")) == repo["second"]
    assert resolve(Source(location=where, ref="refs/heads/main")) == repo["second"]
    # An annotated tag is peeled to its commit; a lightweight one names it already.
    assert resolve(Source(location=where, ref="v1")) == repo["first"]
    assert resolve(Source(location=where, ref="light")) == repo["first"]
    assert resolve(Source(location=where, ref="feature/main")) == repo["first"]
    # A full sha is taken as it is, without asking the repository.
    sha = "f" * 40
    assert resolve(Source(location="/nonexistent", ref=sha)) == sha


def test_resolve_only_exact_names(repo: dict[str, Any], tmp_path: Path) -> None:
    where = str(repo["path"])
    # "feature/main" exists, but "main" is the branch main, not a suffix match.
    assert resolve(Source(location=where, ref="main")) == repo["second"]
    with pytest.raises(SourceError, match="ref 'nope' does not exist in"):
        resolve(Source(location=where, ref="nope"))
    with pytest.raises(SourceError, match="cannot look up 'main'"):
        resolve(Source(location=str(tmp_path / "missing"), ref="main"))


@pytest.mark.parametrize(
    ("location", "ref", "message"),
    [
        ("--upload-pack=touch /tmp/x", "main", "source '--upload-pack"),
        ("/repo", "--exec=x", "ref '--exec=x' is not a repository or ref name"),
        ("", "main", "source '' is not"),
        ("/repo", "", "ref '' is not"),
    ],
)
def test_resolve_refuses_what_git_would_read_as_an_option(
    location: str, ref: str, message: str
) -> None:
    with pytest.raises(SourceError, match=message):
        resolve(Source(location=location, ref=ref))


def test_resolve_hides_credentials_in_its_error(repo: dict[str, Any]) -> None:
    with pytest.raises(SourceError) as caught:
        resolve(Source(location="https://user:secret@127.0.0.1:9/prefect.git", ref="main"))
    assert "secret" not in str(caught.value)


# -- the wheel build ---------------------------------------------------------------------

FAKE_PIP = r"""
import os, sys, zipfile
args = sys.argv[3:]  # after "-m pip"
out = args[args.index("--wheel-dir") + 1]
checkout = args[-1]
mode = os.environ.get("FAKE_PIP", "ok")
if mode == "fail":
    print("Collecting hatchling\nERROR: Could not find a version that satisfies hatchling")
    print("error: subprocess-exited-with-error while installing build dependencies")
    sys.exit(1)
name = open(os.path.join(checkout, "NAME")).read().strip()
version = open(os.path.join(checkout, "VERSION")).read().strip()
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "require-ui"), "w") as f:
    f.write(os.environ.get("PREFECT_REQUIRE_PACKAGED_UI_BUNDLES", ""))
count = 2 if mode == "two" else 0 if mode == "none" else 1
for n in range(count):
    path = os.path.join(out, f"{name}-{version}-py3-none-any{n or ''}.whl")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA",
                         f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
print(" ".join(args))
"""


@pytest.fixture
def fake_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake-python"
    script.write_text(f"#!{sys.executable}\n" + FAKE_PIP)
    script.chmod(0o755)
    monkeypatch.setattr(nightly, "sys", types.SimpleNamespace(executable=str(script)))
    return script


def test_build_wheel_builds_the_commit_asked_for(
    repo: dict[str, Any], fake_pip: Path, tmp_path: Path
) -> None:
    source = Source(location=str(repo["path"]), ref="v1")
    work = tmp_path / "work"
    work.mkdir()
    artifact = nightly.build_wheel(source, repo["first"], work, IndexOptions())
    assert artifact.version == "3.10.0.dev1"  # the first commit's, not main's
    assert artifact.wheel.name == "prefect-3.10.0.dev1-py3-none-any.whl"
    assert artifact.ui == labels.UI_ABSENT  # a source without UI projects builds as before
    assert (work / "dist" / "require-ui").read_text() == ""
    # The commit date in UTC: 23:30 at -02:00 is the next day.
    assert (artifact.revision.sha, artifact.revision.date) == (repo["first"], "20250103")
    # The checkout holds exactly that commit: no history came with it.
    checkout = work / "source"
    assert git(checkout, "rev-list", "--count", "HEAD") == "1"


def test_build_wheel_of_another_commit(
    repo: dict[str, Any], fake_pip: Path, tmp_path: Path
) -> None:
    artifact = nightly.build_wheel(
        Source(location=str(repo["path"]), ref="main"), repo["second"], tmp_path, IndexOptions()
    )
    assert (artifact.version, artifact.revision.date) == ("3.10.0.dev2", "20250203")


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", "while installing the source's build requirements from the package index"),
        ("two", "built 2 wheels, expected one"),
        ("none", "built 0 wheels, expected one"),
    ],
)
def test_build_wheel_failures(
    repo: dict[str, Any],
    fake_pip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    message: str,
) -> None:
    monkeypatch.setenv("FAKE_PIP", mode)
    with pytest.raises(SourceError, match=message):
        nightly.build_wheel(
            Source(location=str(repo["path"]), ref="main"), repo["second"], tmp_path, IndexOptions()
        )


def test_build_wheel_refuses_a_wheel_that_is_not_prefect(fake_pip: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "--quiet", "--initial-branch=main")
    (other / "NAME").write_text("notprefect")
    (other / "VERSION").write_text("1.0")
    git(other, "add", ".")
    git(other, "commit", "--quiet", "-m", "x")
    sha = git(other, "rev-parse", "HEAD")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(SourceError, match=r"notprefect-1\.0-py3-none-any\.whl, not a prefect"):
        nightly.build_wheel(Source(location=str(other), ref="main"), sha, work, IndexOptions())


@pytest.fixture
def ui_repo(tmp_path: Path) -> tuple[Path, str]:
    """A source with both UI projects, as upstream's checkout has them."""
    path = tmp_path / "ui-src"
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch=main")
    (path / "NAME").write_text("prefect")
    (path / "VERSION").write_text("3.10.0.dev3")
    for name in ("ui", "ui-v2"):
        (path / name).mkdir()
        (path / name / "package.json").write_text(json.dumps({"name": name}))
    git(path, "add", ".")
    git(path, "commit", "--quiet", "-m", "with ui")
    return path, git(path, "rev-parse", "HEAD")


@pytest.mark.parametrize(
    ("build_ui", "state", "required"),
    [(True, labels.UI_BUILT, "1"), (False, labels.UI_SKIPPED, "")],
)
def test_build_wheel_builds_the_ui_unless_told_not_to(
    ui_repo: tuple[Path, str],
    fake_pip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    build_ui: bool,
    state: str,
    required: str,
) -> None:
    built: list[Path] = []
    indexes: list[IndexOptions] = []

    def build(checkout: Path, reporter: object, *, index: IndexOptions) -> None:
        built.append(checkout)
        indexes.append(index)

    monkeypatch.setattr(nightly.ui, "build", build)
    path, sha = ui_repo
    work = tmp_path / "work"
    work.mkdir()
    source = Source(location=str(path), ref="main", ui=build_ui)
    index = IndexOptions(index_url="http://127.0.0.1:1/simple/")
    artifact = nightly.build_wheel(source, sha, work, index)
    assert artifact.ui == state
    assert built == ([work / "source"] if build_ui else [])
    # Node from PyPI comes from the index the nightly was given.
    assert indexes == ([index] if build_ui else [])
    # With the bundles built, the build backend must fail a wheel that lacks one.
    assert (work / "dist" / "require-ui").read_text() == required


def test_build_wheel_of_a_missing_commit(repo: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot fetch 0{12} from"):
        nightly.build_wheel(
            Source(location=str(repo["path"]), ref="main"), "0" * 40, tmp_path, IndexOptions()
        )


# -- wheel metadata and pip's reasons ----------------------------------------------------


def make_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return path


def test_wheel_metadata(tmp_path: Path) -> None:
    good = make_zip(
        tmp_path / "prefect-3.10.0.dev1-py3-none-any.whl",
        {
            "prefect/__init__.py": "",
            "prefect-3.10.0.dev1.dist-info/METADATA": "Metadata-Version: 2.1\nName: prefect\n"
            "Version: 3.10.0.dev1\nRequires-Dist: anyio\n\nLong description\nName: not this\n",
        },
    )
    assert _wheel_metadata(good) == ("prefect", "3.10.0.dev1")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"prefect/__init__.py": ""}, "has no single .dist-info/METADATA"),
        (
            {"a-1.dist-info/METADATA": "Name: a\n", "b-1.dist-info/METADATA": "Name: b\n"},
            "has no single",
        ),
        ({"p-1.dist-info/METADATA": "Metadata-Version: 2.1\nName: p\n"}, "names no project or"),
    ],
)
def test_wheel_metadata_refuses(tmp_path: Path, files: dict[str, str], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        _wheel_metadata(make_zip(tmp_path / "x-1-py3-none-any.whl", files))


def test_wheel_metadata_of_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "x-1-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(SourceError, match=r"cannot read x-1-py3-none-any\.whl"):
        _wheel_metadata(broken)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        (
            "ERROR: Could not find hatchling (from https://u:p@idx/simple)\n"
            "error: ... installing build dependencies\n",
            "Could not find hatchling (from https://***@idx/simple) (while installing the "
            "source's build requirements from the package index)",
        ),
        ("ERROR: first\nERROR: second\n", "first"),
        ("building...\n  failed at https://t@x/  \n", "failed at https://***@x/"),
        ("  \n", "pip gave no message"),
    ],
)
def test_pip_reason(output: str, expected: str) -> None:
    assert _pip_reason(output) == expected


# -- run ---------------------------------------------------------------------------------

SHA = "abcdef0123456789abcdef0123456789abcdef01"
DEST = Destination.parse("localhost:5000/ns")


def options(**kw: Any) -> Options:
    settings = Settings(dockerfiles=ROOT / "dockerfiles")
    return Options(build=kw.pop("build", settings), destination=kw.pop("destination", DEST), **kw)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    seen: dict[str, Any] = {"built": [], "published": []}
    wheel = tmp_path / "prefect-3.10.0.dev7-py3-none-any.whl"

    def build_wheel(
        source: Source, sha: str, workdir: Path, index: IndexOptions, reporter: Reporter
    ) -> Any:
        seen["built"].append((source, sha, index))
        return nightly.Artifact(
            wheel=wheel,
            version="3.10.0.dev7",
            revision=nightly.Revision(sha=sha, date="20250304"),
            ui=labels.UI_SKIPPED,
        )

    def publish(matrix: Matrix, the_plan: Any, opts: Options, reporter: Reporter) -> Result:
        seen["published"].append((the_plan, opts))
        return Result(outcomes=[], notes=[])

    monkeypatch.setattr(nightly, "build_wheel", build_wheel)
    monkeypatch.setattr(nightly, "publish", publish)
    seen["wheel"] = wheel
    return seen


def registry_with(monkeypatch: pytest.MonkeyPatch, revision: str | None) -> FakeRegistry:
    registry = FakeRegistry()
    if revision is not None:
        found = {labels.REVISION: revision} if revision else {}
        registry.seed("ns/prefect", ["master"], found, "nightly")
    monkeypatch.setattr(nightly, "open_registry", lambda destination, credentials: registry)
    return registry


def test_run_builds_and_publishes_a_new_commit(
    matrix_at: Callable[..., Matrix], calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_with(monkeypatch, "0" * 40)  # master holds another commit
    source = Source(location="/src", ref="main")
    result = nightly.run(matrix_at(), source, SHA, [], options(), Reporter(stream=io.StringIO()))

    assert result == Result(outcomes=[], notes=[])
    assert [(s, sha) for s, sha, _ in calls["built"]] == [(source, SHA)]
    ((the_plan, opts),) = calls["published"]
    (image,) = the_plan.images
    assert image.id == "full-nightly-py3.13"
    assert image.prefect_version == "3.10.0.dev7"  # what the wheel says, not the ref
    assert [t.name for t in image.tags] == ["master", "master-20250304-abcdef0"]
    assert opts.build.nightly == NightlySource(
        wheel=calls["wheel"], revision=SHA, ui=labels.UI_SKIPPED
    )
    assert registry.closed
    assert [c.method for c in registry.calls] == ["digest", "labels"]


@pytest.mark.parametrize("held", [None, ""])  # no master tag; master without a revision
def test_run_builds_when_the_registry_cannot_say(
    matrix_at: Callable[..., Matrix],
    calls: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    held: str | None,
) -> None:
    registry_with(monkeypatch, held)
    nightly.run(matrix_at(), Source(location="/src", ref="main"), SHA, [], options(), Reporter())
    assert len(calls["published"]) == 1


def test_run_does_nothing_when_the_commit_is_published(
    matrix_at: Callable[..., Matrix], calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry_with(monkeypatch, SHA)
    stream = io.StringIO()
    result = nightly.run(
        matrix_at(),
        Source(location="/src", ref="main"),
        SHA,
        [],
        options(),
        Reporter(stream=stream),
    )
    assert result is None
    assert calls["built"] == [] and calls["published"] == []
    assert f"master in localhost:5000/ns already built from {SHA[:12]}" in stream.getvalue()

    # --force rebuilds anyway.
    settings = Settings(dockerfiles=ROOT / "dockerfiles", force=True)
    nightly.run(
        matrix_at(),
        Source(location="/src", ref="main"),
        SHA,
        [],
        options(build=settings),
        Reporter(),
    )
    assert len(calls["published"]) == 1


def test_run_without_a_destination_or_a_rolling_tag_always_builds(
    matrix_at: Callable[..., Matrix], calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_with(monkeypatch, SHA)
    source = Source(location="/src", ref="main")
    nightly.run(matrix_at(), source, SHA, [], options(destination=None), Reporter())
    assert len(calls["published"]) == 1
    only_immutable = [t for t in MATRIX["tags"] if t["tag"] != "master"]
    nightly.run(matrix_at(tags=only_immutable), source, SHA, [], options(), Reporter())
    assert len(calls["published"]) == 2
    assert registry.calls == []


def test_run_dry_run_describes_and_touches_nothing(
    matrix_at: Callable[..., Matrix], calls: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = registry_with(monkeypatch, None)
    stream = io.StringIO()
    result = nightly.run(
        matrix_at(),
        Source(location="/src", ref="main"),
        SHA,
        ["full-*"],
        options(dry_run=True),
        Reporter(stream=stream),
    )
    assert result is None
    assert calls["built"] == [] and registry.calls == []
    assert "push master-YYYYMMDD-abcdef0" in stream.getvalue()
    assert "then move master" in stream.getvalue()


def test_commit_revision_fetches_the_commit_date_in_utc(repo: dict[str, Any]) -> None:
    source = Source(location=str(repo["path"]), ref="main")
    # 23:30 at -02:00 is the next day in UTC.
    assert nightly.commit_revision(source, repo["first"]) == nightly.Revision(
        sha=repo["first"], date="20250103"
    )
    assert nightly.commit_revision(source, repo["second"]).date == "20250203"
    with pytest.raises(SourceError, match="cannot fetch commit 000000000000"):
        nightly.commit_revision(source, "0" * 40)

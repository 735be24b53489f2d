"""publisher.cli: the commands end to end, through main() and once through `python -m`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from publisher import docs
from publisher.cli import build_parser, main
from publisher.matrix import load
from tests.helpers import assert_one_error_line

HIGHEST = "0.14.22"
FULL = {"pythons": ["3.7", "3.8"], "default_python": "3.7"}
EVERY_PYTHON = {"tag": "{version}-python{python}", "variant": "full"}


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    def invoke(*argv: str | Path) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def in_repo(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run from the checkout, where --matrix and --page defaults point."""
    monkeypatch.chdir(repo_root)
    return repo_root


@pytest.fixture
def page_copies(repo_root: Path, tmp_path: Path) -> list[Path]:
    copies = []
    for name in ("docs/images.md", "README.md"):
        copy = tmp_path / name.replace("/", "-")
        shutil.copyfile(repo_root / name, copy)
        copies.append(copy)
    return copies


# --- plan ------------------------------------------------------------------------------------


def test_plan_table(run: Callable[..., tuple[int, str, str]], in_repo: Path) -> None:
    code, out, err = run("plan")
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0].split() == [
        "Image",
        "Prefect",
        "Python",
        "Base",
        "image",
        "Immutable",
        "tags",
        "Rolling",
        "tags",
    ]
    assert lines[-1] == "92 images, 120 tags"
    row = next(line for line in lines if line.startswith(f"full-{HIGHEST}-py3.7 "))
    assert row.split(maxsplit=4)[:4] == [f"full-{HIGHEST}-py3.7", HIGHEST, "3.7", "python:3.7-slim"]
    assert f"{HIGHEST}, {HIGHEST}-python3.7" in row
    assert "latest, latest-python3.7" in row


def test_plan_json(run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path) -> None:
    code, out, _ = run("plan", "--format", "json", "--matrix", shipped_matrix_path)
    assert code == 0
    data = json.loads(out)
    assert len(data["images"]) == 92
    for image in data["images"]:
        assert {"id", "variant", "prefect_version", "python_version", "tags"} <= image.keys()
        assert image["tags"]
    by_id = {image["id"]: image for image in data["images"]}
    latest = by_id[f"full-{HIGHEST}-py3.7"]
    assert latest["variant"] == "full"
    assert latest["prefect_version"] == HIGHEST
    assert latest["python_version"] == "3.7"
    assert latest["tags"] == ["latest", "latest-python3.7", HIGHEST, f"{HIGHEST}-python3.7"]
    assert by_id["core-0.14.10-py3.8"]["tags"] == ["core-0.14.10"]


def test_plan_json_keeps_python_versions_as_strings(
    run: Callable[..., tuple[int, str, str]], prefect3_matrix_path: Path
) -> None:
    code, out, _ = run("plan", "--format", "json", "--matrix", prefect3_matrix_path)
    assert code == 0
    pythons = {image["python_version"] for image in json.loads(out)["images"]}
    assert pythons == {"3.10", "3.11", "3.12", "3.13"}


def test_plan_table_keeps_python_3_10(
    run: Callable[..., tuple[int, str, str]], prefect3_matrix_path: Path
) -> None:
    code, out, _ = run("plan", "--matrix", prefect3_matrix_path, "--select", "*-3.2.1-py3.10")
    assert code == 0
    (row,) = [line for line in out.splitlines() if line.startswith("full-3.2.1-py3.10")]
    assert row.split()[:4] == ["full-3.2.1-py3.10", "3.2.1", "3.10", "python:3.10-slim"]


def test_plan_table_shows_platforms_only_when_named(
    run: Callable[..., tuple[int, str, str]],
    shipped_matrix_path: Path,
    prefect3_matrix_path: Path,
) -> None:
    code, out, _ = run("plan", "--matrix", shipped_matrix_path)
    assert code == 0
    assert "Platforms" not in out.splitlines()[0]
    assert "linux/amd64" not in out

    code, out, _ = run("plan", "--matrix", prefect3_matrix_path, "--select", "client-3.2.1-py3.10")
    assert code == 0
    header, _, row, *_ = out.splitlines()
    assert header.split()[-1] == "Platforms"
    assert row.startswith("client-3.2.1-py3.10 ")
    assert row.endswith("linux/amd64, linux/arm64")


def test_plan_json_platforms_and_package(
    run: Callable[..., tuple[int, str, str]], prefect3_matrix_path: Path
) -> None:
    code, out, _ = run("plan", "--format", "json", "--matrix", prefect3_matrix_path)
    assert code == 0
    by_id = {image["id"]: image for image in json.loads(out)["images"]}
    client = by_id["client-3.2.1-py3.12"]
    assert client["platforms"] == ["linux/amd64", "linux/arm64"]
    assert client["package"] == "prefect-client"
    assert by_id["kubernetes-3.2.1-py3.12"]["package"] == "prefect"
    assert by_id["kubernetes-3.2.1-py3.12"]["extras"] == ["kubernetes"]


def test_plan_nightly(run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path) -> None:
    code, out, _ = run("plan", "--nightly", "--matrix", shipped_matrix_path)
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("full-nightly-py3.7"))
    assert row.split() == [
        "full-nightly-py3.7",
        "master",
        "3.7",
        "python:3.7-slim",
        "master-YYYYMMDD-SHA",
        "master",
    ]
    assert out.splitlines()[-1] == "1 images, 2 tags"

    code, out, _ = run("plan", "--nightly", "--format", "json", "--matrix", shipped_matrix_path)
    (image,) = json.loads(out)["images"]
    assert image["tags"] == ["master", "master-YYYYMMDD-SHA"]
    assert image["nightly"] is True


def test_plan_select(run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path) -> None:
    code, out, _ = run(
        "plan",
        "--format",
        "json",
        "--matrix",
        shipped_matrix_path,
        "--select",
        "full-0.14.10-*",
        "--select",
        "core-0.14.10-*",
    )
    assert code == 0
    assert [i["id"] for i in json.loads(out)["images"]] == [
        "core-0.14.10-py3.8",
        "full-0.14.10-py3.6",
        "full-0.14.10-py3.7",
        "full-0.14.10-py3.8",
    ]


def test_plan_select_matching_nothing(
    run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path
) -> None:
    code, out, err = run("plan", "--matrix", shipped_matrix_path, "--select", "full-9.*")
    assert out == ""
    assert_one_error_line(code, err, "--select 'full-9.*' matches no image", exit_code=2)


def test_plan_nightly_select_release_ids(
    run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path
) -> None:
    code, _, err = run("plan", "--nightly", "--matrix", shipped_matrix_path, "--select", "core-*")
    assert_one_error_line(code, err, "'core-*'", exit_code=2)


# --- docs ------------------------------------------------------------------------------------


def test_docs_prints_the_generic_table(
    run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path
) -> None:
    code, out, _ = run("docs", "--matrix", shipped_matrix_path)
    assert code == 0
    assert out == docs.render(docs.generic_rows(load(shipped_matrix_path))) + "\n"
    assert out.splitlines()[2].split("|")[1].strip() == "latest"
    assert len(out.splitlines()) == 13


def test_docs_release(run: Callable[..., tuple[int, str, str]], in_repo: Path) -> None:
    code, out, _ = run("docs", "--release", "0.14.10")
    assert code == 0
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()[2:]]
    assert rows == [
        ["0.14.10", "0.14.10", "3.7"],
        ["0.14.10-python3.8", "0.14.10", "3.8"],
        ["0.14.10-python3.7", "0.14.10", "3.7"],
        ["0.14.10-python3.6", "0.14.10", "3.6"],
        ["core-0.14.10", "0.14.10", "3.8"],
    ]


@pytest.mark.parametrize(
    ("version", "fragment"),
    [("0.13.21", "not listed"), ("v0.14.10", "write '0.14.10'"), ("banana", "PEP 440")],
)
def test_docs_release_bad_version(
    run: Callable[..., tuple[int, str, str]],
    shipped_matrix_path: Path,
    version: str,
    fragment: str,
) -> None:
    code, out, err = run("docs", "--release", version, "--matrix", shipped_matrix_path)
    assert out == ""
    assert_one_error_line(code, err, "--release", fragment, exit_code=2)


def test_docs_check_fresh(
    run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path, page_copies: list[Path]
) -> None:
    before = [p.read_text() for p in page_copies]
    args = ["docs", "--check", "--matrix", shipped_matrix_path]
    code, out, err = run(*args, "--page", page_copies[0], "--page", page_copies[1])
    assert code == 0
    assert out == ""
    assert "up to date" in err
    assert [p.read_text() for p in page_copies] == before


def test_docs_check_stale(
    run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path, page_copies: list[Path]
) -> None:
    stale = page_copies[0]
    text = stale.read_text().replace("| core-X.Y.Z       |", "| core-X.Y.Z-extra |")
    stale.write_text(text)
    args = ["docs", "--check", "--matrix", shipped_matrix_path]
    code, out, err = run(*args, "--page", stale, "--page", page_copies[1])
    assert stale.read_text() == text  # --check never writes
    assert f"--- {stale} (on disk)" in out
    assert "-| core-X.Y.Z-extra |" in out
    assert "+| core-X.Y.Z       |" in out
    assert str(page_copies[1]) not in out
    assert_one_error_line(
        code, err, "1 docs page(s) out of date", "publisher docs --write", exit_code=1
    )


def test_docs_write(
    run: Callable[..., tuple[int, str, str]],
    shipped_matrix_path: Path,
    page_copies: list[Path],
    repo_root: Path,
) -> None:
    stale = page_copies[1]
    original = stale.read_text()
    start, end = original.index(docs.BEGIN), original.index(docs.END)
    stale.write_text(original[: start + len(docs.BEGIN)] + "\nnothing\n" + original[end:])
    code, out, err = run("docs", "--write", "--matrix", shipped_matrix_path, "--page", stale)
    assert code == 0
    assert out == ""
    assert "written" in err
    assert stale.read_text() == original == (repo_root / "README.md").read_text()
    code, _, _ = run("docs", "--check", "--matrix", shipped_matrix_path, "--page", stale)
    assert code == 0


def test_docs_write_to_a_page_without_markers(
    run: Callable[..., tuple[int, str, str]], shipped_matrix_path: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain.md"
    plain.write_text("# Nothing to splice into\n")
    code, _, err = run("docs", "--write", "--matrix", shipped_matrix_path, "--page", plain)
    assert_one_error_line(code, err, str(plain), "no tag-table markers", exit_code=1)
    assert plain.read_text() == "# Nothing to splice into\n"


def test_docs_check_defaults_to_the_repository_pages(
    run: Callable[..., tuple[int, str, str]], in_repo: Path
) -> None:
    code, out, err = run("docs", "--check")
    assert code == 0, out
    assert "docs/images.md, README.md: up to date" in err


def test_docs_modes_are_exclusive(
    run: Callable[..., tuple[int, str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["docs", "--write", "--check"])
    assert info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


# --- bad input -------------------------------------------------------------------------------


CLI_MATRIX_ERRORS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("unknown-key", {"verions": ["0.14.10"]}, ("did you mean 'versions'?",)),
    ("v-version", {"versions": ["v0.14.10"]}, ("versions[0]", "write '0.14.10'")),
    ("duplicate-version", {"versions": ["1.0", "1.0.0"]}, ("versions[1]", "listed twice")),
    (
        "no-default-python",
        {"variants": {"full": {"pythons": ["3.7", "3.8"]}}},
        ("variants.full", "default_python"),
    ),
    (
        "unknown-variant",
        {"tags": [{"tag": "{version}", "variant": "slim"}]},
        ("tags[0].variant", "'slim'"),
    ),
    (
        "bad-release",
        {"tags": [{**EVERY_PYTHON, "release": "newest"}]},
        ("tags[0].release", "'newest'"),
    ),
    ("bad-image", {"image": "Prefect"}, ("image", "'Prefect'")),
]


@pytest.mark.parametrize("command", ["plan", "docs"])
@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [case[1:] for case in CLI_MATRIX_ERRORS],
    ids=[case[0] for case in CLI_MATRIX_ERRORS],
)
def test_matrix_errors_through_the_cli(
    run: Callable[..., tuple[int, str, str]],
    make_matrix: Callable[..., Path],
    command: str,
    overrides: dict[str, Any],
    fragments: tuple[str, ...],
) -> None:
    path = make_matrix(**overrides)
    code, out, err = run(command, "--matrix", path)
    assert out == ""
    assert_one_error_line(code, err, str(path), *fragments, exit_code=2)


# Refused when the plan is built, not when the file is read.
CLI_PLAN_ERRORS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    (
        "invalid-docker-tag",
        {"tags": [{"tag": "latest/{python}", "variant": "full"}]},
        ("'latest/3.7'", "not a valid Docker tag"),
    ),
    (
        "same-tag-twice",
        {"tags": [EVERY_PYTHON, {"tag": "{major}-python{python}", "variant": "full"}]},
        ("'0-python3.7'", "full-0.14.9-py3.7", "full-0.14.10-py3.7"),
    ),
    (
        "untagged-image",
        {"tags": [{"tag": "{version}", "variant": "full", "python": "3.7"}]},
        ("full-0.14.9-py3.8", "gets no tag"),
    ),
]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [case[1:] for case in CLI_PLAN_ERRORS],
    ids=[case[0] for case in CLI_PLAN_ERRORS],
)
def test_plan_errors_through_the_cli(
    run: Callable[..., tuple[int, str, str]],
    make_matrix: Callable[..., Path],
    overrides: dict[str, Any],
    fragments: tuple[str, ...],
) -> None:
    path = make_matrix(**overrides)
    code, out, err = run("plan", "--matrix", path)
    assert out == ""
    assert_one_error_line(code, err, str(path), *fragments, exit_code=2)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [case[1:] for case in CLI_PLAN_ERRORS],
    ids=[case[0] for case in CLI_PLAN_ERRORS],
)
def test_docs_refuses_a_matrix_the_plan_refuses(
    run: Callable[..., tuple[int, str, str]],
    make_matrix: Callable[..., Path],
    overrides: dict[str, Any],
    fragments: tuple[str, ...],
) -> None:
    path = make_matrix(**overrides)
    code, out, err = run("docs", "--matrix", path)
    assert out == ""
    assert_one_error_line(code, err, str(path), *fragments, exit_code=2)


@pytest.mark.parametrize(
    "text",
    ["", "image: [unclosed\n", "- a list\n", "versions:\n  - 0.10\n"],
    ids=["empty", "broken", "list", "unquoted-number"],
)
def test_yaml_errors_through_the_cli(
    run: Callable[..., tuple[int, str, str]], write_yaml: Callable[..., Path], text: str
) -> None:
    path = write_yaml(text)
    code, out, err = run("plan", "--matrix", path)
    assert out == ""
    assert_one_error_line(code, err, str(path), exit_code=2)


def test_missing_matrix_through_the_cli(
    run: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    code, _, err = run("plan", "--matrix", tmp_path / "missing.yaml")
    assert_one_error_line(code, err, "missing.yaml: no such file", exit_code=2)


def test_unquoted_python_through_the_cli(
    run: Callable[..., tuple[int, str, str]], write_yaml: Callable[..., Path]
) -> None:
    path = write_yaml(
        """\
        image: prefecthq/prefect
        base_image: "python:{python}-slim"
        versions: ["3.2.1"]
        variants: {full: {pythons: [3.10]}}
        tags: [{tag: "{version}-python{python}", variant: full}]
        """
    )
    code, _, err = run("docs", "--matrix", path)
    assert_one_error_line(code, err, 'quote it as "3.10"', exit_code=2)


def test_bad_format_spec_through_the_cli(
    run: Callable[..., tuple[int, str, str]], make_matrix: Callable[..., Path]
) -> None:
    path = make_matrix(
        tags=[EVERY_PYTHON, {"tag": "x{python:d}", "variant": "full", "python": "default"}]
    )
    code, _, err = run("plan", "--matrix", path)
    assert_one_error_line(code, err, str(path), "x{python:d}", exit_code=2)


# --- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [["--help"], ["plan", "--help"], ["docs", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: publisher")


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name in subparsers.choices:  # type: ignore[union-attr]
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0, name
        assert f"usage: publisher {name}" in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "publisher: error:" in capsys.readouterr().err


# --- as a program ----------------------------------------------------------------------------


def _python_m(repo_root: Path, *argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(repo_root), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    return subprocess.run(
        [sys.executable, "-m", "publisher", *map(str, argv)],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_python_m_publisher_plan(repo_root: Path) -> None:
    result = _python_m(repo_root, "plan", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["images"]) == 92
    assert result.stderr == ""


def test_python_m_publisher_error(repo_root: Path, make_matrix: Callable[..., Path]) -> None:
    path = make_matrix(versions=["v0.14.10"])
    result = _python_m(repo_root, "plan", "--matrix", path)
    assert result.stdout == ""
    assert_one_error_line(
        result.returncode, result.stderr, str(path), "write '0.14.10'", exit_code=2
    )


@pytest.mark.parametrize(("flag", "build_ui"), [((), True), (("--no-ui",), False)])
def test_nightly_builds_the_ui_unless_no_ui(
    run: Callable[..., tuple[int, str, str]],
    shipped_matrix_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: tuple[str, ...],
    build_ui: bool,
) -> None:
    from publisher import nightly

    seen: list[nightly.Source] = []
    monkeypatch.setattr(nightly, "resolve", lambda source: "a" * 40)
    monkeypatch.setattr(nightly, "run", lambda matrix, source, *rest: seen.append(source))
    code, _, _ = run(
        "nightly", "--matrix", shipped_matrix_path, "--ref", "main", "--dry-run", *flag
    )
    assert code == 0
    assert [s.ui for s in seen] == [build_ui]

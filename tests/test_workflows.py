"""The GitHub workflows agree with the CLI: their plan commands run, and the build jobs
read only the keys a github-matrix entry has. (zizmor and shellcheck lint them too, in
`nox -s lint`.)"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from publisher.cli import main

WORKFLOWS = ("release.yml", "nightly.yml")
ENTRY_KEYS = {"name", "select", "platform", "runner"}


def load_workflow(repo_root: Path, name: str) -> dict[str, Any]:
    data = yaml.safe_load((repo_root / ".github" / "workflows" / name).read_text())
    assert isinstance(data, dict)
    return data


def plan_commands(workflow: dict[str, Any]) -> list[list[str]]:
    """Each `publisher plan ...` in the plan job, without the shell's select arguments."""
    commands = []
    for step in workflow["jobs"]["plan"]["steps"]:
        for match in re.finditer(r"publisher (plan [^)\n]*)", step.get("run", "")):
            words = shlex.split(match.group(1).replace('"${args[@]}"', ""))
            commands.append(words)
    return commands


@pytest.mark.parametrize("name", WORKFLOWS)
def test_the_plan_job_prints_a_matrix_for_the_shipped_matrix(
    repo_root: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (command,) = plan_commands(load_workflow(repo_root, name))
    assert "github-matrix" in command
    code = main([*command, "--matrix", str(repo_root / "matrix.yaml")])
    out, err = capsys.readouterr()
    assert code == 0, err
    entries = json.loads(out)["include"]
    assert entries and all(entry.keys() == ENTRY_KEYS for entry in entries)


@pytest.mark.parametrize("name", WORKFLOWS)
def test_the_build_job_reads_only_keys_a_matrix_entry_has(repo_root: Path, name: str) -> None:
    build = load_workflow(repo_root, name)["jobs"]["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert build["runs-on"] == "${{ matrix.runner }}"
    used = set(re.findall(r"\bmatrix\.(\w+)", yaml.safe_dump(build)))
    assert used == ENTRY_KEYS


def step_running(job: dict[str, Any], command: str) -> dict[str, Any]:
    """The one step of ``job`` that runs `publisher COMMAND`."""
    (step,) = [s for s in job["steps"] if f"publisher {command} " in s.get("run", "")]
    return step


@pytest.mark.parametrize("name", WORKFLOWS)
def test_promote_selects_the_images_the_plan_job_sharded(repo_root: Path, name: str) -> None:
    # Promote checks every image it plans; one outside the selection may be unpublished.
    jobs = load_workflow(repo_root, name)["jobs"]
    plan = step_running(jobs["plan"], "plan")
    promote = step_running(jobs["promote"], "promote")
    assert plan.get("env", {}).get("SELECT") == promote.get("env", {}).get("SELECT")
    for step in (plan, promote):
        if "SELECT" in step.get("env", {}):
            assert 'args+=(--select "$glob")' in step["run"] and '"${args[@]}"' in step["run"]

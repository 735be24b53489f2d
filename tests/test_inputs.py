"""inputs: the fingerprint of an image's build inputs and their record in a label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from publisher.inputs import FORMAT, Inputs, changes, of_packages

FILES = {"core.Dockerfile": b"FROM x\n", "entrypoint.sh": b"#!/bin/sh\n"}
BASE_ID = "sha256:" + "1" * 64
OTHER_ID = "sha256:" + "2" * 64


def inputs(**overrides: object) -> Inputs:
    fields: dict[str, object] = {
        "base": "python:3.13-slim",
        "base_id": BASE_ID,
        "files": FILES,
        "buildargs": {"PREFECT": "prefect==3.9.1"},
    }
    fields.update(overrides)
    return Inputs.of(**fields)  # type: ignore[arg-type]


def test_fingerprint_is_stable_and_order_independent() -> None:
    first = inputs()
    again = inputs(files=dict(reversed(list(FILES.items()))))
    assert first.fingerprint == again.fingerprint
    assert first.fingerprint.startswith("sha256:") and len(first.fingerprint) == 71
    assert first == again


@pytest.mark.parametrize(
    "change",
    [
        {"base_id": OTHER_ID},
        {"files": {**FILES, "core.Dockerfile": b"FROM y\n"}},
        {"buildargs": {"PREFECT": "prefect==3.9.2"}},
        {"extras": ("docker",)},
        {"parent": "sha256:" + "3" * 64},
    ],
)
def test_every_input_changes_the_fingerprint(change: dict[str, object]) -> None:
    assert inputs(**change).fingerprint != inputs().fingerprint


def test_the_base_reference_name_is_not_in_the_fingerprint() -> None:
    mirrored = inputs(base="mirror.example/python:3.13-slim")
    assert mirrored.fingerprint == inputs().fingerprint
    # ... nor a cause of staleness: the same image under another name builds the same.
    assert changes(inputs(), mirrored) == []
    # A new identity is, and the old name is recorded beside it.
    moved = inputs(base="mirror.example/python:3.13-slim", base_id="sha256:" + "e" * 64)
    assert changes(inputs(), moved) == [
        f"base image mirror.example/python:3.13-slim changed ({inputs().base_id[7:19]} -> "
        "eeeeeeeeeeee, was python:3.13-slim)"
    ]


def test_label_round_trip() -> None:
    original = inputs(extras=("docker", "aws"), parent="sha256:" + "3" * 64)
    label = original.to_label()
    data = json.loads(label)
    assert data["format"] == FORMAT
    assert "parent" not in data  # derived, not recorded
    restored = Inputs.from_label(label)
    assert restored is not None
    assert restored.base == original.base and restored.base_id == original.base_id
    assert dict(restored.files) == dict(original.files)
    assert dict(restored.buildargs) == dict(original.buildargs)
    assert restored.extras == ("docker", "aws")
    assert restored.parent is None
    assert changes(restored, original) == []


@pytest.mark.parametrize(
    "garbage",
    [None, "", "not json", "[]", '{"base": "x"}', '{"base":"x","base_id":"y","files":3}', "1"],
)
def test_from_label_of_garbage_is_none(garbage: str | None) -> None:
    assert Inputs.from_label(garbage) is None


def test_changes_wording() -> None:
    recorded = inputs(extras=("docker",))
    today = inputs(
        base_id=OTHER_ID,
        files={**FILES, "entrypoint.sh": b"#!/bin/bash\n", "full.Dockerfile": b"FROM z\n"},
        buildargs={"PREFECT": "prefect==3.9.1", "SOURCE_REVISION": "abc", "EXTRAS": "aws"},
        extras=("aws",),
    )
    assert changes(recorded, today) == [
        "base image python:3.13-slim changed (111111111111 -> 222222222222)",
        "entrypoint.sh changed",
        "full.Dockerfile changed",
        "build argument SOURCE_REVISION: (unset) -> abc",
        "extras: [docker] -> [aws]",
    ]
    assert changes(today, recorded)[3] == "build argument SOURCE_REVISION: abc -> (unset)"
    assert changes(recorded, recorded) == []


def test_of_packages_names_the_wheel_set(tmp_path: Path) -> None:
    a, b = tmp_path / "a-1-py3-none-any.whl", tmp_path / "b-2-py3-none-any.whl"
    assert of_packages([a, b]) == of_packages([b, a])
    assert of_packages([a]) != of_packages([a, b])
    assert of_packages([a], parent="sha256:p") != of_packages([a])
    assert of_packages([a]).startswith("sha256:")

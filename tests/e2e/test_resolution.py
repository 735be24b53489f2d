"""Resolving with a real base image and package index: pip resolves, the files it chose are
fetched by their URLs and hashes without a second pip pass, and kept for the next
resolution by their hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import docker
import pytest

from publisher import docker_client as containers
from publisher import wheels
from tests.e2e.conftest import Services


def test_resolved_wheels_are_fetched_by_url_then_linked_from_the_store(
    services: Services,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(wheels, "CACHE", tmp_path / "pip")
    monkeypatch.setattr(wheels, "STORE", tmp_path / "store")
    commands: list[list[str]] = []
    real_run = containers.run

    def spy(client: Any, image: str, command: list[str], **kw: Any) -> tuple[int, str]:
        commands.append(command[:2])
        return real_run(client, image, command, **kw)

    monkeypatch.setattr(containers, "run", spy)
    request = wheels.PipRequest(requirements=(f"prefect=={services.versions[1]}",))

    def download(dest: Path) -> list[Path]:
        return wheels.download(
            docker_client,
            request,
            base_image=services.base_image.format(python=services.pythons[-1]),
            dest=dest,
            # With a credential the index does not need: the report's URLs carry none.
            index=wheels.IndexOptions(index_url=services.index_with_secret()),
        )

    first = download(tmp_path / "first")

    # Resolved by pip, fetched by the script: no `pip wheel`.
    assert commands == [["pip", "install"], ["python", "-c"]]
    assert any(path.name.startswith(f"prefect-{services.versions[1]}-") for path in first)
    assert len(first) > 50  # prefect's dependencies came too
    digests = {hashlib.sha256(path.read_bytes()).hexdigest() for path in first}
    # Every file was checked against the index's hash and kept under it.
    assert {path.name for path in (tmp_path / "store").iterdir()} == digests

    commands.clear()
    second = download(tmp_path / "second")

    # Resolved again (the index may have changed), fetched from nowhere.
    assert commands == [["pip", "install"]]
    assert [path.name for path in second] == [path.name for path in first]
    for path in second:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert path.stat().st_ino == (tmp_path / "store" / digest).stat().st_ino

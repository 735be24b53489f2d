"""Resolving with a real base image and package index: pip resolves, the files it chose are
fetched by their URLs and hashes without a second pip pass, and kept for the next
resolution by their hashes; extras resolved beside a core fetch none of the core's files."""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path
from typing import Any

import docker
import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

from publisher import docker_client as containers
from publisher import wheels
from tests.e2e.conftest import Services
from tests.fault_proxy import FaultProxy


@pytest.fixture(autouse=True)
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip's cache and the store of fetched wheels, empty and the test's own."""
    monkeypatch.setattr(wheels, "CACHE", tmp_path / "pip")
    monkeypatch.setattr(wheels, "STORE", tmp_path / "store")


def test_resolved_wheels_are_fetched_by_url_then_linked_from_the_store(
    services: Services,
    docker_client: docker.DockerClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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


def test_extras_resolved_with_the_core_s_wheels_shown_installed_download_none_of_them(
    services: Services,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    version = services.versions[1]
    base = services.base_image.format(python=services.pythons[0])
    # Every request to the index goes through the proxy, which keeps a list of them.
    with FaultProxy(urllib.parse.urlsplit(services.index).netloc) as proxy:
        index = wheels.IndexOptions(index_url=f"http://{proxy.address}/simple/")

        def download(request: wheels.PipRequest, dest: Path) -> tuple[list[Path], set[str]]:
            proxy.clear()
            found = wheels.download(docker_client, request, base_image=base, dest=dest, index=index)
            return found, {seen.path.rsplit("/", 1)[-1] for seen in proxy.seen}

        core, _ = download(wheels.PipRequest(requirements=(f"prefect=={version}",)), tmp_path / "c")
        names = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in core}

        def extras(installed: tuple[Path, ...], dest: Path) -> tuple[list[str], set[str]]:
            found, asked = download(
                wheels.PipRequest(
                    requirements=(f"prefect[docker]=={version}",),
                    exclude=tuple(names),
                    constraints=tuple(
                        f"{name}=={parse_wheel_filename(w.name)[1]}" for name, w in names.items()
                    ),
                    installed=installed,
                ),
                dest,
            )
            return [w.name for w in found], asked

        shown, asked_shown = extras(tuple(core), tmp_path / "shown")
        pinned, asked_pinned = extras((), tmp_path / "pinned")

    core_files = {w.name for w in core}
    # The same extras either way, and none of the core's packages among them.
    assert shown == pinned
    assert shown and not set(shown) & core_files
    # Shown as installed, no core file was asked for; only pinned, pip downloads them all
    # again to read their metadata.
    assert not asked_shown & core_files
    assert len(asked_pinned & core_files) > 50

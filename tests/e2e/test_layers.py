"""A layer's archive, as the daemon's BuildKit adds it: the layer COPY of the same tree
gave, byte for byte, and nothing at all for an empty tree."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import docker

from publisher import docker_client as containers
from tests.e2e.conftest import Services


def build(client: docker.DockerClient, context: Path, dockerfile: str, tag: str) -> list[str]:
    """Build ``dockerfile`` (its text) on ``context``; the image's layer digests."""
    (context / "Dockerfile").write_text(dockerfile)
    request = containers.BuildRequest(
        context=context, dockerfile="Dockerfile", buildargs={}, labels={}, tag=tag, platform=None
    )
    containers.build(client, request, on_line=lambda line: None)
    return list(client.images.get(tag).attrs["RootFS"]["Layers"])


def test_added_archives_give_the_layers_copied_trees_gave(
    services: Services, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    base = services.base_image.format(python=services.pythons[-1])
    tree = tmp_path / "tree"
    site = tree / "usr/local/lib/python3.13/site-packages/layered"
    site.mkdir(parents=True)
    # Content no earlier run had: BuildKit keys a COPY by its files' content and modes, not
    # their times, so the same content copied in an earlier run (another CI run on this
    # daemon) would come back from its cache with that run's times, and differ.
    (site / "__init__.py").write_text(f"ANSWER = 42\nRUN = {uuid.uuid4().hex!r}\n")
    (tree / "usr/local/bin").mkdir()
    (tree / "usr/local/bin/layered").write_text("#!/bin/sh\necho layered\n")
    (tree / "usr/local/bin/layered").chmod(0o755)
    for folder, _, _ in os.walk(tree):
        os.utime(folder, (315532800, 315532800))
    empty = tmp_path / "empty"
    empty.mkdir()

    copied, added = tmp_path / "copied", tmp_path / "added"
    copied.mkdir()
    shutil.copytree(tree, copied / "deps", symlinks=True)
    (copied / "extras").mkdir()
    containers.layer_archive(tree, added / "deps.tar")
    containers.layer_archive(empty, added / "extras.tar")
    tags = ("publisher-e2e/layers:copied", "publisher-e2e/layers:added")
    try:
        by_copy = build(
            docker_client, copied, f"FROM {base}\nCOPY deps/ /\nCOPY extras/ /\n", tags[0]
        )
        by_add = build(
            docker_client, added, f"FROM {base}\nADD deps.tar /\nADD extras.tar /\n", tags[1]
        )
        # The same layers: the same image to every registry and every pull.
        assert by_add == by_copy
        output = docker_client.containers.run(
            tags[1], ["sh", "-c", "layered; ls /extras.tar /deps.tar 2>&1; true"], remove=True
        ).decode()
        assert output.startswith("layered\n")
        # Neither archive itself landed in the image.
        assert output.count("No such file") == 2
    finally:
        for tag in tags:
            docker_client.images.remove(tag, force=True)

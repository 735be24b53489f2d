"""A layer's archive, as the daemon's BuildKit adds it: the layer COPY of the same tree
gave, byte for byte, nothing at all for an empty tree, and the same layer again for the same
files installed at another time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import docker

from publisher import docker_client as containers
from publisher.installs import merged
from publisher.target import EPOCH
from tests.e2e.conftest import Services


def build(client: docker.DockerClient, context: Path, dockerfile: str, tag: str) -> list[str]:
    """Build ``dockerfile`` (its text) on ``context``; the image's layer digests."""
    (context / "Dockerfile").write_text(dockerfile)
    request = containers.BuildRequest(
        context=context, dockerfile="Dockerfile", buildargs={}, labels={}, tag=tag, platform=None
    )
    containers.build(client, request, on_line=lambda line: None)
    return list(client.images.get(tag).attrs["RootFS"]["Layers"])


def installed(tree: Path, written: float) -> Path:
    """A small installed tree, every entry written at ``written``."""
    site = tree / "usr/local/lib/python3.13/site-packages/layered"
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("ANSWER = 42\n")
    (tree / "usr/local/bin").mkdir()
    (tree / "usr/local/bin/layered").write_text("#!/bin/sh\necho layered\n")
    (tree / "usr/local/bin/layered").chmod(0o755)
    for folder, dirs, names in os.walk(tree):
        for name in dirs + names:
            os.utime(Path(folder, name), (written, written))
    return tree


def test_added_archives_give_the_layers_copied_trees_gave(
    services: Services, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    base = services.base_image.format(python=services.pythons[-1])
    # COPY keeps a file's time, the archive gives every entry EPOCH: the same when the tree
    # has that time already.
    tree = installed(tmp_path / "tree", written=EPOCH)
    empty = tmp_path / "empty"
    empty.mkdir()

    copied, added = tmp_path / "copied", tmp_path / "added"
    copied.mkdir()
    shutil.copytree(tree, copied / "deps", symlinks=True)
    (copied / "extras").mkdir()
    containers.layer_archive(merged([tree]), added / "deps.tar", mtime=EPOCH)
    containers.layer_archive(merged([empty]), added / "extras.tar", mtime=EPOCH)
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


def test_the_same_files_installed_again_later_give_the_same_layer(
    services: Services, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # A later run (or another machine) installs the same wheels at another time: its
    # layer must be the one the registry holds already, not a new one to build and upload.
    base = services.base_image.format(python=services.pythons[-1])
    layers = []
    tags = ("publisher-e2e/layers:earlier", "publisher-e2e/layers:later")
    try:
        for tag, written in zip(tags, (1_700_000_000, 1_800_000_000), strict=True):
            context = tmp_path / tag.rsplit(":", 1)[1]
            tree = installed(tmp_path / f"tree-{written}", written=written)
            containers.layer_archive(merged([tree]), context / "deps.tar", mtime=EPOCH)
            layers.append(build(docker_client, context, f"FROM {base}\nADD deps.tar /\n", tag))
        assert layers[0] == layers[1]
        stamp = docker_client.containers.run(
            tags[1],
            ["stat", "-c", "%Y", "/usr/local/lib/python3.13/site-packages/layered/__init__.py"],
            remove=True,
        )
        assert int(stamp) == EPOCH
    finally:
        for tag in tags:
            docker_client.images.remove(tag, force=True)

"""A layer's archive, as the publisher makes an image of it (assemble.py) on a real daemon:
the files a COPY of the same tree gave, with their modes, owner and times; no layer for
an empty tree; and the same layer, and the same image, for the same files installed at
another time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import docker

from publisher import assemble
from publisher import docker_client as containers
from publisher.assemble import Assembled, Assemblies
from publisher.installs import merged
from publisher.target import EPOCH
from tests.e2e.conftest import Services

LISTING = [
    "sh",
    "-c",
    "layered && find /usr/local/bin/layered /usr/local/lib/python3.13/site-packages/layered"
    " -printf '%p %m %U:%G %T@\\n' | sort",
]


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


def make(
    client: docker.DockerClient, assemblies: Assemblies, parent: str, tree: Path, tag: str
) -> Assembled:
    """The image of ``parent`` plus ``tree``'s layer, loaded as ``tag``."""
    layer = assemble.archive_layer(
        merged([tree]), assemblies.new_file("deps.tar"), "ADD deps.tar /", mtime=EPOCH
    )
    layers = (layer,) if layer is not None else ()
    parent_config = assemblies.config_of(client, parent)
    config = assemble.child_config(
        parent_config, layers, labels={"t": "1"}, created="2026-01-01T00:00:00Z"
    )
    image = Assembled(config=config, parent=parent, layers=layers)
    assemble.load(client, image, tag)
    return image


def test_a_made_layer_holds_what_a_copied_tree_gave(
    services: Services, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    base = services.base_image.format(python=services.pythons[-1])
    parent = containers.image_id(docker_client, base)
    # COPY keeps a file's time, the archive gives every entry EPOCH: the same when the tree
    # has that time already.
    tree = installed(tmp_path / "tree", written=EPOCH)
    copied = tmp_path / "copied"
    copied.mkdir()
    shutil.copytree(tree, copied / "deps", symlinks=True)
    (copied / "Dockerfile").write_text(f"FROM {base}\nCOPY deps/ /\n")
    tags = ("publisher-e2e/layers:copied", "publisher-e2e/layers:made")
    try:
        request = containers.BuildRequest(
            context=copied, dockerfile="Dockerfile", buildargs={}, labels={}, tag=tags[0]
        )
        containers.build(docker_client, request, on_line=lambda line: None)
        image = make(docker_client, Assemblies(tmp_path / "made"), parent, tree, tags[1])

        assert docker_client.images.get(tags[1]).id == image.id
        by_copy, by_made = (
            docker_client.containers.run(tag, LISTING, remove=True).decode() for tag in tags
        )
        assert by_made.startswith("layered\n")
        assert f" 755 0:0 {EPOCH}" in by_made
        assert by_made == by_copy
        # One layer on the base's, which the daemon had: only the new one was loaded.
        layers = docker_client.images.get(tags[1]).attrs["RootFS"]["Layers"]
        base_layers = docker_client.images.get(base).attrs["RootFS"]["Layers"]
        assert layers == [*base_layers, image.layers[0].diff_id]
    finally:
        for tag in tags:
            docker_client.images.remove(tag, force=True)


def test_the_same_files_installed_again_later_make_the_same_layer_and_image(
    services: Services, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # A later run (or another machine) installs the same wheels at another time: its
    # layer must be the one the registry holds already, not a new one to upload.
    base = services.base_image.format(python=services.pythons[-1])
    parent = containers.image_id(docker_client, base)
    made = []
    tags = ("publisher-e2e/layers:earlier", "publisher-e2e/layers:later")
    try:
        for tag, written in zip(tags, (1_700_000_000, 1_800_000_000), strict=True):
            tree = installed(tmp_path / f"tree-{written}", written=written)
            made.append(make(docker_client, Assemblies(tmp_path / tag[-5:]), parent, tree, tag))
        assert made[0].layers[0].diff_id == made[1].layers[0].diff_id
        assert made[0].id == made[1].id == docker_client.images.get(tags[1]).id
        stamp = docker_client.containers.run(
            tags[1],
            ["stat", "-c", "%Y", "/usr/local/lib/python3.13/site-packages/layered/__init__.py"],
            remove=True,
        )
        assert int(stamp) == EPOCH
    finally:
        for tag in tags:
            docker_client.images.remove(tag, force=True)


def test_an_empty_tree_makes_no_layer(
    services: Services, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    base = services.base_image.format(python=services.pythons[-1])
    parent = containers.image_id(docker_client, base)
    empty = tmp_path / "empty"
    empty.mkdir()
    tag = "publisher-e2e/layers:empty"
    try:
        image = make(docker_client, Assemblies(tmp_path / "made"), parent, empty, tag)
        assert image.layers == ()
        layers = docker_client.images.get(tag).attrs["RootFS"]["Layers"]
        assert layers == docker_client.images.get(base).attrs["RootFS"]["Layers"]
        assert docker_client.images.get(tag).labels["t"] == "1"
    finally:
        docker_client.images.remove(tag, force=True)

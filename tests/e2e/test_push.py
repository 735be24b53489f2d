"""An image pushed from its saved layers, pulled by another daemon: the same image runs."""

from __future__ import annotations

import json
from contextlib import closing
from pathlib import Path

import docker

from publisher import docker_client as containers
from publisher import push
from publisher.registry import RegistryClient
from tests.e2e.conftest import Services

DOCKERFILE = """\
FROM {base}
RUN echo pushed > /pushed.txt && mkdir -p /opt/more && echo more > /opt/more/file
LABEL org.prefect.push-test=yes
"""


def test_a_pushed_image_is_pulled_and_run_by_another_daemon_as_the_same_image(
    services: Services,
    docker_client: docker.DockerClient,
    runners: tuple[str, str],
    tmp_path: Path,
) -> None:
    base = services.base_image.format(python=services.pythons[-1])
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    request = containers.BuildRequest(
        context=context,
        dockerfile="Dockerfile",
        buildargs={},
        labels={},
        tag="push-test:local",
        platform=None,
    )
    image_id = containers.build(docker_client, request, on_line=lambda line: None)
    local = docker_client.images.get(image_id)
    reference = f"{services.registry}/push-test/image"

    with RegistryClient(services.registry) as registry:

        def pushed(tag: str) -> str:
            return push.push(
                docker_client,
                registry,
                repo="push-test/image",
                tag=tag,
                image_id=local.id,
                work=tmp_path,
            )

        digest = pushed("t")
        manifest = json.loads(registry.manifest("push-test/image", "t").raw)
        again = pushed("t2")
    assert again == digest, "a second push of the same image makes the same manifest"
    assert manifest["config"]["digest"] == local.id
    assert len(manifest["layers"]) == len(local.attrs["RootFS"]["Layers"])

    with closing(docker.DockerClient(base_url=runners[1], timeout=600)) as other:
        try:
            pulled = other.images.pull(reference, tag="t")
            assert pulled.id == local.id
            output = other.containers.run(
                f"{reference}:t", ["cat", "/pushed.txt", "/opt/more/file"], remove=True
            )
            assert output.decode().split() == ["pushed", "more"]
        finally:
            other.images.remove(f"{reference}:t", force=True)

"""The bench's work breakdown on the real daemon: a container's core-seconds are read from
the cgroup the daemon gives it, and go to the part its command says, even once the
container is gone."""

from __future__ import annotations

import docker

from tests.bench.work import Sampler, docker_cgroups
from tests.e2e.conftest import Services

# Busy for about 1.5 s of one core; its command line says "compileall", as the publisher's
# install containers' do.
BUSY = "import time; end = time.process_time() + 1.5\nwhile time.process_time() < end: pass"


def test_a_removed_containers_work_goes_to_its_part(
    services: Services, docker_client: docker.DockerClient
) -> None:
    assert docker_cgroups().is_dir(), "the daemon's containers should have docker cgroups"
    base = services.base_image.format(python=services.pythons[-1])
    with Sampler(interval=0.2) as sampler:
        docker_client.containers.run(
            base, ["python", "-c", BUSY, "compileall"], network_mode="none", remove=True
        )
    work = sampler.work(100.0)
    assert 1.3 <= work.parts["install"] <= 3.0, work.parts
    assert work.parts["smoke tests"] == 0.0
    # Starting and removing a container is the daemon's work.
    assert work.parts["daemon"] > 0.0

"""The bench's work breakdown on the real daemon: a container's core-seconds are read from
the cgroup the daemon gives it, and go to the part its command says, even once the
container is gone."""

from __future__ import annotations

import docker

from tests.bench.work import Sampler, docker_cgroups, part_of
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
        container = docker_client.containers.run(
            base, ["python", "-c", BUSY, "compileall"], network_mode="none", detach=True
        )
        assert container.wait(timeout=120)["StatusCode"] == 0
        container.remove()
    # Read by its own id: the other test worker may run containers meanwhile, whose work
    # goes to the parts too.
    seconds, command = sampler.containers()[container.id]
    assert 1.3 <= seconds <= 3.0, (seconds, command)
    assert part_of(command) == "install", command
    work = sampler.work(100.0)
    # Parts are rounded to a tenth, and rounding keeps order.
    assert work.parts["install"] >= round(seconds, 1), work.parts
    # Starting and removing a container is the daemon's work.
    assert work.parts["daemon"] > 0.0

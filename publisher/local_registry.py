"""The throwaway registry `publisher publish` uses when no --registry is given.

It lets a maintainer run the whole release end to end on a laptop and pull the result
before pushing anywhere that matters. It is left running so the images can be pulled;
`docker rm -f prefect-publisher-registry` removes it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import docker
import requests

from . import docker_client
from .errors import PublisherError
from .progress import Reporter

PORT = 5000
ADDRESS = f"localhost:{PORT}"
CONTAINER = "prefect-publisher-registry"
IMAGE = "registry:2"
STATE = Path.home() / ".cache" / "prefect-publisher" / "registry"


def ensure(reporter: Reporter) -> str:
    """Return the address of a running local registry, starting one when needed."""
    if _answers():
        reporter.step("registry", f"using the local registry already at {ADDRESS}")
        return ADDRESS
    client = docker_client.connect()
    try:
        _start_container(client)
        how = f"container {CONTAINER} ({IMAGE})"
    except docker.errors.DockerException:
        # No registry image (offline machine): Debian's docker-registry package serves the
        # same distribution registry as a plain process.
        _start_process()
        how = f"docker-registry process (storage {STATE})"
    for _ in range(100):
        if _answers():
            reporter.step("registry", f"started a throwaway registry at {ADDRESS}: {how}")
            return ADDRESS
        time.sleep(0.1)
    raise PublisherError(f"the local registry at {ADDRESS} did not start; see {STATE}/log")


def _answers() -> bool:
    try:
        return requests.get(f"http://{ADDRESS}/v2/", timeout=2).status_code in (200, 401)
    except requests.RequestException:
        return False


def _start_container(client: docker.DockerClient) -> None:
    try:
        client.containers.get(CONTAINER).start()
        return
    except docker.errors.NotFound:
        pass
    client.containers.run(
        IMAGE,
        name=CONTAINER,
        detach=True,
        ports={"5000/tcp": ("127.0.0.1", PORT)},
    )


def _start_process() -> None:
    binary = shutil.which("docker-registry")
    if binary is None:
        raise PublisherError(
            f"no registry at {ADDRESS}, the {IMAGE} image cannot be had and docker-registry "
            "is not installed; pass --registry HOST[:PORT][/NAMESPACE]"
        )
    STATE.mkdir(parents=True, exist_ok=True)
    config = STATE / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {STATE / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{PORT}\n"
    )
    log = (STATE / "log").open("ab")
    subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log, start_new_session=True)

"""What the UI check adds to an image's smoke test: each image tested without it, then with it.

    python -m tests.bench.ui_smoke_cost IMAGE...

IMAGE is any local image the publisher built (its labels give the Prefect and Python
versions it must report). Needs the Docker daemon of DOCKER_HOST.
"""

from __future__ import annotations

import sys
import time
from contextlib import closing

import docker

from publisher import labels, smoke


def main(images: list[str]) -> None:
    with closing(docker.from_env(timeout=600)) as client:
        for image in images:
            found = client.images.get(image).labels or {}
            for mode in (smoke.UI_SKIP, smoke.UI_IF_PRESENT):
                started = time.monotonic()
                result = smoke.check(
                    client,
                    image,
                    python=found[labels.PYTHON],
                    prefect_version=found[labels.VERSION],
                    extras_present=(),
                    extras_absent=(),
                    ui=mode,
                )
                seconds = time.monotonic() - started
                print(f"{image} ui={mode}: {seconds:.1f} s ({result.ui})", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

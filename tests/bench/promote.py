"""`nox -s bench_promote`: what `publisher promote` costs as a release grows.

For each size, a matrix of N two-platform images is "built" by staging a tiny image per
platform in a real registry (tests/tiny_image.py, over the HTTP API), then promoted:
first with everything staged (indexes written, aliases and rolling tags moved), then
again with everything published (nothing to do). The registry client counts the requests;
they should grow by a fixed number per image and per rolling tag, never per tag squared.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import yaml
from tabulate import tabulate

from publisher import labels
from publisher.build import Settings
from publisher.destination import Destination
from publisher.matrix import load
from publisher.plan import plan
from publisher.progress import Reporter
from publisher.publish import Options, Publication
from publisher.registry import RegistryClient
from publisher.staging import staging_tag
from tests.registry_server import run_registry
from tests.tiny_image import push_image

ROOT = Path(__file__).resolve().parents[2]
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
PLATFORMS = ["linux/amd64", "linux/arm64"]


def matrix_of(images: int, folder: Path) -> Path:
    versions = [f"3.{n // 100}.{n % 100}" for n in range(images // len(PYTHONS))]
    data = {
        "image": "prefecthq/prefect",
        "base_image": "python:{python}-slim",
        "dockerfiles": str(ROOT / "dockerfiles"),
        "platforms": PLATFORMS,
        "versions": versions,
        "variants": {"full": {"pythons": PYTHONS, "default_python": "3.12", "extras": []}},
        "tags": [
            {"tag": "latest", "variant": "full", "python": "default", "release": "latest"},
            {
                "tag": "{major}.{minor}-python{python}",
                "variant": "full",
                "release": "latest-in-minor",
            },
            {"tag": "{version}-python{python}", "variant": "full"},
        ],
    }
    path = folder / f"matrix-{images}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def measure(images: int, folder: Path) -> list[tuple[str, int, int, int, float]]:
    matrix = load(matrix_of(images, folder))
    the_plan = plan(matrix)
    rows = []
    with run_registry(folder / f"registry-{images}") as host:
        jobs = [
            (staging_tag(image.immutable_tags[0], p), image.prefect_version, p.split("/")[1])
            for image in the_plan.images
            for p in image.platforms
        ]

        def stage(job: tuple[str, str, str]) -> None:
            tag, version, arch = job
            push_image(host, "ns/prefect", tag, labels={labels.VERSION: version}, architecture=arch)

        # One at a time: every tiny image of an architecture uploads the same layer blob,
        # and concurrent uploads of one blob fail in distribution 2.8 (DIGEST_INVALID).
        for job in jobs:
            stage(job)
        rolling = len({t for i in the_plan.images for t in i.rolling_tags})
        for state in ("staged", "published"):
            with RegistryClient(host) as registry:
                run = Publication(
                    matrix=matrix,
                    options=Options(
                        build=Settings(dockerfiles=ROOT / "dockerfiles"),
                        destination=Destination.parse(f"{host}/ns"),
                    ),
                    reporter=Reporter(stream=io.StringIO()),
                    registry=registry,
                    engines=lambda: None,  # type: ignore[arg-type,return-value]
                )
                started = time.perf_counter()
                run.promote(the_plan)
                seconds = time.perf_counter() - started
                rows.append((state, len(the_plan.images), rolling, registry.requests_made, seconds))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, action="append", help="default: 100 and 1000")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="publisher-bench-promote-") as tmp:
        for images in args.images or [100, 1000]:
            rows += measure(images, Path(tmp))
    print(
        tabulate(
            [(s, n, r, q, f"{q / n:.1f}", f"{sec:.1f}") for s, n, r, q, sec in rows],
            headers=(
                "registry holds",
                "images",
                "rolling tags",
                "requests",
                "per image",
                "seconds",
            ),
            disable_numparse=True,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

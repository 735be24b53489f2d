"""Publishing what changed, and only that: incremental releases and resumed runs.

These publish into namespaces of their own in the test registry; the images are mostly
already built on this daemon by the `published` fixture, which the publisher finds by
fingerprint, so what is measured here is what the registry is asked to do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from publisher.matrix import load
from publisher.plan import plan

from .conftest import (
    REPO_ROOT,
    Published,
    Services,
    publish,
    release_snapshot,
    write_matrix,
)


def test_adding_a_version_builds_only_its_images_and_repoints_rolling_tags(
    published: Published, services: Services, tmp_path: Path
) -> None:
    older, newer = services.versions
    name = f"incremental-{uuid.uuid4().hex[:8]}"  # a repository no earlier run has touched
    namespace, repo = f"{services.registry}/{name}", f"{name}/prefect"
    first = write_matrix(tmp_path / "first", services, versions=[older])
    result = publish(first, namespace, index=services.index)
    assert result.returncode == 0, result.stderr
    before = release_snapshot(published.registry, repo)
    assert published.registry.labels(repo, "latest")["org.opencontainers.image.version"] == older

    both = write_matrix(tmp_path / "both", services, versions=[older, newer])
    result = publish(both, namespace, index=services.index)
    assert result.returncode == 0, result.stderr
    after = release_snapshot(published.registry, repo)

    # The older version's images were recognised, not rebuilt or pushed again.
    older_images = [i for i in plan(load(both)).images if i.prefect_version == older]
    for image in older_images:
        assert f"{image.id}: published; not rebuilding" in result.stderr
        for tag in image.immutable_tags:
            assert after[tag] == before[tag]
    pushed = [line for line in result.stderr.splitlines() if line.endswith(": uploading")]
    assert pushed and all(newer in line for line in pushed), pushed
    # Rolling tags moved to the new version's images, by manifest copy.
    for tag in ("latest", "latest-python3.11", "latest-python3.13", "core"):
        assert after[tag] != before[tag]
    assert after["latest"] == after[f"{newer}-python3.13"]
    assert after["core"] == after[f"core-{newer}"]
    assert published.registry.labels(repo, "latest")["org.opencontainers.image.version"] == newer


def test_a_killed_publish_resumes_without_rebuilding_and_never_runs_rolling_tags_ahead(
    published: Published, services: Services, tmp_path: Path
) -> None:
    name = f"resume-{uuid.uuid4().hex[:8]}"
    namespace, repo = f"{services.registry}/{name}", f"{name}/prefect"
    matrix = write_matrix(tmp_path, services)
    the_plan = plan(load(matrix))
    rolling = {t for i in the_plan.images for t in i.rolling_tags}
    # The images are already built on this daemon (the `published` fixture), so the run
    # goes straight to smoke tests and pushes, and is killed after its first image.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "publisher",
            "publish",
            "--matrix",
            str(matrix),
            "--registry",
            namespace,
            "--jobs",
            "1",
        ],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PIP_INDEX_URL": services.index},
    )
    assert proc.stderr is not None
    seen: list[str] = []
    for line in proc.stderr:
        seen.append(line)
        if ": in the registry as " in line:
            break  # the first image is wholly pushed; the others are not
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert any(": in the registry as " in line for line in seen), "".join(seen)

    # Killed between phases: no rolling tag exists yet, while some immutable tags do.
    partial = release_snapshot(published.registry, repo)
    assert partial, "the first image should be in the registry"
    assert not rolling & set(partial), f"rolling tags ahead of their images: {partial}"

    started = time.monotonic()
    result = publish(matrix, namespace, index=services.index)
    assert result.returncode == 0, result.stderr
    assert "building (" not in result.stderr, "a resumed run rebuilt an image"
    finished = release_snapshot(published.registry, repo)
    for tag, digest in partial.items():
        assert finished[tag] == digest, f"{tag} changed on resume"
    planned = {t.name for i in the_plan.images for t in i.tags}
    assert set(finished) == planned
    for image in the_plan.images:
        anchor = finished[image.immutable_tags[0]]
        assert all(finished[t.name] == anchor for t in image.tags)
    assert time.monotonic() - started < 600

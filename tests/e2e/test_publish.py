"""Publishing the e2e matrix for real: dockerd builds, the registry's HTTP API is read
back, and the images that were pushed are run."""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import docker
import pytest

from publisher import labels, smoke
from publisher.errors import BuildError
from publisher.registry import Credentials, RegistryClient
from publisher.staging import is_staging
from publisher.upload import UPLOAD_TAG
from tests.helpers import assert_one_error_line, layer_steps, owner
from tests.registry_server import run_registry

from .conftest import SECRET, Published, Services, publish, run_publisher, write_matrix


def _digest_snapshot(published: Published) -> dict[str, str | None]:
    return {tag: published.registry.digest(published.repo, tag) for tag in _tags(published)}


def _tags(published: Published) -> list[str]:
    return published.registry.tags(published.repo)


def _docker(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], input=stdin, capture_output=True, text=True, timeout=600, check=False
    )


# --- what the registry holds ------------------------------------------------------------


def test_every_planned_tag_is_in_the_registry_and_nothing_else(published: Published) -> None:
    planned = {tag.name for image in published.plan.images for tag in image.tags}
    tags = set(_tags(published))
    assert {tag for tag in tags if not is_staging(tag)} == planned
    # At most the upload tag besides (gone when the nightly tests deleted the last image
    # it named).
    assert tags - planned <= {UPLOAD_TAG}


def test_every_tag_of_an_image_has_that_images_digest(published: Published) -> None:
    for image in published.plan.images:
        anchor = published.registry.digest(published.repo, image.immutable_tags[0])
        assert anchor is not None
        for tag in image.tags:
            assert published.registry.digest(published.repo, tag.name) == anchor, (
                f"{tag.name} should alias {image.id}"
            )


def test_rolling_tags_name_the_newest_release(published: Published, services: Services) -> None:
    _, newer = services.versions
    labels = published.registry.labels(published.repo, "latest")
    assert labels["org.opencontainers.image.version"] == newer
    assert labels["io.prefect.python-version"] == "3.13"
    core = published.registry.labels(published.repo, "core")
    assert core["org.opencontainers.image.version"] == newer


def test_images_carry_the_oci_labels(published: Published) -> None:
    for image in published.plan.images:
        labels = published.registry.labels(published.repo, image.immutable_tags[0])
        assert labels["org.opencontainers.image.version"] == image.prefect_version
        assert labels["io.prefect.python-version"] == image.python_version
        assert labels["org.opencontainers.image.source"] == "https://github.com/PrefectHQ/prefect"
        assert labels["org.opencontainers.image.created"].endswith("Z")
        # Prefect's wheels record the commit they were built from.
        assert len(labels["org.opencontainers.image.revision"]) == 40
        assert labels["io.prefect.publisher.fingerprint"].startswith("sha256:")


def test_full_images_reuse_the_layers_of_their_core_image(published: Published) -> None:
    def layers(tag: str) -> list[str]:
        manifest = json.loads(published.registry.manifest(published.repo, tag).raw)
        return [layer["digest"] for layer in manifest["layers"]]

    for image in published.plan.images:
        if image.variant != "full" or image.python_version != "3.13":
            continue
        core, full = layers(f"core-{image.prefect_version}"), layers(image.immutable_tags[0])
        assert full[: len(core)] == core
        assert len(full) == len(core) + 1, "full adds exactly one layer: the extras"


# --- the images run ---------------------------------------------------------------------


def test_each_image_reports_its_planned_versions(
    published: Published, docker_client: docker.DockerClient
) -> None:
    for image in published.plan.images:
        ref = published.reference(image.immutable_tags[0])
        docker_client.images.pull(ref)
        out = docker_client.containers.run(ref, ["prefect", "version"], remove=True).decode()
        assert "Version:" in out and image.prefect_version in out.split()
        py = docker_client.containers.run(ref, ["python", "--version"], remove=True).decode()
        assert py.startswith(f"Python {image.python_version}.")


def test_every_core_served_its_ui_in_the_smoke_test(published: Published) -> None:
    # Prefect 3.9's wheels carry both bundles, so each core is checked with them; an image
    # with extras built FROM a checked core is not started again, unless its group has no
    # core image (full on 3.11), whose own smoke test then serves the UI. (On a daemon that
    # built these images in an earlier session, the kept report of that test answers.)
    cores = {(i.prefect_version, i.python_version) for i in published.plan.images if not i.extras}
    for image in published.plan.images:
        line = re.search(
            rf"{re.escape(image.id)}: passed( on this image before)? \(.*\)$",
            published.result.stderr,
            re.M,
        )
        assert line, f"no smoke test result for {image.id}:\n{published.result.stderr}"
        if image.extras and (image.prefect_version, image.python_version) in cores:
            assert line.group(0).endswith(", UI not checked)"), line.group(0)
        else:
            assert re.search(r", UI served in \d+s \(ui, ui-v2\)\)$", line.group(0)), line.group(0)


# Where the image's prefect package is; the Dockerfile lines below change it as a broken
# build would have left it.
FIND_PREFECT = (
    "import importlib.util as u, os; print(os.path.dirname(u.find_spec('prefect').origin))"
)


def in_prefect(command: str) -> str:
    """A RUN line running ``command`` with $p set to the installed prefect package."""
    return f'RUN p="$(python -c "{FIND_PREFECT}")" && {command}'


@pytest.fixture
def derived(
    published: Published, docker_client: docker.DockerClient
) -> Iterator[Callable[[str], str]]:
    """Build images FROM the published core image with Dockerfile lines added; removed after."""
    base = published.reference("core")
    docker_client.images.pull(base)
    made: list[str] = []

    def build(lines: str) -> str:
        tag = f"publisher-e2e-broken-ui:{uuid.uuid4().hex[:12]}"
        dockerfile = f"FROM {base}\n{lines}\n".encode()
        docker_client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True)
        made.append(tag)
        return tag

    yield build
    for tag in made:
        docker_client.images.remove(tag, force=True)


def _smoke(client: docker.DockerClient, image: str) -> smoke.SmokeResult:
    return smoke.check(
        client,
        image,
        python="3.13",
        prefect_version=None,
        extras_present=(),
        extras_absent=(),
        ui=smoke.ui_check(client.images.get(image).labels or {}),
    )


def test_a_nightly_whose_ui_was_built_but_is_missing_fails_its_smoke_test(
    derived: Callable[[str], str], docker_client: docker.DockerClient
) -> None:
    gone = derived(
        in_prefect('rm -r "$p/server/ui" "$p/server/ui-v2"')
        + f"\nLABEL {labels.UI}={labels.UI_BUILT}"
    )
    with pytest.raises(BuildError, match="the image has no UI bundles"):
        _smoke(docker_client, gone)
    # Without the label it is an image without a UI, like Prefect 0.14's.
    unlabelled = derived(in_prefect('rm -r "$p/server/ui" "$p/server/ui-v2"'))
    assert _smoke(docker_client, unlabelled).ui == "no UI"


def test_a_release_whose_ui_bundle_is_broken_fails_its_smoke_test(
    derived: Callable[[str], str], docker_client: docker.DockerClient
) -> None:
    no_index = derived(in_prefect('rm "$p/server/ui-v2/index.html"'))
    with pytest.raises(BuildError, match=r"prefect/server/ui-v2 has no index\.html"):
        _smoke(docker_client, no_index)


def test_a_release_whose_server_does_not_serve_its_ui_fails_its_smoke_test(
    derived: Callable[[str], str], docker_client: docker.DockerClient
) -> None:
    # The bundles are installed, but the server is told not to serve them.
    disabled = derived("ENV PREFECT_UI_ENABLED=false")
    with pytest.raises(BuildError, match=r"GET / from `prefect server start` answered 404"):
        _smoke(docker_client, disabled)


def test_tini_is_pid_1(published: Published) -> None:
    result = _docker("run", "--rm", published.reference("latest"), "cat", "/proc/1/cmdline")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\0")[0] == "tini", repr(result.stdout)


def test_no_command_gives_an_interactive_shell(published: Published) -> None:
    result = _docker("run", "--rm", "-i", published.reference("latest"), stdin="echo from-shell\n")
    assert result.returncode == 0, result.stderr
    assert "from-shell" in result.stdout


def test_images_hold_no_wheels_caches_or_compiler(
    published: Published, docker_client: docker.DockerClient
) -> None:
    script = (
        "find / -xdev \\( -name '*.whl' -o -name '*.deb' -o -path /root/.cache/pip "
        "-o -path /tmp/wheels -o -path /tmp/debs -o -path '/mnt/*' -o -path /staging \\) -print; "
        "ls /var/lib/apt/lists | grep -v -e '^lock$' -e '^partial$';"
        " command -v gcc cc; true"
    )
    for tag in ("latest", "core"):
        out = docker_client.containers.run(
            published.reference(tag), ["sh", "-c", script], remove=True
        ).decode()
        assert out.strip() == "", f"{tag} still holds:\n{out}"


def test_no_layer_over_the_base_ships_what_a_later_step_removes(
    published: Published, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # A file one layer adds and a later step deletes is still in the image, and every pull
    # downloads it: tini's .deb is mounted into the step that installs it, never copied in.
    ref = published.reference("core")
    image = docker_client.images.pull(ref)
    # The matrix's base, not the one the label names: an image made earlier for a matrix
    # that pins the same base by digest in some registry is reused, and its label names
    # that registry's reference, which this daemon need not hold.
    base = owner(published.plan, "core").base_image
    base_layers = docker_client.images.get(base).attrs["RootFS"]["Layers"]
    below = len(base_layers)
    assert image.attrs["RootFS"]["Layers"][:below] == base_layers, "not on the matrix's base"
    archive = tmp_path / "core.tar"
    with archive.open("wb") as out:
        for chunk in image.save(named=False):
            out.write(chunk)
    with tarfile.open(archive) as saved:
        (manifest,) = json.load(_member(saved, "manifest.json"))
        config = json.load(_member(saved, manifest["Config"]))
        steps = layer_steps(config)
        added = list(zip(steps, manifest["Layers"], strict=True))[below:]
        assert [step.split()[0] for step, _ in added] == ["RUN", "COPY", "ADD", "ADD"], steps
        for step, layer in added:
            with tarfile.open(fileobj=_member(saved, layer)) as files:
                names = [m.name.rpartition("/")[2] for m in files]
            # A whiteout (.wh.NAME) deletes NAME. An opaque folder's marker only hides what
            # a lower layer holds at that path, and dpkg's new folders (tini's docs) get one.
            removed = [n for n in names if n.startswith(".wh.") and n != ".wh..wh..opq"]
            assert removed == [], f"{step!r} removes what an earlier layer shipped"


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    found = archive.extractfile(name)
    assert found is not None, name
    return found


# --- EXTRA_PIP_PACKAGES -----------------------------------------------------------------


def test_extra_pip_packages_are_installed_before_the_command(
    published: Published, services: Services
) -> None:
    result = _docker(
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        "EXTRA_PIP_PACKAGES=cowsay",
        "-e",
        f"PIP_INDEX_URL={services.index}",
        published.reference("latest"),
        "python",
        "-c",
        "import cowsay; print('imported', cowsay.__name__)",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "+pip install cowsay" in result.stdout
    assert "imported cowsay" in result.stdout


def test_a_failed_extra_install_stops_the_container_before_the_command(
    published: Published, services: Services
) -> None:
    result = _docker(
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        "EXTRA_PIP_PACKAGES=no-such-package-anywhere",
        "-e",
        f"PIP_INDEX_URL={services.index}",
        "-e",
        "PIP_RETRIES=0",
        published.reference("latest"),
        "echo",
        "COMMAND-RAN",
    )
    assert result.returncode != 0
    assert "COMMAND-RAN" not in result.stdout
    assert "no-such-package-anywhere" in result.stdout + result.stderr


def test_extra_pip_packages_are_not_evaluated_by_a_shell(
    published: Published, services: Services
) -> None:
    result = _docker(
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        "EXTRA_PIP_PACKAGES=$(touch /tmp/evaluated)",
        "-e",
        f"PIP_INDEX_URL={services.index}",
        published.reference("latest"),
        "sh",
        "-c",
        "test ! -e /tmp/evaluated && echo NOT-EVALUATED",
    )
    # pip is handed the literal words and rejects them; nothing ran them.
    assert "+pip install $(touch /tmp/evaluated)" in result.stdout
    assert result.returncode != 0
    assert "NOT-EVALUATED" not in result.stdout


# --- secrets ----------------------------------------------------------------------------


def test_no_index_url_or_credential_reaches_any_image(
    published: Published,
    services: Services,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    index_host = services.index.split("//", 1)[1].split("/", 1)[0]
    for image in published.plan.images:
        ref = published.reference(image.immutable_tags[0])
        history = _docker("history", "--no-trunc", ref).stdout
        inspect = _docker("inspect", ref).stdout
        assert history and inspect
        for text in (history, inspect):
            assert SECRET not in text
            assert index_host not in text
        # Every byte of every layer and the config, as `docker save` exports them.
        archive = tmp_path / "image.tar"
        with archive.open("wb") as out:
            for chunk in docker_client.images.get(ref).save(named=False):
                out.write(chunk)
        data = archive.read_bytes()
        assert SECRET.encode() not in data, f"{ref} contains the index password"
        assert index_host.encode() not in data, f"{ref} contains the index address"
        archive.unlink()
    # The credentials were never printed either.
    assert SECRET not in published.result.stdout + published.result.stderr


# --- republishing -----------------------------------------------------------------------


def test_republishing_unchanged_images_builds_and_uploads_nothing(
    published: Published, services: Services
) -> None:
    before = _digest_snapshot(published)
    result = publish(published.matrix, published.namespace, index=services.index_with_secret())
    assert result.returncode == 0, result.stderr
    assert "building (" not in result.stderr
    assert "resolving" not in result.stderr
    assert "uploading" not in result.stderr
    assert result.stderr.count("published; not rebuilding") == len(published.plan.images)
    assert _digest_snapshot(published) == before


# --- faults -----------------------------------------------------------------------------


def test_unreachable_docker_daemon_is_one_clear_line(
    published: Published, services: Services
) -> None:
    # An empty namespace, so there is something to build (a republish needs no daemon).
    result = run_publisher(
        "publish",
        "--matrix",
        published.matrix,
        "--registry",
        f"{services.registry}/no-daemon-{uuid.uuid4().hex[:8]}",
        env={"DOCKER_HOST": "unix:///tmp/no-such-docker.sock"},
    )
    assert_one_error_line(
        result.returncode,
        result.stderr,
        "cannot reach the Docker daemon at unix:///tmp/no-such-docker.sock",
        exit_code=3,
        progress=True,
    )


def test_unreachable_registry_stops_before_anything_is_built(published: Published) -> None:
    from tests.registry_server import free_port

    result = run_publisher(
        "publish",
        "--matrix",
        published.matrix,
        "--registry",
        f"127.0.0.1:{free_port()}/e2e",
        "--force",
    )
    assert_one_error_line(
        result.returncode, result.stderr, "cannot reach registry", exit_code=4, progress=True
    )
    assert "building (" not in result.stderr
    assert "resolving" not in result.stderr


def test_registry_refusing_credentials_gets_no_tag(
    published: Published, services: Services, tmp_path: Path
) -> None:
    with run_registry(tmp_path, htpasswd={"maintainer": "right-password"}) as address:
        wrong = run_publisher(
            "publish",
            "--matrix",
            published.matrix,
            "--registry",
            f"{address}/e2e",
            "--username",
            "maintainer",
            "--password-env",
            "REGISTRY_PASSWORD",
            env={"REGISTRY_PASSWORD": "wrong-password"},
        )
        assert_one_error_line(wrong.returncode, wrong.stderr, address, exit_code=4, progress=True)
        assert "wrong-password" not in wrong.stdout + wrong.stderr
        authorised = RegistryClient(
            address, credentials=Credentials(username="maintainer", password="right-password")
        )
        assert authorised.tags("e2e/prefect") == []

        # The same credentials, right this time, read from stdin: one image goes up.
        right = run_publisher(
            "publish",
            "--matrix",
            published.matrix,
            "--registry",
            f"{address}/e2e",
            "--select",
            "full-*-py3.11",
            "--username",
            "maintainer",
            "--password-stdin",
            stdin="right-password\n",
            env={"PIP_INDEX_URL": services.index},
        )
        assert right.returncode == 0, right.stderr
        assert "right-password" not in right.stdout + right.stderr
        planned = {
            t.name
            for i in published.plan.images
            if i.id.startswith("full-") and i.python_version == "3.11"
            for t in i.tags
        }
        assert set(authorised.tags("e2e/prefect")) == planned | {UPLOAD_TAG}


def test_a_failed_build_pushes_nothing_and_moves_no_rolling_tag(
    published: Published, services: Services, tmp_path: Path
) -> None:
    before = _digest_snapshot(published)
    # A version the index does not have, and the highest: it would take `latest`.
    matrix = write_matrix(tmp_path, services, versions=[*services.versions, "3.99.0"])
    result = run_publisher(
        "publish",
        "--matrix",
        matrix,
        "--registry",
        published.namespace,
        env={"PIP_INDEX_URL": services.index},
    )
    assert_one_error_line(
        result.returncode,
        result.stderr,
        "failed",
        "nothing was released",
        exit_code=5,
        progress=True,
    )
    # The summary names the failed images and still reports the others.
    summary = result.stdout
    for image_id in ("full-3.99.0-py3.13", "core-3.99.0-py3.13"):
        assert image_id in summary
    assert "3.99.0" in summary and "failed" in summary
    assert "published" in summary  # the images the registry already holds
    assert _digest_snapshot(published) == before


@pytest.mark.parametrize("registry", ["not a registry", "localhost:5000/Upper"])
def test_bad_registry_argument_is_one_line(published: Published, registry: str) -> None:
    result = run_publisher("publish", "--matrix", published.matrix, "--registry", registry)
    assert_one_error_line(result.returncode, result.stderr, "--registry", exit_code=1)

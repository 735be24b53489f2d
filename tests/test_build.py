"""build, engine and docker_client against a fake Docker SDK client.

The Builder's collaborators that need a daemon (docker_client.build, wheels.download,
smoke.check) are replaced by recording fakes; the small docker_client helpers that only
look images up run for real against the fake client.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml
from fakes import digest_of

from publisher import assemble, debs, docker_client, engine, labels, push, smoke, target, wheels
from publisher.build import (
    Builder,
    Built,
    Group,
    NightlySource,
    Settings,
    groups_of,
    serves_ui,
)
from publisher.errors import BuildError, DockerUnavailable, RegistryError
from publisher.inputs import Inputs
from publisher.installs import Installs
from publisher.matrix import Matrix, load
from publisher.plan import plan
from publisher.platforms import machine_of
from publisher.progress import Reporter
from publisher.recipe import CORE_DOCKERFILE, LOCAL_CACHE

ROOT = Path(__file__).resolve().parent.parent
# What the fake daemon records as the Dockerfile of an image made of its core and the layer
# of its extras (assemble.py): none.
EXTRAS = ""
SHA = "0123456789abcdef0123456789abcdef01234567"

MATRIX: dict[str, Any] = {
    "image": "prefecthq/prefect",
    "base_image": "python:{python}-slim",
    "source": "https://github.com/PrefectHQ/prefect",
    "versions": ["3.9.0", "3.9.1"],
    "variants": {
        "core": {"pythons": ["3.13"]},
        "full": {"pythons": ["3.11", "3.13"], "default_python": "3.13", "extras": ["docker"]},
    },
    "tags": [
        {"tag": "{version}-python{python}", "variant": "full"},
        {"tag": "core-{version}", "variant": "core"},
    ],
}


# -- a fake Docker SDK client ------------------------------------------------------------


class FakeImage:
    def __init__(self, client: FakeClient, ident: str, attrs: dict[str, Any]) -> None:
        self.client = client
        self.id = ident
        self.attrs = attrs
        self.labels: dict[str, str] = dict(attrs.get("Labels") or {})

    def tag(self, repository: str, tag: str) -> bool:
        self.client.tagged.append((self.id, repository, tag))
        return True


class FakeImages:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def get(self, ref: str) -> FakeImage:
        """By reference, or by id as the daemon also answers."""
        if ref in self.client.store:
            return self.client.store[ref]
        for image in self.client.store.values():
            if image.id == ref:
                return image
        raise docker.errors.ImageNotFound(f"No such image: {ref}")

    def pull(self, ref: str, auth_config: dict[str, str] | None = None) -> FakeImage:
        self.client.pulls.append((ref, auth_config))
        if ref in self.client.unpullable:
            raise docker.errors.NotFound(f"manifest for {ref} not found")
        labels = self.client.pull_labels.get(ref, {})
        image = FakeImage(
            self.client, digest_of("pulled " + ref), {"RepoDigests": [], "Labels": labels}
        )
        self.client.store[ref] = image
        return image

    def get_registry_data(self, ref: str) -> Any:
        if ref in self.client.unpullable:
            raise docker.errors.NotFound(f"manifest for {ref} not found")
        return type("RegistryData", (), {"id": digest_of("remote " + ref)})()


class FakeClient:
    def __init__(self) -> None:
        self.store: dict[str, FakeImage] = {}
        self.pulls: list[tuple[str, dict[str, str] | None]] = []
        self.tagged: list[tuple[str, str, str]] = []
        self.unpullable: set[str] = set()
        self.pull_labels: dict[str, dict[str, str]] = {}
        self.images = FakeImages(self)
        self.closed = False

    def add(self, ref: str, ident: str, **attrs: Any) -> FakeImage:
        image = FakeImage(self, ident, attrs)
        self.store[ref] = image
        return image

    def close(self) -> None:
        self.closed = True

    def info(self) -> dict[str, str]:
        return {"Architecture": "x86_64"}


# -- recording stand-ins for what needs a daemon or an index --------------------------------


def tiny_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for inner, text in files.items():
            # A fixed time: the same wheel written twice is the same file, as from an index.
            archive.writestr(zipfile.ZipInfo(inner, date_time=(2020, 1, 1, 0, 0, 0)), text)
    return path


SITE = "usr/local/lib/python3.13/site-packages"  # where the fake pip installs


def installed(build: dict[str, Any], layer: str) -> list[str]:
    """What the fake pip installed into a layer of a build's context, as name==version."""
    prefix = f"{layer}/{SITE}/"
    return sorted(
        name.removeprefix(prefix).split(".dist-info/")[0].replace("-", "==")
        for name in build["files"]
        if name.startswith(prefix) and name.endswith(".dist-info/RECORD")
    )


class Daemon:
    """What the fakes saw, and what they are told to fail."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.builds: list[dict[str, Any]] = []
        self.resolutions: list[dict[str, Any]] = []
        self.smokes: list[dict[str, Any]] = []
        self.installs: list[dict[str, Any]] = []
        self.probes: list[tuple[str, str]] = []
        self.fetches: list[dict[str, Any]] = []
        self.python_of: dict[str, str] = {}  # image -> its Python, when not 3.13.5
        self.fail_resolution = ""
        self.fail_smoke: Callable[[dict[str, Any]], str] = lambda call: ""
        self.untagged: set[str] = set()  # dockerfiles whose build leaves no image behind
        self.passed_before: set[str] = set()  # image ids whose smoke report is kept

    def build(self, client: FakeClient, request: docker_client.BuildRequest, **options: Any) -> str:
        kw: dict[str, Any] = {**dataclasses.asdict(request), **options}
        context: Path = kw["context"]
        # Layer archives are not in a build context: they go to the daemon by `load`.
        assert not any(context.glob("*.tar"))
        kw["files"] = {
            str(p.relative_to(context)): p.read_bytes()
            for p in sorted(context.rglob("*"))
            if p.is_file() and p.suffix != ".whl"
        }
        kw["wheels"] = sorted(p.name for p in context.rglob("*.whl"))
        kw["made"] = False
        kw["on_line"]("Step 1/9 : FROM somewhere")
        self.builds.append(kw)
        ident = digest_of("built " + kw["tag"])
        kw["id"] = ident
        if kw["dockerfile"] not in self.untagged:
            client.add(kw["tag"], ident, Size=250_000_000, Labels=kw["labels"])
        return ident

    def load(self, client: FakeClient, image: assemble.Assembled, tag: str) -> None:
        """Stands in for loading an image made of a parent and layer archives: a core's
        layers join the record of its parent's build (core.Dockerfile), as one image
        built from both; an image with extras gets a record of its own (``EXTRAS``). Each
        layer's files show as LAYER/path, as the build context showed them before."""
        document = json.loads(image.config)
        files: dict[str, bytes] = {}
        for layer in image.layers:
            name = layer.path.name.split("-", 1)[1].removesuffix(".tar")
            with tarfile.open(layer.path) as archive:
                for member in archive.getmembers():
                    assert (member.uid, member.gid, member.uname) == (0, 0, "root")
                    assert not member.name.startswith(("/", "./", name))
                    if member.isfile():
                        read = archive.extractfile(member)
                        assert read is not None
                        files[f"{name}/{member.name}"] = read.read()
        parent = next((b for b in self.builds if b.get("id") == image.parent), None)
        if parent is not None and parent["dockerfile"] == CORE_DOCKERFILE and not parent["made"]:
            record = parent
        else:
            record = {
                "dockerfile": EXTRAS,
                "files": {},
                "wheels": [],
                "platform": parent["platform"] if parent is not None else None,
            }
            self.builds.append(record)
        found_labels = document["config"]["Labels"]
        record.update(tag=tag, id=image.id, parent=image.parent, made=True, labels=found_labels)
        record["files"].update(files)
        if record["dockerfile"] not in self.untagged:
            client.add(tag, image.id, Size=250_000_000, Labels=record["labels"])

    def save(self, client: FakeClient, image_id: str, folder: Path) -> push.Saved:
        """Stands in for reading an image's config out of the daemon."""
        found = client.images.get(image_id)
        config = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest_of("layer of " + image_id)]},
            "config": {"Labels": dict(found.labels), "Entrypoint": ["tini"]},
        }
        return push.Saved(config=json.dumps(config).encode(), layers=())

    def download(
        self, client: FakeClient, request: wheels.PipRequest, **options: Any
    ) -> list[Path]:
        kw: dict[str, Any] = {**dataclasses.asdict(request), **options}
        self.resolutions.append(kw)
        if self.fail_resolution:
            raise BuildError(self.fail_resolution)
        dest: Path = kw["dest"]
        (requirement,) = kw["requirements"]
        if kw["exclude"]:
            return [tiny_wheel(dest, "docker", "7.1.0", {"docker/__init__.py": ""})]
        version = requirement.split("==")[-1] if "==" in requirement else "3.10.0.dev1"
        # The wheel of the project asked for ("prefect", "prefect-client"), as pip names it.
        project = requirement.split("==")[0].split(" @")[0].split("[")[0]
        info = {"prefect/_build_info.py": f'BUILD_COMMIT = "{SHA}"\n'}
        return [
            tiny_wheel(dest, "anyio", "4.0.0", {"anyio/__init__.py": ""}),
            tiny_wheel(dest, project.replace("-", "_"), version, info),
        ]

    def install(self, client: FakeClient, **kw: Any) -> None:
        """Stands in for pip: each pinned wheel of the folder becomes a module and its
        dist-info with a RECORD naming both, so the build context shows which wheels went
        into which layer."""
        self.installs.append(kw)
        dest: Path = kw["dest"]
        dest.mkdir(parents=True, exist_ok=True)
        for pin in (kw["wheels"] / "requirements.txt").read_text().split():
            name, version = pin.replace("-", "_").split("==")
            info = f"{name}-{version}.dist-info"
            (dest / SITE / name).mkdir(parents=True)
            (dest / SITE / name / "__init__.py").write_text(f"# {pin}\n")
            (dest / SITE / info).mkdir()
            (dest / SITE / info / "RECORD").write_text(f"{name}/__init__.py,,\n{info}/RECORD,,\n")

    def fetch(self, client: FakeClient, **kw: Any) -> list[Path]:
        """Stands in for apt: one .deb named after the architecture asked for."""
        self.fetches.append(kw)
        kw["dest"].mkdir(parents=True, exist_ok=True)
        architecture = debs.debian_architecture(kw["platform"]) if kw["platform"] else "own"
        deb = kw["dest"] / f"tini_0.19.0-3_{architecture}.deb"
        deb.write_bytes(b"!<arch>\n")
        return [deb]

    def read(self, client: FakeClient, image: str, platform: str) -> target.Interpreter:
        """Stands in for the probe of an image's Python: what it says depends on the
        platform (and on ``python_of``, to make two images disagree)."""
        self.probes.append((image, platform))
        return target.Interpreter(
            markers={
                "platform_machine": machine_of(platform),
                "python_full_version": self.python_of.get(image, "3.13.5"),
            },
            tags=(f"cp313-cp313-manylinux_2_17_{machine_of(platform)}", "py3-none-any"),
            layout={"executable": "/usr/bin/python3", "scripts": "/usr/local/bin"},
            installed={"pip": "25.1.1"},
        )

    def check(
        self,
        client: FakeClient,
        image: str,
        *,
        reuse: bool = False,
        on_probe: Callable[[], None] | None = None,
        **kw: Any,
    ) -> smoke.SmokeResult:
        if reuse and image in self.passed_before:
            return smoke.SmokeResult(
                prefect_version=kw["prefect_version"], python_version="3.13.5", earlier=True
            )
        if on_probe is not None:
            on_probe()
        kw["image"] = image
        self.smokes.append(kw)
        error = self.fail_smoke(kw)
        if error:
            raise BuildError(error)
        return smoke.SmokeResult(
            prefect_version=kw["prefect_version"] or "?", python_version=kw["python"] + ".1"
        )

    def built(self, dockerfile: str) -> list[dict[str, Any]]:
        return [b for b in self.builds if b["dockerfile"] == dockerfile]


@pytest.fixture
def matrix(tmp_path: Path) -> Matrix:
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(MATRIX, sort_keys=False))
    return load(path)


@pytest.fixture
def client() -> FakeClient:
    fake = FakeClient()
    for python in ("3.11", "3.13"):
        fake.add(
            f"python:{python}-slim",
            digest_of("local " + python),
            RepoDigests=[f"python@{digest_of('python ' + python)}"],
        )
    return fake


@pytest.fixture
def daemon(client: FakeClient, monkeypatch: pytest.MonkeyPatch) -> Daemon:
    fake = Daemon(client)
    monkeypatch.setattr(docker_client, "build", fake.build)
    monkeypatch.setattr(assemble, "load", fake.load)
    monkeypatch.setattr(push, "save", fake.save)
    monkeypatch.setattr(wheels, "download", fake.download)
    monkeypatch.setattr(wheels, "install", fake.install)
    monkeypatch.setattr(debs, "fetch", fake.fetch)
    monkeypatch.setattr(target, "read", fake.read)
    monkeypatch.setattr(smoke, "check", fake.check)
    return fake


def make_builder(
    client: FakeClient, matrix: Matrix, tmp_path: Path, stream: io.StringIO | None = None, **kw: Any
) -> Builder:
    auth = kw.pop("auth", None)
    installs = kw.pop("installs", None)
    return Builder(
        client,  # type: ignore[arg-type]
        matrix=matrix,
        settings=Settings(dockerfiles=ROOT / "dockerfiles", **kw),
        reporter=Reporter(stream=stream or io.StringIO()),
        workdir=tmp_path / "work",
        auth=auth,
        installs=installs,
    )


def group_of(matrix: Matrix, version: str, python: str, **kw: Any) -> Group:
    (found,) = [
        g for g in groups_of(plan(matrix).images) if (g.version, g.python) == (version, python)
    ]
    return Group(version=found.version, python=found.python, images=found.images, **kw)


def test_the_server_is_started_once_per_core(matrix: Matrix) -> None:
    with_core = group_of(matrix, "3.9.1", "3.13").images
    core, full = sorted(with_core, key=lambda image: bool(image.extras))
    assert serves_ui(core, with_core) and not serves_ui(full, with_core)
    # No core cell on 3.11: the image with extras is the one whose server is checked,
    # unless the core it is built on was released (and checked) before.
    (alone,) = group_of(matrix, "3.9.1", "3.11").images
    assert serves_ui(alone, [alone])
    assert not serves_ui(alone, [alone], core_released=True)


# -- groups ------------------------------------------------------------------------------


def test_groups_of_pairs_version_and_python_in_plan_order(matrix: Matrix) -> None:
    groups = groups_of(plan(matrix).images)
    assert [(g.version, g.python, [i.id for i in g.images]) for g in groups] == [
        ("3.9.0", "3.13", ["core-3.9.0-py3.13", "full-3.9.0-py3.13"]),
        ("3.9.1", "3.13", ["core-3.9.1-py3.13", "full-3.9.1-py3.13"]),
        ("3.9.0", "3.11", ["full-3.9.0-py3.11"]),
        ("3.9.1", "3.11", ["full-3.9.1-py3.11"]),
    ]
    assert groups[0].subject == "prefect 3.9.0 / Python 3.13"
    assert groups[0].published_core is None and groups[0].replaces == {}


def test_groups_of_splits_by_base_image_and_package(tmp_path: Path) -> None:
    path = tmp_path / "matrix.yaml"
    variants = {
        **MATRIX["variants"],
        "client": {"pythons": ["3.13"], "package": "prefect-client"},
        "conda": {"pythons": ["3.13"], "base_image": "mirror.example/conda:py{python}"},
    }
    tags = [
        *MATRIX["tags"],
        {"tag": "{version}-python{python}-client", "variant": "client"},
        {"tag": "{version}-python{python}-conda", "variant": "conda"},
    ]
    path.write_text(yaml.safe_dump({**MATRIX, "variants": variants, "tags": tags}, sort_keys=False))
    groups = [g for g in groups_of(plan(load(path)).images) if g.version == "3.9.1"]
    assert [(g.python, g.package, g.base_image, [i.id for i in g.images]) for g in groups] == [
        ("3.13", "prefect", "python:3.13-slim", ["core-3.9.1-py3.13", "full-3.9.1-py3.13"]),
        ("3.11", "prefect", "python:3.11-slim", ["full-3.9.1-py3.11"]),
        ("3.13", "prefect-client", "python:3.13-slim", ["client-3.9.1-py3.13"]),
        ("3.13", "prefect", "mirror.example/conda:py3.13", ["conda-3.9.1-py3.13"]),
    ]
    # Every group's progress lines can be told apart; the base is named only where needed.
    assert [g.subject for g in groups] == [
        "prefect 3.9.1 / Python 3.13 (python:3.13-slim)",
        "prefect 3.9.1 / Python 3.11",
        "prefect-client 3.9.1 / Python 3.13",
        "prefect 3.9.1 / Python 3.13 (mirror.example/conda:py3.13)",
    ]


# -- building a group --------------------------------------------------------------------


def test_a_group_of_another_package_installs_that_package(
    client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "matrix.yaml"
    variants = {
        **MATRIX["variants"],
        "client": {"pythons": ["3.13"], "package": "prefect-client"},
        "clientotel": {"pythons": ["3.13"], "package": "prefect-client", "extras": ["otel"]},
    }
    tags = [
        *MATRIX["tags"],
        {"tag": "{version}-python{python}-client", "variant": "client"},
        {"tag": "{version}-python{python}-client-otel", "variant": "clientotel"},
    ]
    path.write_text(yaml.safe_dump({**MATRIX, "variants": variants, "tags": tags}, sort_keys=False))
    matrix = load(path)
    groups = {(g.version, g.python, g.package): g for g in groups_of(plan(matrix).images)}
    make_builder(client, matrix, tmp_path).build(groups["3.9.1", "3.13", "prefect"])
    prefect_core = daemon.built(CORE_DOCKERFILE)[0]
    daemon.builds.clear()
    daemon.resolutions.clear()
    daemon.smokes.clear()

    results = make_builder(client, matrix, tmp_path).build(
        groups["3.9.1", "3.13", "prefect-client"]
    )

    assert [(r.image.id, r.ok) for r in results] == [
        ("client-3.9.1-py3.13", True),
        ("clientotel-3.9.1-py3.13", True),
    ]
    core_res, extras_res = daemon.resolutions
    assert core_res["requirements"] == ("prefect-client==3.9.1",)
    assert extras_res["requirements"] == ("prefect-client[otel]==3.9.1",)
    # Resolved with the base's pip while the core builds, the core's packages pinned at
    # the versions it has, shown to pip as installed from the core's own wheels, and left
    # out.
    assert extras_res["base_image"] == core_res["base_image"]
    assert extras_res["constraints"] == ("anyio==4.0.0", "prefect-client==3.9.1")
    assert [path.name for path in extras_res["installed"]] == [
        "anyio-4.0.0-py3-none-any.whl",
        "prefect_client-3.9.1-py3-none-any.whl",
    ]
    assert all(path.is_file() for path in extras_res["installed"])
    assert extras_res["exclude"] == ("anyio", "prefect-client")
    (core,) = daemon.built(CORE_DOCKERFILE)
    # The package's wheel in its own layer, as prefect's is; not taken for a dependency.
    assert installed(core, "prefect") == ["prefect_client==3.9.1"]
    assert installed(core, "deps") == ["anyio==4.0.0"]
    assert core["labels"][labels.REVISION] == SHA  # read from prefect-client's wheel
    # Same version, Python and base as the prefect core, but another image.
    assert core["tag"] != prefect_core["tag"]
    assert core["labels"][labels.FINGERPRINT] != prefect_core["labels"][labels.FINGERPRINT]
    # prefect's extras (docker) mean nothing to prefect-client; its own (otel) are checked.
    smoke_core, smoke_otel = daemon.smokes
    assert (smoke_core["extras_present"], smoke_core["extras_absent"]) == ((), ("otel",))
    assert (smoke_otel["extras_present"], smoke_otel["extras_absent"]) == (("otel",), ())


def test_a_variant_base_image_is_what_its_core_is_built_from(
    client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    path = tmp_path / "matrix.yaml"
    variants = {"conda": {"pythons": ["3.13"], "base_image": "mirror.example/conda:py{python}"}}
    tags = [{"tag": "{version}-python{python}-conda", "variant": "conda"}]
    path.write_text(yaml.safe_dump({**MATRIX, "variants": variants, "tags": tags}, sort_keys=False))
    matrix = load(path)
    (group, _) = groups_of(plan(matrix).images)
    (result,) = make_builder(client, matrix, tmp_path).build(group)
    assert result.ok
    (core,) = daemon.built(CORE_DOCKERFILE)
    assert core["buildargs"] == {"BASE_IMAGE": "mirror.example/conda:py3.13"}
    assert daemon.resolutions[0]["base_image"] == "mirror.example/conda:py3.13"


def test_a_group_builds_core_then_extras_from_it(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    builder = make_builder(client, matrix, tmp_path)
    results = builder.build(group_of(matrix, "3.9.1", "3.13"))

    assert [(r.image.id, r.ok) for r in results] == [
        ("core-3.9.1-py3.13", True),
        ("full-3.9.1-py3.13", True),
    ]
    (core,) = daemon.built(CORE_DOCKERFILE)
    (full,) = daemon.built(EXTRAS)
    assert core["buildargs"] == {"BASE_IMAGE": "python:3.13-slim"}
    assert core["tag"].startswith(LOCAL_CACHE + ":")
    assert full["parent"] == core["id"]
    # The core's parent (core.Dockerfile) is built without the image's labels.
    assert core["parent"] == digest_of("built " + core["tag"] + "-parent")
    # Dependencies and prefect in separate layers, each pinned exactly.
    assert installed(core, "prefect") == ["prefect==3.9.1"]
    assert installed(core, "deps") == ["anyio==4.0.0"]
    assert core["wheels"] == []  # installed, not copied
    assert core["files"][CORE_DOCKERFILE] == (ROOT / "dockerfiles" / CORE_DOCKERFILE).read_bytes()
    assert "entrypoint.sh" in core["files"]
    assert installed(full, "extras") == ["docker==7.1.0"]
    assert set(full["files"]) == {
        f"extras/{SITE}/docker/__init__.py",
        f"extras/{SITE}/docker-7.1.0.dist-info/RECORD",
    }

    # The core's resolution asks the base image. So do the extras', as soon as the core's
    # packages are known (before the core is built): with them pinned, and left out.
    core_res, full_res = daemon.resolutions
    assert (core_res["base_image"], core_res["requirements"], core_res["exclude"]) == (
        "python:3.13-slim",
        ("prefect==3.9.1",),
        (),
    )
    assert (full_res["base_image"], full_res["requirements"], full_res["exclude"]) == (
        "python:3.13-slim",
        ("prefect[docker]==3.9.1",),
        ("anyio", "prefect"),
    )
    assert full_res["constraints"] == ("anyio==4.0.0", "prefect==3.9.1")

    # Each image's labels record its fingerprint, its inputs and what it replaces.
    for built, result in ((core, results[0]), (full, results[1])):
        found = built["labels"]
        assert found[labels.FINGERPRINT].startswith("sha256:")
        recorded = Inputs.from_label(found[labels.INPUTS])
        assert recorded is not None and recorded.base_id == digest_of("python 3.13")
        assert found[labels.REPLACES] == ""
        assert found[labels.VERSION] == "3.9.1"
        assert found[labels.PYTHON] == "3.13"
        assert found[labels.SOURCE] == "https://github.com/PrefectHQ/prefect"
        assert found[labels.PACKAGES].startswith("sha256:")
        assert result.local_id == built["id"]
        assert result.size == 250_000_000
    assert core["labels"][labels.REVISION] == SHA  # read from prefect's wheel
    assert full["labels"][labels.REVISION] == SHA  # the core's, as FROM the core gave it
    assert core["labels"][labels.FINGERPRINT] != full["labels"][labels.FINGERPRINT]

    # The core image must not carry the extras other variants install; the full one must.
    smoke_core, smoke_full = daemon.smokes
    # A release's UI is checked when its wheel carries one, once: on the core the full
    # image is built FROM.
    assert (smoke_core["ui"], smoke_full["ui"]) == (smoke.UI_IF_PRESENT, smoke.UI_SKIP)
    assert (smoke_core["extras_present"], smoke_core["extras_absent"]) == ((), ("docker",))
    assert (smoke_full["extras_present"], smoke_full["extras_absent"]) == (("docker",), ())
    assert smoke_full["image"] == results[1].local_id
    assert (smoke_full["python"], smoke_full["prefect_version"]) == ("3.13", "3.9.1")


def test_a_wheel_is_installed_once_per_run_across_lanes(
    matrix: Matrix,
    client: FakeClient,
    daemon: Daemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    download = daemon.download

    def sniffio_too_for_3_9_1(client: FakeClient, request: Any, **options: Any) -> list[Path]:
        found = download(client, request, **options)
        if request.requirements == ("prefect==3.9.1",):
            found.append(tiny_wheel(options["dest"], "sniffio", "1.3.0", {"sniffio/a.py": ""}))
        return found

    monkeypatch.setattr(wheels, "download", sniffio_too_for_3_9_1)
    shared = Installs(tmp_path / "installed")
    stream = io.StringIO()
    lanes = [
        make_builder(client, matrix, tmp_path / lane, stream, installs=shared)
        for lane in ("a", "b")
    ]
    lanes[0].build(group_of(matrix, "3.9.0", "3.13"))
    lanes[1].build(group_of(matrix, "3.9.1", "3.13"))

    # What pip was asked to install: anyio once for both releases, each prefect once, and
    # the extras once for both (installed by the base's pip, while each core builds).
    assert sorted(
        (i["staging"], (i["wheels"] / "requirements.txt").read_text().split())
        for i in daemon.installs
    ) == [
        ("deps", ["anyio==4.0.0"]),
        ("deps", ["sniffio==1.3.0"]),
        ("extras", ["docker==7.1.0"]),
        ("prefect", ["prefect==3.9.0"]),
        ("prefect", ["prefect==3.9.1"]),
    ]
    first, second = daemon.built(CORE_DOCKERFILE)
    assert installed(first, "deps") == ["anyio==4.0.0"]
    assert installed(second, "deps") == ["anyio==4.0.0", "sniffio==1.3.0"]
    anyio = f"deps/{SITE}/anyio/__init__.py"
    assert first["files"][anyio] == second["files"][anyio] == b"# anyio==4.0.0\n"
    assert "3.9.0 / Python 3.13: installed deps\n" in stream.getvalue()
    assert (
        "3.9.1 / Python 3.13: installed deps (1 of 2 wheels as installed for an earlier image)"
        in stream.getvalue()
    )


def test_tini_is_fetched_while_pip_resolves(
    matrix: Matrix,
    client: FakeClient,
    daemon: Daemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fetching = threading.Event()
    fetch, download = daemon.fetch, daemon.download

    def fetch_first(*args: Any, **kw: Any) -> list[Path]:
        fetching.set()
        return fetch(*args, **kw)

    def download_once_apt_runs(*args: Any, **kw: Any) -> list[Path]:
        assert fetching.wait(timeout=5), "the resolution waited for apt, or apt for it"
        return download(*args, **kw)

    monkeypatch.setattr(debs, "fetch", fetch_first)
    monkeypatch.setattr(wheels, "download", download_once_apt_runs)
    results = make_builder(client, matrix, tmp_path).build(group_of(matrix, "3.9.1", "3.13"))
    assert all(r.ok for r in results)
    (core,) = daemon.built(CORE_DOCKERFILE)
    assert "debs/tini_0.19.0-3_own.deb" in core["files"]


def test_a_group_without_a_core_cell_still_builds_a_core_to_build_on(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    results = make_builder(client, matrix, tmp_path).build(group_of(matrix, "3.9.1", "3.11"))

    assert [r.image.id for r in results] == ["full-3.9.1-py3.11"]
    assert results[0].ok
    assert len(daemon.built(CORE_DOCKERFILE)) == 1
    (full,) = daemon.built(EXTRAS)
    assert full["parent"] == daemon.built(CORE_DOCKERFILE)[0]["id"]
    assert [s["image"] for s in daemon.smokes] == [results[0].local_id]
    # No core image of its own was smoke-tested, so this one serves the UI.
    assert [s["ui"] for s in daemon.smokes] == [smoke.UI_IF_PRESENT]


def test_a_failing_resolution_fails_every_image_of_the_group(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    daemon.fail_resolution = "cannot resolve prefect==3.9.1 with python:3.13-slim: no match"
    stream = io.StringIO()
    results = make_builder(client, matrix, tmp_path, stream).build(
        group_of(matrix, "3.9.1", "3.13")
    )

    assert [(r.image.id, r.error) for r in results] == [
        ("core-3.9.1-py3.13", daemon.fail_resolution),
        ("full-3.9.1-py3.13", daemon.fail_resolution),
    ]
    assert not any(r.ok for r in results)
    assert daemon.builds == [] and daemon.smokes == []
    assert f"prefect 3.9.1 / Python 3.13: FAILED: {daemon.fail_resolution}" in stream.getvalue()


def test_a_failing_smoke_test_fails_only_its_image(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    daemon.fail_smoke = lambda call: (
        "extra 'docker' is missing docker" if call["extras_present"] else ""
    )
    results = make_builder(client, matrix, tmp_path).build(group_of(matrix, "3.9.1", "3.13"))

    core, full = results
    assert core.ok and core.local_id
    assert full.error == "extra 'docker' is missing docker"
    assert full.local_id == ""
    assert len(daemon.smokes) == 2


def test_an_image_that_passed_its_smoke_test_before_is_not_tested_again(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    group = group_of(matrix, "3.9.1", "3.13")
    first = make_builder(client, matrix, tmp_path).build(group)
    daemon.passed_before = {first[0].local_id}  # the core's report is kept, not the full's
    daemon.smokes.clear()
    stream = io.StringIO()

    again = make_builder(client, matrix, tmp_path, stream).build(group)

    assert [r.local_id for r in again] == [r.local_id for r in first]
    assert all(r.ok for r in again)
    assert [s["image"] for s in daemon.smokes] == [first[1].local_id]
    output = stream.getvalue()
    assert "core-3.9.1-py3.13: passed on this image before (prefect 3.9.1" in output
    assert "core-3.9.1-py3.13: smoke-testing" not in output
    assert "full-3.9.1-py3.13: smoke-testing" in output

    # --force builds again, and tests again what it built.
    daemon.smokes.clear()
    make_builder(client, matrix, tmp_path, force=True).build(group)
    assert len(daemon.smokes) == 2


def test_the_core_s_smoke_test_runs_while_the_next_image_builds(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    full_built = threading.Event()
    load = daemon.load

    def load_and_tell(client: FakeClient, image: assemble.Assembled, tag: str) -> None:
        load(client, image, tag)
        if daemon.builds[-1]["dockerfile"] == EXTRAS:
            full_built.set()

    # The core's smoke test waits for the full image's build: run one after the other,
    # the build would only start once this gave up.
    daemon.fail_smoke = lambda call: (
        ""
        if call["extras_present"] or full_built.wait(timeout=10)
        else "the full image was not built during the core's smoke test"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assemble, "load", load_and_tell)
        results = make_builder(client, matrix, tmp_path).build(group_of(matrix, "3.9.1", "3.13"))
    assert [(r.image.id, r.error) for r in results] == [
        ("core-3.9.1-py3.13", ""),
        ("full-3.9.1-py3.13", ""),
    ]


def test_start_returns_once_the_images_are_built_and_their_tests_go_on(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    returned = threading.Event()
    # Each smoke test waits until start() has returned: a start() that waited for them
    # would make them fail after 10 s.
    daemon.fail_smoke = lambda call: (
        "" if returned.wait(timeout=10) else "start() waited for the smoke tests"
    )
    builder = make_builder(client, matrix, tmp_path)
    checks = builder.start(group_of(matrix, "3.9.1", "3.13"))
    returned.set()
    assert len(daemon.built(CORE_DOCKERFILE)) == len(daemon.built(EXTRAS)) == 1
    assert [(c.result().image.id, c.result().error) for c in checks] == [
        ("core-3.9.1-py3.13", ""),
        ("full-3.9.1-py3.13", ""),
    ]
    builder.close()


def test_each_image_is_told_of_once_built_before_its_smoke_test_and_a_failure_is_not(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    events: list[tuple[str, str]] = []
    daemon.fail_smoke = lambda call: events.append(("tested", call["image"])) or ""

    def told(built: Built) -> None:
        assert built.ok and not built.error
        events.append(("built", built.local_id))

    def start(folder: str) -> list[Built]:
        builder = make_builder(client, matrix, tmp_path / folder)
        checks = builder.start(group_of(matrix, "3.9.1", "3.13"), told)
        builder.close()
        return [check.result() for check in checks]

    # A build that fails is nobody's to stage.
    daemon.untagged = {EXTRAS}
    core, full = start("failing")
    assert core.ok and not full.ok
    assert [e for e in events if e[0] == "built"] == [("built", core.local_id)]

    events.clear()
    daemon.untagged = set()
    results = start("passing")
    assert all(r.ok for r in results)
    assert [e for e in events if e[0] == "built"] == [("built", r.local_id) for r in results]
    for result in results:
        assert events.index(("built", result.local_id)) < events.index(("tested", result.local_id))


def test_the_extras_are_resolved_and_installed_while_the_core_builds(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    extras_installed = threading.Event()
    build, install = daemon.build, daemon.install

    def install_and_tell(client: FakeClient, **kw: Any) -> None:
        install(client, **kw)
        if kw["staging"] == "extras":
            extras_installed.set()

    def core_waits_for_the_extras(
        client: FakeClient, request: docker_client.BuildRequest, **kw: Any
    ) -> str:
        if request.dockerfile == CORE_DOCKERFILE:
            # Resolved after the core was built, the extras would never be installed here.
            assert extras_installed.wait(timeout=5), "the extras waited for the core's build"
        return build(client, request, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(docker_client, "build", core_waits_for_the_extras)
        patch.setattr(wheels, "install", install_and_tell)
        results = make_builder(client, matrix, tmp_path).build(group_of(matrix, "3.9.1", "3.13"))
    assert [(r.image.id, r.error) for r in results] == [
        ("core-3.9.1-py3.13", ""),
        ("full-3.9.1-py3.13", ""),
    ]
    (full,) = daemon.built(EXTRAS)
    assert installed(full, "extras") == ["docker==7.1.0"]


def test_the_next_group_s_core_packages_are_prepared_while_this_group_builds(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    events: list[str] = []
    lock = threading.Lock()
    next_resolved = threading.Event()
    load, download, install = daemon.load, daemon.download, daemon.install

    def download_and_tell(client: FakeClient, request: wheels.PipRequest, **kw: Any) -> list[Path]:
        with lock:
            events.append("resolve " + request.requirements[0])
        found = download(client, request, **kw)
        if request.requirements == ("prefect==3.9.1",):
            next_resolved.set()
        return found

    def install_and_tell(client: FakeClient, **kw: Any) -> None:
        with lock:
            events.append(f"install {kw['staging']}")
        install(client, **kw)

    def first_core_waits(client: FakeClient, image: assemble.Assembled, tag: str) -> None:
        version = json.loads(image.config)["config"]["Labels"][labels.VERSION]
        core = any(layer.path.name.endswith("-deps.tar") for layer in image.layers)
        if core and version == "3.9.0":
            # Resolved only once this group is done, it would never be resolved here.
            assert next_resolved.wait(timeout=5), "the next group waited for this one's build"
        load(client, image, tag)

    first, second = group_of(matrix, "3.9.0", "3.13"), group_of(matrix, "3.9.1", "3.13")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assemble, "load", first_core_waits)
        patch.setattr(wheels, "download", download_and_tell)
        patch.setattr(wheels, "install", install_and_tell)
        builder = make_builder(client, matrix, tmp_path)
        results = [check.result() for check in builder.start(first, then=second)]
        results += [check.result() for check in builder.start(second)]
        builder.close()
    assert [(r.image.id, r.error) for r in results] == [
        ("core-3.9.0-py3.13", ""),
        ("full-3.9.0-py3.13", ""),
        ("core-3.9.1-py3.13", ""),
        ("full-3.9.1-py3.13", ""),
    ]
    # Prepared once, not again when its turn came; and only after this group's core had
    # its packages installed, so that the next one's install could reuse them.
    assert events.count("resolve prefect==3.9.1") == 1
    assert len(daemon.built(CORE_DOCKERFILE)) == 2
    cores = [e for e in events if "[" not in e and e != "install extras"]
    assert cores[:4] == [
        "resolve prefect==3.9.0",
        "install deps",
        "install prefect",
        "resolve prefect==3.9.1",
    ]


def test_a_next_group_that_cannot_be_prepared_fails_itself_not_the_group_building(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    download = daemon.download

    def refuse_the_next(client: FakeClient, request: wheels.PipRequest, **kw: Any) -> list[Path]:
        if "3.9.1" in request.requirements[0]:
            raise BuildError("no matching distribution for prefect==3.9.1")
        return download(client, request, **kw)

    first, second = group_of(matrix, "3.9.0", "3.13"), group_of(matrix, "3.9.1", "3.13")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wheels, "download", refuse_the_next)
        builder = make_builder(client, matrix, tmp_path)
        done = [check.result() for check in builder.start(first, then=second)]
        failed = [check.result() for check in builder.start(second)]
        builder.close()
    assert [(r.image.id, r.error) for r in done] == [
        ("core-3.9.0-py3.13", ""),
        ("full-3.9.0-py3.13", ""),
    ]
    assert [r.image.id for r in failed] == ["core-3.9.1-py3.13", "full-3.9.1-py3.13"]
    assert all("no matching distribution for prefect==3.9.1" in r.error for r in failed)
    assert len(daemon.built(CORE_DOCKERFILE)) == 1


def test_extras_that_need_other_versions_of_the_core_s_packages_are_resolved_in_the_core(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    download = daemon.download

    def conflicting(client: FakeClient, request: wheels.PipRequest, **kw: Any) -> list[Path]:
        if request.constraints:
            raise BuildError("cannot resolve prefect[docker]==3.9.1: anyio 4.0.0 is pinned")
        return download(client, request, **kw)

    daemon.download = conflicting  # type: ignore[method-assign]
    stream = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(wheels, "download", conflicting)
        results = make_builder(client, matrix, tmp_path, stream).build(
            group_of(matrix, "3.9.1", "3.13")
        )
    assert all(r.ok for r in results), [r.error for r in results]
    (core,) = daemon.built(CORE_DOCKERFILE)
    (full,) = daemon.built(EXTRAS)
    # The pinned attempt failed, so the extras were resolved as before: in the core image.
    (in_core,) = [r for r in daemon.resolutions if r["base_image"] == core["tag"]]
    assert (in_core["exclude"], in_core["constraints"]) == (("prefect",), ())
    assert installed(full, "extras") == ["docker==7.1.0"]
    assert "full-3.9.1-py3.13: resolving in the core image instead, as cannot resolve" in (
        stream.getvalue()
    )


def test_an_image_gone_before_its_smoke_test_fails(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    daemon.untagged = {EXTRAS}
    core, full = make_builder(client, matrix, tmp_path).build(group_of(matrix, "3.9.1", "3.13"))
    assert core.ok
    assert full.error.startswith("image vanished:")


def test_a_published_core_is_pulled_and_built_on_not_rebuilt(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    released = "localhost:5000/ns/prefect@" + digest_of("released core")
    auth = {"username": "bot", "password": "x"}
    group = group_of(matrix, "3.9.1", "3.13")
    only_full = Group(
        version=group.version,
        python=group.python,
        images=group.images[1:],
        published_core=released,
    )
    results = make_builder(client, matrix, tmp_path, auth=auth).build(only_full)

    assert [(r.image.id, r.ok) for r in results] == [("full-3.9.1-py3.13", True)]
    assert daemon.built(CORE_DOCKERFILE) == []
    assert (released, auth) in client.pulls
    (full,) = daemon.built(EXTRAS)
    assert full["parent"] == client.images.get(released).id
    (resolution,) = daemon.resolutions
    assert resolution["base_image"] == released
    assert resolution["exclude"] == ("prefect",)


def test_a_published_core_changes_the_fingerprint(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    group = group_of(matrix, "3.9.1", "3.13")
    (_, on_local) = make_builder(client, matrix, tmp_path).build(group)
    released = "localhost:5000/ns/prefect@" + digest_of("released core")
    only_full = Group(
        version=group.version, python=group.python, images=group.images[1:], published_core=released
    )
    (on_released,) = make_builder(client, matrix, tmp_path).build(only_full)
    assert on_local.ok and on_released.ok
    built_on_local, built_on_released = daemon.built(EXTRAS)
    assert (
        built_on_released["labels"][labels.FINGERPRINT]
        != built_on_local["labels"][labels.FINGERPRINT]
    )


def test_images_already_built_here_are_not_rebuilt_unless_forced(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    group = group_of(matrix, "3.9.1", "3.13")
    first = make_builder(client, matrix, tmp_path).build(group)
    assert len(daemon.builds) == 2 and len(daemon.resolutions) == 2

    stream = io.StringIO()
    again = make_builder(client, matrix, tmp_path, stream).build(group)
    assert len(daemon.builds) == 2  # nothing built
    assert len(daemon.resolutions) == 2  # nor resolved
    assert [r.local_id for r in again] == [r.local_id for r in first]
    assert len(daemon.smokes) == 4  # but tested again
    assert "core: already built on this machine" in stream.getvalue()
    assert "full-3.9.1-py3.13: already built on this machine" in stream.getvalue()

    make_builder(client, matrix, tmp_path, force=True).build(group)
    assert len(daemon.builds) == 4 and len(daemon.resolutions) == 4


def test_a_replace_build_records_what_it_replaces_under_another_cache_key(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    group = group_of(matrix, "3.9.1", "3.13")
    make_builder(client, matrix, tmp_path).build(group)
    old = digest_of("old full")
    replacing = Group(
        version=group.version,
        python=group.python,
        images=group.images,
        replaces={"full-3.9.1-py3.13": old},
    )
    core, full = make_builder(client, matrix, tmp_path).build(replacing)

    assert core.ok and full.ok
    built = daemon.built(EXTRAS)
    assert len(built) == 2  # the replacing image is another image: built, not reused
    assert built[1]["labels"][labels.REPLACES] == old
    assert built[1]["tag"] != built[0]["tag"]
    assert len(daemon.built(CORE_DOCKERFILE)) == 1  # the core replaces nothing: reused


def test_a_replaced_core_is_rebuilt_with_its_label(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    group = group_of(matrix, "3.9.1", "3.13")
    old = digest_of("old core")
    replacing = Group(
        version=group.version,
        python=group.python,
        images=group.images,
        replaces={"core-3.9.1-py3.13": old},
    )
    make_builder(client, matrix, tmp_path).build(replacing)
    (core,) = daemon.built(CORE_DOCKERFILE)
    assert core["labels"][labels.REPLACES] == old


def test_a_nightly_installs_its_own_wheel_and_records_its_commit(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    wheel = tiny_wheel(tmp_path / "dist", "prefect", "3.10.0.dev1", {"prefect/__init__.py": ""})
    revision = "f" * 40
    builder = make_builder(
        client,
        matrix,
        tmp_path,
        nightly=NightlySource(wheel=wheel, revision=revision, ui=labels.UI_SKIPPED),
        base_image="mirror.example/python:{python}-slim",
    )
    client.add("mirror.example/python:3.13-slim", digest_of("mirror"))
    builder.build(group_of(matrix, "3.9.1", "3.13"))

    core_res, full_res = daemon.resolutions
    assert core_res["requirements"] == (f"prefect @ file:///source/{wheel.name}",)
    assert core_res["local_wheel"] == wheel
    assert core_res["base_image"] == "mirror.example/python:3.13-slim"
    assert full_res["requirements"] == (f"prefect[docker] @ file:///source/{wheel.name}",)
    (core,) = daemon.built(CORE_DOCKERFILE)
    # No constraint pins a file URL's package: the extras are resolved in the core image.
    assert (full_res["base_image"], full_res["constraints"]) == (core["tag"], ())
    assert full_res["exclude"] == ("prefect",)
    assert core["labels"][labels.REVISION] == revision
    assert core["labels"][labels.UI] == labels.UI_SKIPPED
    assert [s["ui"] for s in daemon.smokes] == [smoke.UI_SKIP, smoke.UI_SKIP]
    assert core["buildargs"] == {"BASE_IMAGE": "mirror.example/python:3.13-slim"}
    recorded = Inputs.from_label(core["labels"][labels.INPUTS])
    assert recorded is not None and recorded.buildargs["SOURCE_REVISION"] == revision
    # A base image known only by its local id is identified by it.
    assert recorded.base_id == digest_of("mirror")


def test_a_nightly_built_with_its_ui_must_serve_it(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    wheel = tiny_wheel(tmp_path / "dist", "prefect", "3.10.0.dev1", {"prefect/__init__.py": ""})
    builder = make_builder(
        client, matrix, tmp_path, nightly=NightlySource(wheel=wheel, revision="f" * 40)
    )
    daemon.fail_smoke = lambda call: (
        "the image has no UI bundles" if call["ui"] == smoke.UI_REQUIRED else ""
    )

    results = builder.build(group_of(matrix, "3.9.1", "3.13"))

    # The core's check fails; the full image is built FROM that core and not started again,
    # and one failure is enough for nothing to be pushed.
    assert [s["ui"] for s in daemon.smokes] == [smoke.UI_REQUIRED, smoke.UI_SKIP]
    assert [r.error for r in results] == ["the image has no UI bundles", ""]


def test_a_missing_base_image_is_pulled(matrix: Matrix, daemon: Daemon, tmp_path: Path) -> None:
    client = FakeClient()
    client.unpullable = {"python:3.11-slim"}
    results = make_builder(client, matrix, tmp_path).build(group_of(matrix, "3.9.1", "3.11"))
    assert results[0].error.startswith("cannot pull base image python:3.11-slim")

    results = make_builder(client, matrix, tmp_path).build(group_of(matrix, "3.9.1", "3.13"))
    assert all(r.ok for r in results)
    assert ("python:3.13-slim", None) in client.pulls


# -- the engine --------------------------------------------------------------------------


def test_docker_engine_tags_and_pushes_the_saved_image_to_the_run_s_registry(
    matrix: Matrix,
    client: FakeClient,
    daemon: Daemon,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pushed: list[tuple[Any, Any, str, str, str]] = []
    made: list[Any] = []

    def own_push(
        cl: Any, registry: Any, *, repo: str, tag: str, image_id: str, work: Path, assemblies: Any
    ) -> str:
        assert work.is_dir()
        pushed.append((cl, registry, repo, tag, image_id))
        made.append(assemblies.get(image_id))
        return "sha256:d"

    monkeypatch.setattr(push, "push", own_push)
    monkeypatch.setattr(docker_client, "connect", lambda: client)
    registry = object()
    settings = Settings(dockerfiles=ROOT / "dockerfiles")
    with engine.docker_engine(
        matrix=matrix,
        settings=settings,
        reporter=Reporter(stream=io.StringIO()),
        auth=None,
        registry=registry,  # type: ignore[arg-type]
        host="localhost:5000",
    ) as real:
        (core, _) = [check.result() for check in real.start(group_of(matrix, "3.9.1", "3.13"))]
        real.tag(core.local_id, "prefecthq/prefect", "core-3.9.1")
        result = real.push(core.local_id, "localhost:5000/ns/prefect", "core-3.9.1")
        with pytest.raises(RegistryError, match="other:5000/ns/prefect:x: not the run's registry"):
            real.push(core.local_id, "other:5000/ns/prefect", "x")
        workdir = real.builder.workdir
        assert workdir.is_dir()
    assert result == "sha256:d"
    assert pushed == [(client, registry, "ns/prefect", "core-3.9.1", core.local_id)]
    # Pushed from what it was made of: the engine hands over the run's made images.
    assert made[0] is not None and made[0].id == core.local_id
    assert client.tagged == [
        (core.local_id, "prefecthq/prefect", "core-3.9.1"),
        (core.local_id, "localhost:5000/ns/prefect", "core-3.9.1"),
    ]
    assert client.closed and not workdir.exists()


def test_docker_engine_closes_the_client_on_error(
    matrix: Matrix, client: FakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(docker_client, "connect", lambda: client)
    settings = Settings(dockerfiles=ROOT / "dockerfiles")
    with (
        pytest.raises(RuntimeError),
        engine.docker_engine(
            matrix=matrix, settings=settings, reporter=Reporter(stream=io.StringIO()), auth=None
        ),
    ):
        raise RuntimeError("boom")
    assert client.closed


# -- docker_client against a fake low-level API ------------------------------------------


class FakeAPI:
    """The SDK's low-level client: ``build`` streams ``chunks``; a BuildKit build
    posts to /build through its request helpers (``_post`` and friends)."""

    def __init__(
        self,
        chunks: list[dict[str, Any]] | Exception,
        classic: list[dict[str, Any]] | None = None,
    ) -> None:
        self.chunks = chunks
        self.classic = classic
        self.kwargs: dict[str, Any] = {}
        self.params: dict[str, str] = {}
        self.body = b""

    def _stream(self, chunks: list[dict[str, Any]] | Exception) -> Iterator[dict[str, Any]]:
        if isinstance(chunks, Exception):
            raise chunks
        yield from chunks

    def build(self, **kw: Any) -> Iterator[dict[str, Any]]:
        self.kwargs, self.body = kw, kw["fileobj"].read()
        return self._stream(self.classic if self.classic is not None else self.chunks)

    def _url(self, path: str) -> str:
        return f"http://daemon{path}"

    def _post(self, url: str, *, params: dict[str, str], data: Any, **kw: Any) -> str:
        assert url == "http://daemon/build" and kw["stream"]
        self.params, self.body = params, data.read()
        return "response"

    def _raise_for_status(self, response: str) -> None:
        if isinstance(self.chunks, docker.errors.APIError):
            raise self.chunks

    def _stream_helper(self, response: str, decode: bool) -> Iterator[dict[str, Any]]:
        assert decode
        return self._stream(self.chunks)


def with_api(
    chunks: list[dict[str, Any]] | Exception, classic: list[dict[str, Any]] | None = None
) -> FakeClient:
    fake = FakeClient()
    fake.api = FakeAPI(chunks, classic)  # type: ignore[attr-defined]
    return fake


def real_build(
    fake: FakeClient, lines: list[str], tmp_path: Path, platform: str | None = None
) -> str:
    (tmp_path / "core.Dockerfile").write_text("FROM x\n")
    return docker_client.build(
        fake,  # type: ignore[arg-type]
        docker_client.BuildRequest(
            context=tmp_path,
            dockerfile="core.Dockerfile",
            buildargs={"A": "1"},
            labels={"l": "v"},
            tag="t:1",
            platform=platform,
        ),
        on_line=lines.append,
    )


def trace(
    *steps: tuple[str, str, bool], logs: tuple[tuple[str, bytes], ...] = ()
) -> dict[str, Any]:
    """A moby.buildkit.trace message of (digest, name, cached) vertices and (digest, output)
    logs, as the daemon sends it."""

    def field(number: int, value: bytes) -> bytes:
        return bytes([number << 3 | 2, len(value)]) + value

    message = b""
    for digest, name, cached in steps:
        vertex = field(1, digest.encode()) + field(3, name.encode())
        vertex += bytes([4 << 3, 1]) if cached else field(5, b"\x08\x01")  # started
        message += field(1, vertex)
    for digest, output in logs:
        message += field(3, field(1, digest.encode()) + bytes([3 << 3, 1]) + field(4, output))
    return {"id": "moby.buildkit.trace", "aux": base64.b64encode(message).decode()}


def test_docker_build_runs_on_buildkit_and_returns_the_id(tmp_path: Path) -> None:
    (tmp_path / "deps" / "bin").mkdir(parents=True)
    (tmp_path / "deps" / "bin" / "tool").write_text("#!/bin/sh\n")
    fake = with_api(
        [
            trace(("d1", "[1/2] FROM x", False)),
            trace(("d1", "[1/2] FROM x", False), ("d2", "[2/2] COPY deps/ /", True)),
            {"stream": "Successfully tagged t:1\n"},
            {"id": "moby.image.id", "aux": {"ID": "sha256:built"}},
        ]
    )
    lines: list[str] = []
    assert real_build(fake, lines, tmp_path, platform="linux/arm64") == "sha256:built"
    assert lines == ["[1/2] FROM x", "CACHED [2/2] COPY deps/ /", "Successfully tagged t:1"]
    api = fake.api  # type: ignore[attr-defined]
    assert api.params == {
        "version": "2",
        "t": "t:1",
        "dockerfile": "core.Dockerfile",
        "buildargs": '{"A": "1"}',
        "labels": '{"l": "v"}',
        "platform": "linux/arm64",
    }
    # The context: a GNU tar (BuildKit takes a tar opening with a PAX header for a
    # Dockerfile), the Dockerfile first, everything owned by root.
    with tarfile.open(fileobj=io.BytesIO(api.body)) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == ["core.Dockerfile", "deps", "deps/bin", "deps/bin/tool"]
    assert {(m.uid, m.gid, m.uname) for m in members} == {(0, 0, "root")}
    assert api.body[:512].find(b"PaxHeader") == -1


def test_docker_build_without_an_id_looks_the_tag_up(tmp_path: Path) -> None:
    fake = with_api([{"stream": "done\n"}])
    fake.add("t:1", "sha256:bytag")
    assert real_build(fake, [], tmp_path) == "sha256:bytag"


def test_docker_build_without_buildkit_uses_the_classic_builder(tmp_path: Path) -> None:
    fake = with_api(
        docker.errors.APIError("400", explanation="buildkit not supported by daemon"),
        classic=[{"stream": "Step 1/1 : FROM x\n"}, {"aux": {"ID": "sha256:classic"}}],
    )
    lines: list[str] = []
    assert real_build(fake, lines, tmp_path) == "sha256:classic"
    assert lines == ["Step 1/1 : FROM x"]
    kwargs = fake.api.kwargs  # type: ignore[attr-defined]
    assert (kwargs["labels"], kwargs["buildargs"], kwargs["pull"], kwargs["custom_context"]) == (
        {"l": "v"},
        {"A": "1"},
        False,
        True,
    )
    with tarfile.open(fileobj=io.BytesIO(fake.api.body)) as archive:  # type: ignore[attr-defined]
        assert archive.getnames() == ["core.Dockerfile"]


def test_docker_build_error_names_the_last_lines_of_output(tmp_path: Path) -> None:
    failing = "[2/2] RUN dpkg -i /mnt/*.deb"
    fake = with_api(
        [
            trace(("d2", failing, False)),
            trace(logs=(("d2", b"one\ntwo\n"), ("d2", b"three\n"))),
            {"error": "x", "errorDetail": {"message": "exit code: 1\n"}},
        ]
    )
    lines: list[str] = []
    with pytest.raises(
        BuildError, match=r"^exit code: 1 \(after: \[2/2\] one \| \[2/2\] two \| \[2/2\] three\)$"
    ):
        real_build(fake, lines, tmp_path)
    assert lines == [failing, "[2/2] one", "[2/2] two", "[2/2] three"]
    classic = with_api(
        [
            {"stream": "one\n"},
            {"stream": "two\n"},
            {"error": "x", "errorDetail": {"message": "The command returned 1\n"}},
        ]
    )
    with pytest.raises(BuildError, match=r"^The command returned 1 \(after: one \| two\)$"):
        real_build(classic, [], tmp_path)


def test_docker_build_survives_a_trace_it_cannot_read(tmp_path: Path) -> None:
    fake = with_api(
        [
            {"id": "moby.buildkit.trace", "aux": "not base64!"},
            {"id": "moby.buildkit.trace", "aux": base64.b64encode(b"\x0a\x7f").decode()},
            {"id": "moby.image.id", "aux": {"ID": "sha256:built"}},
        ]
    )
    assert real_build(fake, [], tmp_path) == "sha256:built"


def test_docker_build_refused_or_lost(tmp_path: Path) -> None:
    refused = with_api(docker.errors.APIError("500 Server Error", explanation="no space left"))
    with pytest.raises(BuildError, match="the daemon refused the build: no space left"):
        real_build(refused, [], tmp_path)
    lost = with_api(ConnectionResetError("reset by peer"))
    with pytest.raises(DockerUnavailable, match=r"lost the Docker daemon at .*: reset by peer"):
        real_build(lost, [], tmp_path)


class FakeContainer:
    def __init__(self, code: int, logs: bytes, fail: Exception | None = None) -> None:
        self.code, self.output, self.fail = code, logs, fail
        self.removed = False

    def start(self) -> None:
        if self.fail:
            raise self.fail

    def wait(self, timeout: int) -> dict[str, int]:
        return {"StatusCode": self.code}

    def logs(self, stdout: bool, stderr: bool) -> bytes:
        return self.output

    def remove(self, force: bool) -> None:
        self.removed = True
        raise docker.errors.NotFound("already gone")


class FakeContainers:
    def __init__(self, container: FakeContainer | Exception) -> None:
        self.container = container
        self.created: list[tuple[str, list[str], dict[str, Any]]] = []

    def create(self, image: str, command: list[str], **kw: Any) -> FakeContainer:
        self.created.append((image, command, kw))
        if isinstance(self.container, Exception):
            raise self.container
        return self.container


def test_docker_run_returns_code_and_output_and_removes_the_container() -> None:
    fake = FakeClient()
    container = FakeContainer(3, b"out\n\xff")
    fake.containers = FakeContainers(container)  # type: ignore[attr-defined]
    code, output = docker_client.run(
        fake,  # type: ignore[arg-type]
        "img",
        ["pip", "x"],
        env={"A": "1"},
        user="1:1",
    )
    assert (code, output) == (3, "out\n\ufffd")
    assert container.removed
    (image, command, kw) = fake.containers.created[0]  # type: ignore[attr-defined]
    assert (image, command, kw["environment"], kw["user"], kw["network_mode"]) == (
        "img",
        ["pip", "x"],
        {"A": "1"},
        "1:1",
        "host",
    )


def test_docker_run_failures() -> None:
    fake = FakeClient()
    fake.containers = FakeContainers(  # type: ignore[attr-defined]
        docker.errors.ImageNotFound("no such image", explanation="No such image: img")
    )
    with pytest.raises(BuildError, match="cannot run img: No such image: img"):
        docker_client.run(fake, "img", ["true"])  # type: ignore[arg-type]
    container = FakeContainer(0, b"", fail=ConnectionError("gone"))
    fake.containers = FakeContainers(container)  # type: ignore[attr-defined]
    with pytest.raises(DockerUnavailable, match="gone"):
        docker_client.run(fake, "img", ["true"])  # type: ignore[arg-type]
    assert container.removed


def test_image_identity_prefers_the_registry_digest(client: FakeClient) -> None:
    identity = docker_client.image_identity
    assert identity(client, "python:3.13-slim") == digest_of("python 3.13")  # type: ignore[arg-type]
    client.add("local:only", "sha256:localid")
    assert identity(client, "local:only") == "sha256:localid"  # type: ignore[arg-type]
    assert identity(client, "remote:x") == digest_of("remote remote:x")  # type: ignore[arg-type]
    client.unpullable = {"gone:x"}
    with pytest.raises(BuildError, match="base image gone:x is not on this machine"):
        identity(client, "gone:x")  # type: ignore[arg-type]


def test_connect_reports_an_unreachable_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**kw: Any) -> None:
        raise docker.errors.DockerException("Error while fetching server API version\nmore")

    monkeypatch.setattr(docker, "from_env", refuse)
    monkeypatch.setenv("DOCKER_HOST", "tcp://nowhere:2375")
    with pytest.raises(DockerUnavailable) as caught:
        docker_client.connect()
    assert str(caught.value) == (
        "cannot reach the Docker daemon at tcp://nowhere:2375: Error while fetching server API "
        "version (is dockerd running? DOCKER_HOST names the daemon to use)"
    )


def test_an_image_built_on_a_released_core_records_what_that_core_was_built_from(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    released = "localhost:5000/ns/prefect@" + digest_of("released core")
    old = Inputs(
        base="python:3.13-slim",
        base_id=digest_of("last month's base"),
        files={CORE_DOCKERFILE: "1" * 64, "entrypoint.sh": "2" * 64},
        buildargs={"PREFECT": "prefect==3.9.1"},
    )
    client.pull_labels[released] = {labels.INPUTS: old.to_label()}
    group = group_of(matrix, "3.9.1", "3.13")
    only_full = Group(
        version=group.version, python=group.python, images=group.images[1:], published_core=released
    )
    (result,) = make_builder(client, matrix, tmp_path).build(only_full)

    assert result.ok
    (full,) = daemon.built(EXTRAS)
    recorded = Inputs.from_label(full["labels"][labels.INPUTS])
    assert recorded is not None
    assert (recorded.base, recorded.base_id) == (old.base, old.base_id)
    assert recorded.files[CORE_DOCKERFILE] == "1" * 64
    assert recorded.files == old.files and recorded.extras == ("docker",)


# -- platforms ---------------------------------------------------------------------------


def test_a_platform_group_builds_on_the_base_pinned_for_its_platform(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    pinned: list[tuple[str, str]] = []

    def pin(reference: str, platform: str) -> str:
        pinned.append((reference, platform))
        return f"python@{digest_of(reference + ' ' + platform)}"

    both = ("linux/amd64", "linux/arm64")
    images = tuple(
        dataclasses.replace(i, platforms=both) for i in group_of(matrix, "3.9.1", "3.13").images
    )
    builder = make_builder(client, matrix, tmp_path)
    builder.pin_base = pin
    groups = [g for g in groups_of(images)]
    assert [(g.platform, g.subject) for g in groups] == [
        ("linux/amd64", "prefect 3.9.1 / Python 3.13 / linux/amd64"),
        ("linux/arm64", "prefect 3.9.1 / Python 3.13 / linux/arm64"),
    ]
    results = [r for g in groups for r in builder.build(g)]

    # The arm64 group's packages are resolved and installed with the amd64 image's pip.
    assert pinned == [("python:3.13-slim", p) for p in (*both, "linux/amd64")]
    assert [(r.image.id, r.platform, r.ok) for r in results] == [
        ("core-3.9.1-py3.13", "linux/amd64", True),
        ("full-3.9.1-py3.13", "linux/amd64", True),
        ("core-3.9.1-py3.13", "linux/arm64", True),
        ("full-3.9.1-py3.13", "linux/arm64", True),
    ]
    cores = daemon.built(CORE_DOCKERFILE)
    assert [c["platform"] for c in daemon.builds] == ["linux/amd64"] * 2 + ["linux/arm64"] * 2
    arm = f"python@{digest_of('python:3.13-slim linux/arm64')}"
    assert cores[1]["buildargs"] == {"BASE_IMAGE": arm}
    # The platform image's digest is the base's identity: each platform has its own
    # fingerprint and local cache tag.
    recorded = Inputs.from_label(cores[1]["labels"][labels.INPUTS])
    assert recorded is not None and recorded.base_id == arm.split("@")[1]
    assert cores[0]["tag"] != cores[1]["tag"]
    amd = f"python@{digest_of('python:3.13-slim linux/amd64')}"
    # amd64 builds as before: pip in the base it builds on, for itself (the extras with
    # the core's packages pinned).
    assert [(r["base_image"], r["target"]) for r in daemon.resolutions[:2]] == [
        (amd, None),
        (amd, None),
    ]
    # arm64: natively, for what the arm64 base says it is, the extras as well: the arm64
    # core is never probed (under QEMU each probe costs seconds).
    core_arm, full_arm = daemon.resolutions[2:]
    assert core_arm["base_image"] == full_arm["base_image"] == amd
    assert core_arm["target"] == full_arm["target"]
    assert core_arm["target"].platform == "linux/arm64"
    assert core_arm["target"].foreign.markers["platform_machine"] == "aarch64"
    assert core_arm["target"].native.markers["platform_machine"] == "x86_64"
    assert daemon.probes == [(arm, "linux/arm64"), (amd, "linux/amd64")]
    installs = [(i["image"], i["target"] is not None, i["staging"]) for i in daemon.installs]
    # In order for each platform, but for the extras, installed meanwhile.
    assert sorted(installs[:3]) == [(amd, False, s) for s in ("deps", "extras", "prefect")]
    assert sorted(installs[3:]) == [(amd, True, s) for s in ("deps", "extras", "prefect")]
    # tini for arm64 comes from the amd64 image's apt, told to fetch arm64's; the arm64
    # core's build context carries that .deb, and its build runs no apt-get.
    assert [(f["image"], f["platform"]) for f in daemon.fetches] == [
        (amd, "linux/amd64"),
        (amd, "linux/arm64"),
    ]
    assert "debs/tini_0.19.0-3_arm64.deb" in cores[1]["files"]
    assert [s["machine"] for s in daemon.smokes] == ["x86_64"] * 2 + ["aarch64"] * 2
    # The UI server is checked on the daemon's own platform only: emulated, it takes minutes.
    assert [s["ui"] for s in daemon.smokes] == [smoke.UI_IF_PRESENT] + [smoke.UI_SKIP] * 3


def test_a_platform_failure_names_the_platform(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    def pin(reference: str, platform: str) -> str:
        raise BuildError(f"base image {reference} has no {platform} image (it has: linux/amd64)")

    images = tuple(
        dataclasses.replace(i, platforms=("linux/arm64",))
        for i in group_of(matrix, "3.9.1", "3.13").images
    )
    builder = make_builder(client, matrix, tmp_path)
    builder.pin_base = pin
    (group,) = groups_of(images)
    results = builder.build(group)
    assert {r.error for r in results} == {
        "linux/arm64: base image python:3.13-slim has no linux/arm64 image (it has: linux/amd64)"
    }
    assert daemon.builds == []


def test_a_default_platform_group_builds_as_before(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    def pin(reference: str, platform: str) -> str:
        raise AssertionError("a single default platform is never pinned")

    builder = make_builder(client, matrix, tmp_path)
    builder.pin_base = pin
    results = builder.build(group_of(matrix, "3.9.1", "3.13"))
    assert all(r.ok and r.platform == "linux/amd64" for r in results)
    assert {b["platform"] for b in daemon.builds} == {None}
    assert {s["machine"] for s in daemon.smokes} == {None}


def test_a_foreign_platform_without_a_native_base_image_installs_under_emulation(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    def pin(reference: str, platform: str) -> str:
        if platform == "linux/amd64":
            raise BuildError(f"base image {reference} has no {platform} image")
        return f"python@{digest_of(reference + ' ' + platform)}"

    images = tuple(
        dataclasses.replace(i, platforms=("linux/arm64",))
        for i in group_of(matrix, "3.9.1", "3.13").images
    )
    stream = io.StringIO()
    builder = make_builder(client, matrix, tmp_path, stream)
    builder.pin_base = pin
    (group,) = groups_of(images)
    assert all(r.ok for r in builder.build(group))
    arm = f"python@{digest_of('python:3.13-slim linux/arm64')}"
    assert (daemon.resolutions[0]["base_image"], daemon.resolutions[0]["target"]) == (arm, None)
    assert {i["target"] for i in daemon.installs} == {None}
    assert "installing under emulation: base image python:3.13-slim has no linux/amd64" in (
        stream.getvalue()
    )


def test_a_native_base_of_another_python_is_refused(
    matrix: Matrix, client: FakeClient, daemon: Daemon, tmp_path: Path
) -> None:
    images = tuple(
        dataclasses.replace(i, platforms=("linux/arm64",))
        for i in group_of(matrix, "3.9.1", "3.13").images
    )
    builder = make_builder(client, matrix, tmp_path)
    builder.pin_base = lambda reference, platform: f"python@{digest_of(reference + platform)}"
    daemon.python_of[f"python@{digest_of('python:3.13-slimlinux/amd64')}"] = "3.13.1"
    (group,) = groups_of(images)
    results = builder.build(group)
    assert {r.error for r in results} == {
        "linux/arm64: python:3.13-slim (linux/amd64): the native image has Python 3.13.1, "
        "the foreign one 3.13.5; byte code is per Python version"
    }
    assert daemon.builds == []

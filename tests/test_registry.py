"""RegistryClient against a real docker-registry, plus a scripted server for what it can't show.

distribution 2.8 has neither token auth without a separate token service nor tag
list pagination, so Bearer challenges, Link paging, retries and dropped
connections are exercised against a small scripted HTTP server instead.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from registry_server import free_port, run_registry
from tiny_image import push_image, push_manifest, sha256

from publisher.errors import RegistryAuthError, RegistryError, RegistryUnreachable
from publisher.registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    TIMEOUT_ENV,
    Credentials,
    Manifest,
    RegistryClient,
)

needs_registry = pytest.mark.registry
USER, PASSWORD = "publisher", "Pa55-w0rd-never-shown"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with run_registry(tmp_path / "registry") as host:
        yield host


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry) as registry_client:
        yield registry_client


# --- against the real registry ---------------------------------------------------------------


@needs_registry
def test_digest_of_present_and_absent_tag(registry: str, client: RegistryClient) -> None:
    pushed = push_image(registry, "prefect/prefect", "1.0")

    assert client.digest("prefect/prefect", "1.0") == pushed
    assert client.digest("prefect/prefect", "absent") is None
    assert client.digest("prefect/never-pushed", "1.0") is None


@needs_registry
def test_manifest_keeps_exact_bytes_and_media_type(registry: str, client: RegistryClient) -> None:
    pushed = push_image(registry, "prefect/prefect", "1.0")

    manifest = client.manifest("prefect/prefect", "1.0")

    assert manifest.digest == pushed == sha256(manifest.raw)
    assert manifest.media_type == DOCKER_MANIFEST
    assert client.manifest("prefect/prefect", pushed) == manifest


@needs_registry
def test_missing_manifest_names_the_ref(registry: str, client: RegistryClient) -> None:
    push_image(registry, "prefect/prefect", "1.0")

    with pytest.raises(RegistryError, match=r"prefect/prefect:2\.0") as caught:
        client.manifest("prefect/prefect", "2.0")
    assert "\n" not in str(caught.value)


@needs_registry
def test_copy_tag_moves_no_blob_and_is_a_no_op_the_second_time(
    registry: str, client: RegistryClient
) -> None:
    pushed = push_image(registry, "prefect/prefect", "1.0-python3.8", labels={"a": "b"})
    manifest_size = len(client.manifest("prefect/prefect", pushed).raw)
    requests_before, bytes_before = client.requests_made, client.bytes_sent

    assert client.copy_tag("prefect/prefect", "1.0-python3.8", "latest") == pushed

    # GET source, HEAD target, PUT: and only the manifest's bytes went up.
    assert client.requests_made - requests_before == 3
    assert client.bytes_sent - bytes_before == manifest_size
    assert client.digest("prefect/prefect", "latest") == pushed

    requests_before, bytes_before = client.requests_made, client.bytes_sent
    assert client.copy_tag("prefect/prefect", "1.0-python3.8", "latest") == pushed
    assert client.requests_made - requests_before == 2
    assert client.bytes_sent == bytes_before

    # By digest, an up-to-date tag costs a single HEAD.
    requests_before = client.requests_made
    assert client.copy_tag("prefect/prefect", pushed, "latest") == pushed
    assert client.requests_made - requests_before == 1


@needs_registry
def test_copy_tag_moves_an_existing_tag(registry: str, client: RegistryClient) -> None:
    old = push_image(registry, "prefect/prefect", "0.9", labels={"v": "0.9"})
    new = push_image(registry, "prefect/prefect", "1.0", labels={"v": "1.0"})
    client.copy_tag("prefect/prefect", "0.9", "latest")
    assert client.digest("prefect/prefect", "latest") == old

    assert client.copy_tag("prefect/prefect", "1.0", "latest") == new
    assert client.labels("prefect/prefect", "latest") == {"v": "1.0"}


@needs_registry
def test_put_manifest_refuses_bytes_that_do_not_match_the_digest(
    registry: str, client: RegistryClient
) -> None:
    push_image(registry, "prefect/prefect", "1.0")
    manifest = client.manifest("prefect/prefect", "1.0")
    forged = Manifest(digest=manifest.digest, media_type=manifest.media_type, raw=b"{}")

    with pytest.raises(RegistryError, match="refusing to push"):
        client.put_manifest("prefect/prefect", "forged", forged)
    assert client.digest("prefect/prefect", "forged") is None


@needs_registry
def test_tags_lists_every_tag(registry: str, client: RegistryClient) -> None:
    push_image(registry, "prefect/prefect", "1.0")
    for index in range(30):
        client.copy_tag("prefect/prefect", "1.0", f"tag-{index:02d}")

    assert client.tags("prefect/prefect") == sorted(
        ["1.0", *(f"tag-{index:02d}" for index in range(30))]
    )
    assert client.tags("prefect/never-pushed") == []


@needs_registry
def test_image_config_and_labels(registry: str, client: RegistryClient) -> None:
    labels = {"io.prefect.python-version": "3.8", "org.label-schema.version": "1.0"}
    push_image(registry, "prefect/prefect", "1.0", labels=labels)
    push_image(registry, "prefect/bare", "1.0")

    config = client.image_config("prefect/prefect", "1.0")
    assert config["architecture"] == "amd64"
    assert client.labels("prefect/prefect", "1.0") == labels
    assert client.labels("prefect/bare", "1.0") == {}


@needs_registry
def test_index_selects_the_requested_platform(registry: str, client: RegistryClient) -> None:
    children = {
        arch: push_image(
            registry, "prefect/prefect", f"1.0-{arch}", labels={"arch": arch}, architecture=arch
        )
        for arch in ("amd64", "arm64")
    }
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": children[arch],
                "size": len(client.manifest("prefect/prefect", children[arch]).raw),
                "platform": {"os": "linux", "architecture": arch, **variant},
            }
            for arch, variant in (("amd64", {}), ("arm64", {"variant": "v8"}))
        ],
    }
    index_digest = push_manifest(registry, "prefect/prefect", "1.0", index, OCI_INDEX)

    assert client.manifest("prefect/prefect", "1.0").media_type == OCI_INDEX
    assert client.digest("prefect/prefect", "1.0") == index_digest
    assert client.labels("prefect/prefect", "1.0") == {"arch": "amd64"}
    arm = client.image_config("prefect/prefect", "1.0", platform="linux/arm64")
    assert arm["architecture"] == "arm64"
    arm_v8 = client.image_config("prefect/prefect", "1.0", platform="linux/arm64/v8")
    assert arm_v8 == arm
    with pytest.raises(RegistryError, match=r"no image for platform linux/s390x.*linux/arm64/v8"):
        client.image_config("prefect/prefect", "1.0", platform="linux/s390x")

    # Copying the index keeps its digest: the children are referenced, not re-pushed.
    assert client.copy_tag("prefect/prefect", "1.0", "latest") == index_digest


@needs_registry
def test_oci_image_manifest(registry: str, client: RegistryClient) -> None:
    pushed = push_image(registry, "prefect/prefect", "1.0", labels={"oci": "yes"}, oci=True)

    assert client.manifest("prefect/prefect", "1.0").media_type == OCI_MANIFEST
    assert client.labels("prefect/prefect", pushed) == {"oci": "yes"}


@needs_registry
def test_blob_exists(registry: str, client: RegistryClient) -> None:
    push_image(registry, "prefect/prefect", "1.0")
    config_digest = json.loads(client.manifest("prefect/prefect", "1.0").raw)["config"]["digest"]

    assert client.blob_exists("prefect/prefect", config_digest)
    assert not client.blob_exists("prefect/prefect", sha256(b"never uploaded"))


@needs_registry
def test_htpasswd_registry_accepts_the_right_credentials(tmp_path: Path) -> None:
    with run_registry(tmp_path, htpasswd={USER: PASSWORD}) as host:
        pushed = push_image(host, "prefect/prefect", "1.0", auth=(USER, PASSWORD))
        credentials = Credentials(username=USER, password=PASSWORD)
        with RegistryClient(host, credentials=credentials) as client:
            client.ping()
            assert client.digest("prefect/prefect", "1.0") == pushed
            assert client.copy_tag("prefect/prefect", "1.0", "latest") == pushed
            assert client.tags("prefect/prefect") == ["1.0", "latest"]

            # Basic is sent up front once learnt: one request per call, no 401 round trip.
            before = client.requests_made
            client.digest("prefect/prefect", "latest")
            assert client.requests_made - before == 1


@needs_registry
def test_htpasswd_registry_refuses_wrong_or_missing_credentials(tmp_path: Path) -> None:
    wrong = "Wr0ng-password-must-not-leak"
    with run_registry(tmp_path, htpasswd={USER: PASSWORD}) as host:
        push_image(host, "prefect/prefect", "1.0", auth=(USER, PASSWORD))
        client = RegistryClient(host, credentials=Credentials(username=USER, password=wrong))
        with pytest.raises(RegistryAuthError) as caught:
            client.digest("prefect/prefect", "1.0")
        message = str(caught.value)
        assert host in message and "prefect/prefect:1.0" in message and USER in message
        assert wrong not in message and PASSWORD not in message and "\n" not in message

        with pytest.raises(RegistryAuthError, match="anonymous"):
            RegistryClient(host).ping()


@needs_registry
def test_from_docker_config_against_htpasswd_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with run_registry(tmp_path / "registry", htpasswd={USER: PASSWORD}) as host:
        write_docker_config(tmp_path / "docker", {host: (USER, PASSWORD)})
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))

        RegistryClient.from_docker_config(host).ping()


def test_unreachable_registry_fails_fast() -> None:
    host = f"127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(RegistryUnreachable, match=f"^cannot reach registry {host}: ") as caught:
        RegistryClient(host).ping()

    assert time.monotonic() - started < 10
    assert "\n" not in str(caught.value)


# --- no server -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "insecure", "base_url"),
    [
        ("localhost:5000", None, "http://localhost:5000"),
        ("127.0.0.1:5000", None, "http://127.0.0.1:5000"),
        ("127.1.2.3", None, "http://127.1.2.3"),
        ("[::1]:5000", None, "http://[::1]:5000"),
        ("localhost:5000", False, "https://localhost:5000"),
        ("registry.example.com:5000", True, "http://registry.example.com:5000"),
        ("registry.example.com", None, "https://registry.example.com"),
        ("ghcr.io", None, "https://ghcr.io"),
        ("128.0.0.1", None, "https://128.0.0.1"),
        ("docker.io", None, "https://registry-1.docker.io"),
        ("index.docker.io", None, "https://registry-1.docker.io"),
    ],
)
def test_scheme_and_api_host(host: str, insecure: bool | None, base_url: str) -> None:
    client = RegistryClient(host, insecure=insecure)

    assert client.base_url == base_url
    assert client.host == host


def test_timeout_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert RegistryClient("localhost:5000").timeout == 30.0
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert RegistryClient("localhost:5000").timeout == 2.5
    assert RegistryClient("localhost:5000", timeout=7).timeout == 7


@pytest.mark.parametrize("value", ["soon", "0", "-1", "nan", "inf"])
def test_a_bad_timeout_setting_is_one_line(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, value)

    with pytest.raises(RegistryError, match=f"^{TIMEOUT_ENV}='{value}' is not a number"):
        RegistryClient("localhost:5000")


def test_credentials_repr_hides_the_password() -> None:
    credentials = Credentials(username=USER, password=PASSWORD)

    assert USER in repr(credentials)
    assert PASSWORD not in repr(credentials)
    assert PASSWORD not in repr(RegistryClient("localhost", credentials=credentials).credentials)


def write_docker_config(directory: Path, logins: dict[str, tuple[str, str]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    auths = {
        server: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        for server, (user, password) in logins.items()
    }
    (directory / "config.json").write_text(json.dumps({"auths": auths}))


def test_from_docker_config_reads_auth_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_docker_config(
        tmp_path,
        {
            "localhost:5000": ("alice", "alice-pw"),
            "https://index.docker.io/v1/": ("bob", "bob:pw"),
        },
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))

    local = RegistryClient.from_docker_config("localhost:5000", timeout=5.0)
    assert local.credentials == Credentials(username="alice", password="alice-pw")
    assert local.timeout == 5.0
    hub = RegistryClient.from_docker_config("docker.io")
    assert hub.credentials == Credentials(username="bob", password="bob:pw")
    assert hub.base_url == "https://registry-1.docker.io"
    assert RegistryClient.from_docker_config("ghcr.io").credentials is None


# --- a scripted server for what distribution 2.8 cannot show ---------------------------------


@dataclass(frozen=True, kw_only=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


@dataclass(frozen=True, kw_only=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]


Script = Callable[[Seen], Reply]


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], tuple[str, list[Seen]]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(script: Script) -> tuple[str, list[Seen]]:
        seen: list[Seen] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                request = Seen(method=self.command, path=self.path, headers=dict(self.headers))
                seen.append(request)
                reply = script(request)
                if reply.drop:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_PUT = do_POST = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return f"127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def error_body(message: str) -> bytes:
    return json.dumps({"errors": [{"code": "X", "message": message}]}).encode()


def test_tags_follow_link_pagination(scripted: Callable[[Script], tuple[str, list[Seen]]]) -> None:
    pages = {
        "/v2/r/tags/list": (["b", "a"], '</v2/r/tags/list?n=2&last=b>; rel="next"'),
        "/v2/r/tags/list?n=2&last=b": (["d", "c"], '</v2/r/tags/list?n=2&last=d>; rel="next"'),
        "/v2/r/tags/list?n=2&last=d": (["e"], None),
    }

    def script(request: Seen) -> Reply:
        tags, link = pages[request.path]
        headers = {"Link": link} if link else {}
        return Reply(body=json.dumps({"name": "r", "tags": tags}).encode(), headers=headers)

    host, seen = scripted(script)

    assert RegistryClient(host).tags("r") == ["a", "b", "c", "d", "e"]
    assert [request.path for request in seen] == list(pages)


def test_bearer_token_is_fetched_once_per_scope(
    scripted: Callable[[Script], tuple[str, list[Seen]]],
) -> None:
    host = ""

    def script(request: Seen) -> Reply:
        if request.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if request.headers.get("Authorization") != expected:
                return Reply(status=401)
            scope = request.path.split("scope=")[-1]
            return Reply(body=json.dumps({"token": f"tok-{scope}"}).encode())
        if request.headers.get("Authorization", "").startswith("Bearer tok-repository%3Ar%3Apull"):
            return Reply(headers={"Docker-Content-Digest": "sha256:" + "0" * 64})
        challenge = f'Bearer realm="http://{host}/token",service="stub",scope="repository:r:pull"'
        return Reply(status=401, headers={"WWW-Authenticate": challenge})

    host, seen = scripted(script)
    client = RegistryClient(host, credentials=Credentials(username=USER, password=PASSWORD))

    assert client.digest("r", "1") == "sha256:" + "0" * 64
    assert client.digest("r", "2") == "sha256:" + "0" * 64
    assert [request.path.split("?")[0] for request in seen] == [
        "/v2/r/manifests/1",
        "/token",
        "/v2/r/manifests/1",
        "/v2/r/manifests/2",
    ]
    assert client.requests_made == 4

    intruder = RegistryClient(host, credentials=Credentials(username=USER, password="nope-pw"))
    with pytest.raises(RegistryAuthError, match="token service") as caught:
        intruder.digest("r", "1")
    assert "nope-pw" not in str(caught.value)


def test_transient_failures_are_retried(
    scripted: Callable[[Script], tuple[str, list[Seen]]],
) -> None:
    replies = iter(
        [
            Reply(drop=True),
            Reply(status=503),
            Reply(status=429, headers={"Retry-After": "0"}),
            Reply(body=b"{}"),
        ]
    )
    host, seen = scripted(lambda request: next(replies))
    client = RegistryClient(host)

    client.ping()

    assert len(seen) == 4 and client.requests_made == 4


def test_retries_are_bounded_and_report_the_registry_message(
    scripted: Callable[[Script], tuple[str, list[Seen]]],
) -> None:
    host, seen = scripted(lambda request: Reply(status=500, body=error_body("disk\nfull")))

    with pytest.raises(RegistryError, match=r"answered 500 to ping: disk full$"):
        RegistryClient(host, retries=2).ping()
    assert len(seen) == 3


def test_client_errors_are_not_retried(
    scripted: Callable[[Script], tuple[str, list[Seen]]],
) -> None:
    host, seen = scripted(lambda request: Reply(status=400, body=error_body("manifest invalid")))
    manifest = Manifest(digest=sha256(b"{}"), media_type=DOCKER_MANIFEST, raw=b"{}")

    with pytest.raises(RegistryError, match="answered 400 to push manifest r:1: manifest invalid"):
        RegistryClient(host).put_manifest("r", "1", manifest)
    assert len(seen) == 1


@needs_registry
def test_copying_one_image_to_several_tags_reads_its_manifest_once(
    registry: str, client: RegistryClient
) -> None:
    pushed = push_image(registry, "prefect/prefect", "1.0-python3.8")
    counts: list[int] = []
    for tag in ("1.0", "latest", "latest-python3.8"):
        before = client.requests_made
        client.copy_tag("prefect/prefect", pushed, tag)
        counts.append(client.requests_made - before)
    # HEAD target, GET manifest, PUT; then HEAD and PUT only: the manifest is known by digest.
    assert counts == [3, 2, 2]
    assert all(client.digest("prefect/prefect", t) == pushed for t in ("1.0", "latest"))


@needs_registry
def test_put_index_lists_each_platform_with_exact_descriptors(
    registry: str, client: RegistryClient
) -> None:
    amd = push_image(registry, "prefect/prefect", "_stage-amd64", architecture="amd64")
    arm = push_image(registry, "prefect/prefect", "_stage-arm64", architecture="arm64", oci=True)

    index = client.put_index(
        "prefect/prefect", "1.0", [("linux/amd64", amd), ("linux/arm64/v8", arm)]
    )

    assert client.digest("prefect/prefect", "1.0") == index
    stored = client.manifest("prefect/prefect", "1.0")
    assert stored.media_type == OCI_INDEX
    document = json.loads(
        requests.get(
            f"http://{registry}/v2/prefect/prefect/manifests/1.0",
            headers={"Accept": OCI_INDEX},
            timeout=10,
        ).content
    )
    assert document["mediaType"] == OCI_INDEX
    assert [(m["mediaType"], m["digest"], m["platform"]) for m in document["manifests"]] == [
        (DOCKER_MANIFEST, amd, {"architecture": "amd64", "os": "linux"}),
        (OCI_MANIFEST, arm, {"architecture": "arm64", "os": "linux", "variant": "v8"}),
    ]
    for entry in document["manifests"]:
        assert entry["size"] == len(client.manifest("prefect/prefect", entry["digest"]).raw)
    assert client.platform_images("prefect/prefect", "1.0") == {
        "linux/amd64": amd,
        "linux/arm64/v8": arm,
    }
    assert client.platform_images("prefect/prefect", "_stage-amd64") is None


@needs_registry
def test_put_index_refuses_an_index_as_a_platform_image(
    registry: str, client: RegistryClient
) -> None:
    amd = push_image(registry, "prefect/prefect", "a", architecture="amd64")
    index = client.put_index("prefect/prefect", "1.0", [("linux/amd64", amd)])
    with pytest.raises(RegistryError, match="not an image for linux/arm64"):
        client.put_index("prefect/prefect", "2.0", [("linux/arm64", index)])
    assert client.digest("prefect/prefect", "2.0") is None

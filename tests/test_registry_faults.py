"""RegistryClient against a real docker-registry behind a fault-injecting proxy.

Each test spoils chosen requests (429, 500/503, a reset during a manifest PUT, an
answer slower than the client's timeout) and checks the client either recovers with
the registry in the state it asked for, or stops with one line and exit code 4.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fault_proxy import Fault, FaultProxy, Kind
from registry_server import run_registry
from tiny_image import push_blob, push_image, sha256

import publisher.registry_http
from publisher.errors import RegistryError, RegistryUnreachable
from publisher.registry import TIMEOUT_ENV, RegistryClient

pytestmark = pytest.mark.registry
REPO = "prefect/prefect"
MANIFEST_OF = r"/manifests/[^/]+$"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with run_registry(tmp_path / "registry") as host:
        yield host


@pytest.fixture
def proxy(registry: str) -> Iterator[FaultProxy]:
    with FaultProxy(registry) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def pushed(registry: str) -> str:
    """A tiny image tagged 1.0, pushed straight to the registry (not through the proxy)."""
    return push_image(registry, REPO, "1.0", labels={"v": "1.0"})


def one_line(error: BaseException) -> str:
    message = str(error)
    assert message and "\n" not in message
    return message


def test_proxy_forwards_uploads_and_keeps_upload_locations(proxy: FaultProxy) -> None:
    # Location headers name the proxy (the Host header went through), and a chunked
    # body (a generator: no Content-Length) arrives intact.
    digest = push_image(proxy.address, REPO, "direct")
    started = requests.post(f"http://{proxy.address}/v2/{REPO}/blobs/uploads/", timeout=10)
    assert proxy.address in started.headers["Location"]
    done = requests.put(
        f"{started.headers['Location']}&digest={sha256(b'abc' * 1000)}",
        data=(b"abc" * 100 for _ in range(10)),
        timeout=10,
    )
    assert done.status_code == 201, done.text
    with RegistryClient(proxy.address) as client:
        assert client.digest(REPO, "direct") == digest
        assert client.blob_exists(REPO, sha256(b"abc" * 1000))
    assert push_blob(proxy.address, REPO, b"x" * 200_000) == sha256(b"x" * 200_000)


def test_429_is_retried_after_the_time_the_registry_asks(
    registry: str, proxy: FaultProxy, pushed: str
) -> None:
    proxy.inject(
        Fault(
            method="HEAD", path=MANIFEST_OF, kind=Kind.STATUS, status=429, retry_after="1", times=2
        )
    )
    started = time.monotonic()

    with RegistryClient(proxy.address) as client:
        assert client.digest(REPO, "1.0") == pushed
        assert client.requests_made == 3

    assert 2.0 <= time.monotonic() - started < 6
    assert len(proxy.injected()) == 2


def test_retry_after_is_capped(
    registry: str, proxy: FaultProxy, pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(publisher.registry_http, "_MAX_RETRY_AFTER_SECONDS", 0.2)
    proxy.inject(
        Fault(method="HEAD", path=MANIFEST_OF, kind=Kind.STATUS, status=429, retry_after="3600")
    )
    started = time.monotonic()

    with RegistryClient(proxy.address) as client:
        assert client.digest(REPO, "1.0") == pushed

    assert time.monotonic() - started < 3


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_then_succeed(
    proxy: FaultProxy, pushed: str, status: int
) -> None:
    proxy.inject(Fault(method="GET", path=MANIFEST_OF, kind=Kind.STATUS, status=status, times=3))

    with RegistryClient(proxy.address) as client:
        manifest = client.manifest(REPO, "1.0")

    assert manifest.digest == pushed == sha256(manifest.raw)
    assert len(proxy.injected()) == 3


def test_gives_up_after_its_retries_with_one_line(proxy: FaultProxy, pushed: str) -> None:
    proxy.inject(Fault(method="GET", path=MANIFEST_OF, kind=Kind.STATUS, status=503, times=99))

    with RegistryClient(proxy.address, retries=2) as client, pytest.raises(RegistryError) as got:
        client.manifest(REPO, "1.0")

    assert one_line(got.value) == (
        f"registry {proxy.address} answered 503 to read manifest {REPO}:1.0: injected 503"
    )
    assert got.value.exit_code == 4
    assert len(proxy.injected()) == 3


def test_read_timeout_is_one_line_and_not_repeated(
    proxy: FaultProxy, pushed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    proxy.inject(Fault(method="HEAD", path=MANIFEST_OF, kind=Kind.SLOW, delay=3, times=99))
    started = time.monotonic()

    with RegistryClient(proxy.address) as client, pytest.raises(RegistryUnreachable) as got:
        client.digest(REPO, "1.0")

    assert time.monotonic() - started < 2.5
    assert one_line(got.value) == f"cannot reach registry {proxy.address}: timed out after 0.5s"
    assert got.value.exit_code == 4
    # Waiting out a read timeout again would only double the wait.
    assert len(proxy.injected()) == 1


@pytest.mark.parametrize("kind", [Kind.RESET, Kind.FORWARD_RESET])
def test_reset_during_manifest_put_is_retried_to_the_same_digest(
    registry: str, proxy: FaultProxy, pushed: str, kind: Kind
) -> None:
    proxy.inject(Fault(method="PUT", path=r"/manifests/latest$", kind=kind))

    with RegistryClient(proxy.address) as client:
        assert client.copy_tag(REPO, "1.0", "latest") == pushed

    # A manifest PUT of the same bytes is idempotent: retrying it cannot change the digest.
    with RegistryClient(registry) as direct:
        assert direct.digest(REPO, "latest") == pushed
    puts = [seen for seen in proxy.seen if seen.method == "PUT"]
    assert [seen.fault for seen in puts] == [kind, None]


@pytest.mark.parametrize("kind", [Kind.RESET, Kind.FORWARD_RESET])
def test_reset_on_every_manifest_put_fails_with_one_line(
    registry: str, proxy: FaultProxy, pushed: str, kind: Kind
) -> None:
    proxy.inject(Fault(method="PUT", path=r"/manifests/latest$", kind=kind, times=99))

    with RegistryClient(proxy.address, retries=2) as client, pytest.raises(RegistryError) as got:
        client.copy_tag(REPO, "1.0", "latest")

    assert one_line(got.value).startswith(f"cannot reach registry {proxy.address}: ")
    assert got.value.exit_code == 4
    assert len(proxy.injected()) == 3
    with RegistryClient(registry) as direct:
        # Either the registry never saw the PUT or it stored exactly the source.
        assert direct.digest(REPO, "latest") in (None, pushed)


def test_copy_tag_keeps_the_exact_manifest_bytes_through_retries(
    registry: str, proxy: FaultProxy, pushed: str
) -> None:
    proxy.inject(
        Fault(method="HEAD", path=r"/manifests/latest$", kind=Kind.STATUS, status=503),
        Fault(method="GET", path=MANIFEST_OF, kind=Kind.STATUS, status=500),
        Fault(method="PUT", path=r"/manifests/latest$", kind=Kind.FORWARD_RESET),
    )

    with RegistryClient(proxy.address) as client:
        assert client.copy_tag(REPO, "1.0", "latest") == pushed

    assert len(proxy.injected()) == 3
    with RegistryClient(registry) as direct:
        source, copy = direct.manifest(REPO, "1.0"), direct.manifest(REPO, "latest")
    # push_image writes indented JSON: any re-serialisation would change these bytes.
    assert copy.raw == source.raw and copy.digest == pushed
    assert direct.labels(REPO, "latest") == {"v": "1.0"}

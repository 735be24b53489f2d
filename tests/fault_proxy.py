"""A loopback HTTP proxy in front of a real registry that injects faults on request.

Tests point a RegistryClient (or the Docker daemon, or the whole publisher) at the
proxy's ``127.0.0.1:PORT`` and tell it which requests to spoil::

    with FaultProxy(registry) as proxy:
        proxy.inject(Fault(method="PUT", path=r"/manifests/latest$", kind=Kind.RESET))

A fault applies to the ``nth`` request matching its method and path pattern and to the
``times - 1`` matching requests after it; every other request is forwarded unchanged.
The Host header is passed through, so URLs the registry builds (upload Locations) keep
pointing at the proxy. Everything is bounded: a request budget, a cap on delays, and
socket timeouts, so a misbehaving test cannot hang or flood the machine.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import json
import re
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MAX_REQUESTS = 20_000
MAX_DELAY = 60.0
SOCKET_TIMEOUT = 120.0
_COPY_CHUNK = 1 << 16
# Connection-level headers are the proxy's own business on each hop (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
)


class Kind(enum.Enum):
    STATUS = "status"  # answer ``status`` (with Retry-After if given) without forwarding
    RESET = "reset"  # read the request, then reset the connection without forwarding
    FORWARD_RESET = "forward-reset"  # forward (the registry applies it), then reset
    SLOW = "slow"  # forward, then hold the answer back for ``delay`` seconds


@dataclass(frozen=True, kw_only=True)
class Fault:
    method: str
    path: str  # a regular expression searched in the request path (query included)
    kind: Kind
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0
    nth: int = 1
    times: int = 1

    def __post_init__(self) -> None:
        if self.nth < 1 or self.times < 1:
            raise ValueError("nth and times count from 1")
        if not 0 <= self.delay <= MAX_DELAY:
            raise ValueError(f"delay must be within [0, {MAX_DELAY}] seconds")


@dataclass(frozen=True, kw_only=True)
class Seen:
    method: str
    path: str
    fault: Kind | None


class FaultProxy:
    """Forward to ``upstream`` (HOST:PORT, plain HTTP) from a loopback port, injecting faults."""

    def __init__(self, upstream: str, *, port: int = 0) -> None:
        self.upstream = upstream
        self.seen: list[Seen] = []
        self._faults: list[tuple[Fault, re.Pattern[str]]] = []
        self._matched: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()  # wakes SLOW faults still holding an answer
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def inject(self, *faults: Fault) -> None:
        with self._lock:
            for fault in faults:
                self._matched[len(self._faults)] = 0
                self._faults.append((fault, re.compile(fault.path)))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._matched.clear()
            self.seen.clear()

    def injected(self) -> list[Seen]:
        with self._lock:
            return [seen for seen in self.seen if seen.fault is not None]

    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            if len(self.seen) >= MAX_REQUESTS:
                raise RuntimeError(f"fault proxy: more than {MAX_REQUESTS} requests")
            chosen = None
            for index, (fault, pattern) in enumerate(self._faults):
                if fault.method != method or not pattern.search(path):
                    continue
                self._matched[index] += 1
                if chosen is None and fault.nth <= self._matched[index] < fault.nth + fault.times:
                    chosen = fault
            self.seen.append(Seen(method=method, path=path, fault=chosen and chosen.kind))
            return chosen

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = SOCKET_TIMEOUT

            def handle_one(self) -> None:
                try:
                    fault = proxy._decide(self.command, self.path)
                except RuntimeError as exc:
                    self.close_connection = True
                    self.send_error(503, str(exc))
                    return
                if fault is not None and fault.kind in (Kind.STATUS, Kind.RESET):
                    _drain(self)
                    if fault.kind is Kind.RESET:
                        _reset(self)
                    else:
                        _answer_status(self, fault)
                    return
                status, reason, headers, body = _forward(self, proxy.upstream)
                if fault is not None and fault.kind is Kind.FORWARD_RESET:
                    _reset(self)
                    return
                if fault is not None and fault.kind is Kind.SLOW:
                    proxy._stopping.wait(fault.delay)
                with contextlib.suppress(OSError):
                    self.send_response_only(status, reason)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = handle_one

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _body_chunks(handler: BaseHTTPRequestHandler) -> Iterator[bytes]:
    """The request body as raw bytes on the wire (chunked framing kept as it came)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        while True:
            size_line = handler.rfile.readline(1024)
            yield size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers (usually none), then the blank line that ends the body.
                while True:
                    line = handler.rfile.readline(1024)
                    yield line
                    if line in (b"\r\n", b"\n", b""):
                        return
            remaining = size + 2  # the data and its CRLF
            while remaining:
                data = handler.rfile.read(min(remaining, _COPY_CHUNK))
                if not data:
                    raise ConnectionError("request body ended early")
                remaining -= len(data)
                yield data
        return
    remaining = int(handler.headers.get("Content-Length") or 0)
    while remaining:
        data = handler.rfile.read(min(remaining, _COPY_CHUNK))
        if not data:
            raise ConnectionError("request body ended early")
        remaining -= len(data)
        yield data


def _drain(handler: BaseHTTPRequestHandler) -> None:
    for _ in _body_chunks(handler):
        pass


def _forward(
    handler: BaseHTTPRequestHandler, upstream: str
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    connection = http.client.HTTPConnection(upstream, timeout=SOCKET_TIMEOUT)
    try:
        connection.putrequest(
            handler.command, handler.path, skip_host=True, skip_accept_encoding=True
        )
        for name, value in handler.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                connection.putheader(name, value)
        connection.endheaders()
        for data in _body_chunks(handler):
            connection.send(data)
        response = connection.getresponse()
        body = response.read()
        headers = [
            (name, value)
            for name, value in response.getheaders()
            if name.lower() not in _HOP_BY_HOP
            and name.lower() not in ("content-length", "transfer-encoding")
        ]
        # A HEAD answer carries the length of the body it does not send.
        length = response.getheader("Content-Length") if handler.command == "HEAD" else None
        headers.append(("Content-Length", length or str(len(body))))
        return response.status, response.reason, headers, body
    finally:
        connection.close()


def _answer_status(handler: BaseHTTPRequestHandler, fault: Fault) -> None:
    body = json.dumps(
        {"errors": [{"code": "UNAVAILABLE", "message": f"injected {fault.status}"}]}
    ).encode()
    handler.send_response_only(fault.status)
    if fault.retry_after is not None:
        handler.send_header("Retry-After", fault.retry_after)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


def _reset(handler: BaseHTTPRequestHandler) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed server or a middlebox would."""
    handler.close_connection = True
    with contextlib.suppress(OSError):
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()

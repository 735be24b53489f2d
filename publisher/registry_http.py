"""Sending one request to a registry: retried on 429/5xx and dropped connections, counted.

Every failure to reach the registry becomes RegistryUnreachable with the part of the
error a user can act on; every other answer is handed back for the caller to judge.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests
import urllib3.exceptions

from publisher.errors import RegistryError, RegistryUnreachable

_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_BACKOFF_SECONDS = 0.25
_MAX_RETRY_AFTER_SECONDS = 10.0
_ERRNO_TEXT = re.compile(r"\[(?:Errno -?\d+|SSL: \w+)\] [^'\"()\]]+")


@dataclass(frozen=True, kw_only=True)
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | None = None
    params: list[tuple[str, str]] | None = None
    auth: tuple[str, str] | None = field(default=None, repr=False)


class Transport:
    """One session to one registry; counts requests and body bytes sent."""

    def __init__(self, host: str, *, timeout: float, retries: int) -> None:
        self.host = host
        self.timeout = timeout
        self.retries = retries
        self.requests_made = 0
        self.bytes_sent = 0
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def send(self, request: Request, *, target: str | None = None) -> requests.Response:
        """One request, retried on 429/5xx and on dropped connections.

        Every request is safe to repeat: reads, and manifest PUTs of exact bytes (the same
        bytes give the same digest). urllib3's Retry could do this only with overrides
        (to spare read timeouts, to cap Retry-After), would not retry a body cut short
        after the headers, and would hide the attempts from the request counts.
        """
        for attempt in range(self.retries + 1):
            self.requests_made += 1
            self.bytes_sent += len(request.data or b"")
            try:
                response = self._session.request(
                    request.method,
                    request.url,
                    headers=request.headers,
                    data=request.data,
                    params=request.params,
                    auth=request.auth,
                    timeout=self.timeout,
                    allow_redirects=True,
                )
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as exc:
                # A read timeout already cost `timeout` seconds; repeating it would
                # multiply the wait, so only broken connections are retried.
                retryable = not _never_connected(exc) and not isinstance(exc, requests.Timeout)
                if retryable and attempt < self.retries:
                    time.sleep(_BACKOFF_SECONDS * 2**attempt)
                    continue
                reason = _connection_failure(exc, self.timeout)
                where = target or f"registry {self.host}"
                raise RegistryUnreachable(f"cannot reach {where}: {reason}") from exc
            # Redirects (blob storage) are followed inside requests; count them too.
            self.requests_made += len(response.history)
            if response.status_code not in _TRANSIENT_STATUSES or attempt == self.retries:
                return response
            time.sleep(_retry_delay(response, attempt))
        raise AssertionError("unreachable: the loop returns or raises")


def one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def error_message(response: requests.Response) -> str:
    try:
        body = response.json()
        message = body["errors"][0]["message"]
    except (ValueError, LookupError, TypeError):
        return response.reason or "no error message"
    return str(message)


def json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise RegistryError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return document


def _connection_failure(exc: requests.RequestException, timeout: float) -> str:
    # requests wraps urllib3 which wraps the OSError; its "[Errno N] text" is
    # the part a user can act on, the rest is pool and URL noise.
    if isinstance(exc, requests.Timeout):
        return f"timed out after {timeout:g}s"
    found = _ERRNO_TEXT.search(str(exc))
    reason = found.group(0).strip() if found else one_line(f"{type(exc).__name__}: {exc}", 200)
    if isinstance(exc, requests.exceptions.SSLError):
        # The usual cause is an HTTPS request to a plain-HTTP registry.
        reason += " (TLS failed: if the registry speaks plain HTTP, mark it insecure)"
    return reason


def _never_connected(exc: requests.RequestException) -> bool:
    # Refused, unresolvable or TLS-failing hosts will not heal within a short
    # back-off, so retrying them only delays the error the user needs to see.
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    inner = exc.args[0] if exc.args else None
    return isinstance(getattr(inner, "reason", None), urllib3.exceptions.NewConnectionError)


def _retry_delay(response: requests.Response, attempt: int) -> float:
    retry_after = response.headers.get("Retry-After", "")
    if retry_after.isdigit():
        return min(float(retry_after), _MAX_RETRY_AFTER_SECONDS)
    return float(_BACKOFF_SECONDS * 2**attempt)

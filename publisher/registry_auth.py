"""Answering a registry's 401 challenge: Basic credentials, or a Bearer token per scope.

Tokens come from the token service the challenge names, for exactly the scope it asks
for, and are kept per scope for the later requests of the same client.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from publisher.errors import RegistryAuthError, RegistryError
from publisher.registry_http import Request, Transport, error_message, json_object, one_line

_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^,\s]+))')


@dataclass(frozen=True, kw_only=True)
class Credentials:
    username: str
    password: str = field(repr=False)


class Auth:
    """What a client sends to be let in, learnt from the challenges it was answered with."""

    def __init__(self, transport: Transport, credentials: Credentials | None) -> None:
        self._transport = transport
        self.credentials = credentials
        self._basic = False
        self._tokens: dict[str, str] = {}

    def header(self, scope: str) -> dict[str, str]:
        token = self._tokens.get(scope)
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.credentials is not None:
            pair = f"{self.credentials.username}:{self.credentials.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode()}
        return {}

    def authenticate(self, response: requests.Response, scope: str, operation: str) -> None:
        challenge = response.headers.get("WWW-Authenticate", "")
        scheme, _, rest = challenge.strip().partition(" ")
        if scheme.lower() == "basic":
            if self.credentials is None or self._basic:
                raise self.error(401, operation, error_message(response))
            # Registries with Basic auth want it on every request: send it up front from now on.
            self._basic = True
            return
        if scheme.lower() != "bearer":
            raise self.error(401, operation, f"unsupported challenge {scheme or 'none'!r}")
        params: dict[str, list[str]] = {}
        for key, quoted, bare in _AUTH_PARAM.findall(rest):
            params.setdefault(key.lower(), []).append(quoted or bare)
        realm = (params.get("realm") or [""])[0]
        if not realm:
            raise self.error(401, operation, "Bearer challenge without a realm")
        # The registry names the scope it wants (e.g. pull,push on a PUT); ask for exactly that.
        query = [("service", service) for service in params.get("service", [])]
        query += [("scope", wanted) for wanted in params.get("scope", [scope] if scope else [])]
        auth = None
        if self.credentials is not None:
            auth = (self.credentials.username, self.credentials.password)
        realm_host = urlsplit(realm).netloc or realm
        token_response = self._transport.send(
            Request(method="GET", url=realm, params=query, auth=auth),
            target=f"token service {realm_host}",
        )
        if token_response.status_code in (401, 403):
            raise self.error(
                token_response.status_code, operation, f"token service {realm_host} refused"
            )
        if token_response.status_code != 200:
            raise RegistryError(
                f"token service {realm_host} for registry {self._transport.host} answered "
                f"{token_response.status_code} to {operation}"
            )
        body = json_object(token_response.content, f"token from {realm_host}")
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service {realm_host} returned no token for {operation}")
        self._tokens[scope] = token

    def error(self, status: int, operation: str, detail: str) -> RegistryAuthError:
        who = f"user {self.credentials.username!r}" if self.credentials else "anonymous access"
        return RegistryAuthError(
            f"registry {self._transport.host} refused {who} ({status}) for {operation}: "
            + self.redact(one_line(detail))
        )

    def redact(self, text: str) -> str:
        # Registry messages are not ours; make sure none can echo the password back.
        if self.credentials is not None and self.credentials.password:
            return text.replace(self.credentials.password, "***")
        return text

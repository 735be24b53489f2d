"""Reading the progress of a BuildKit build run through the Engine API.

A build posted with ``version=2`` runs on the daemon's BuildKit. Its progress does not come
as text lines, as the classic builder's does, but as ``moby.buildkit.trace`` messages: each
a base64 protobuf ``StatusResponse`` (moby/buildkit's control.proto) of vertices (the
build's steps) and their logs. Only the fields that make progress lines are read here, with
a protobuf wire reader of a few lines: the SDK has no decoder and a protobuf runtime would
be a dependency for three strings.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field

# Field numbers of control.proto's messages.
_RESPONSE_VERTEX, _RESPONSE_LOG = 1, 3
_VERTEX_DIGEST, _VERTEX_NAME, _VERTEX_CACHED, _VERTEX_STARTED, _VERTEX_ERROR = 1, 3, 4, 5, 7
_LOG_VERTEX, _LOG_MESSAGE = 1, 4


class MalformedTrace(ValueError):
    """A trace message that is not the protobuf it should be."""


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: varints as ints, length-delimited
    values as bytes; fixed-width values are skipped."""
    position = 0

    def varint() -> int:
        nonlocal position
        result = shift = 0
        while True:
            if position >= len(data) or shift > 63:
                raise MalformedTrace("truncated varint")
            byte = data[position]
            position += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while position < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, varint()
        elif wire == 2:
            size = varint()
            if position + size > len(data):
                raise MalformedTrace("truncated field")
            yield number, data[position : position + size]
            position += size
        elif wire in (1, 5):
            position += 8 if wire == 1 else 4
        else:
            raise MalformedTrace(f"wire type {wire}")


def _text(value: int | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


@dataclass
class Progress:
    """Turns a build's trace messages into progress lines: each step once when it starts
    (``CACHED`` when the cache answered it), its output, and its error.

    ``tail`` keeps the last lines of output, to explain a failed build.
    """

    _announced: set[str] = field(default_factory=set)
    _failed: set[str] = field(default_factory=set)
    _names: dict[str, str] = field(default_factory=dict)
    tail: list[str] = field(default_factory=list)

    def lines(self, trace: str) -> list[str]:
        """Progress lines of one ``moby.buildkit.trace`` message (base64 protobuf)."""
        try:
            message = base64.b64decode(trace, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedTrace(f"not base64: {exc}") from None
        found: list[str] = []
        for number, value in _fields(message):
            if number == _RESPONSE_VERTEX and isinstance(value, bytes):
                found += self._vertex(value)
            elif number == _RESPONSE_LOG and isinstance(value, bytes):
                found += self._log(value)
        return found

    def _vertex(self, data: bytes) -> list[str]:
        digest = name = error = ""
        cached = started = False
        for number, value in _fields(data):
            if number == _VERTEX_DIGEST:
                digest = _text(value)
            elif number == _VERTEX_NAME:
                name = _text(value)
            elif number == _VERTEX_CACHED:
                cached = bool(value)
            elif number == _VERTEX_STARTED:
                started = True
            elif number == _VERTEX_ERROR:
                error = _text(value)
        self._names[digest] = name
        found = []
        if (started or cached) and digest not in self._announced:
            self._announced.add(digest)
            found.append(f"{'CACHED ' if cached else ''}{name}")
        if error and digest not in self._failed:
            self._failed.add(digest)
            found.append(f"ERROR {name}: {error}")
        return found

    def _log(self, data: bytes) -> list[str]:
        vertex, text = "", ""
        for number, value in _fields(data):
            if number == _LOG_VERTEX:
                vertex = _text(value)
            elif number == _LOG_MESSAGE:
                text = _text(value)
        step = self._names.get(vertex, "")
        prefix = step.split(" ", 1)[0] + " " if step.startswith("[") else ""
        found = [f"{prefix}{line.rstrip()}" for line in text.splitlines() if line.strip()]
        self.tail = [*self.tail, *found][-3:]
        return found

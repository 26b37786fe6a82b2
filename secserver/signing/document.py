"""The signed document: the small canonical text a message signature covers. Pure.

Grammar (docs/protocol.md, "Signed document"): UTF-8, one ``name: value`` line per field,
each ending in a single LF, fields in this fixed order::

    secserver-signed-document: 1
    message-id: <X-Road-Id>
    direction: request | response
    client: <INSTANCE/CLASS/MEMBER[/SUBSYSTEM]>
    service: <INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE[/VERSION]>
    method: <HTTP method, upper case>
    path: <path and query exactly as sent, may be empty>
    header: <lower-case name>: <value>          zero or more, sorted by (name, value)
    request-hash: <base64 SHA-512>              responses only
    status: <HTTP status, 3 digits>             responses only
    body-sha512: <base64 SHA-512 of the body>
    signing-time: <YYYY-MM-DDTHH:MM:SS.ffffffZ>

No value may contain a control character (CR, LF, TAB, NUL, ...); header values are
stripped of surrounding spaces. ``to_bytes`` and ``from_bytes`` are exact inverses and
``from_bytes`` rejects anything ``to_bytes`` would not produce.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from secserver.errors import InvalidIdentifier, SecServerError
from secserver.identifiers import ClientId, ServiceId

VERSION = 1
Direction = Literal["request", "response"]

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Z]+")
_B64_SHA512 = re.compile(r"[A-Za-z0-9+/]{86}==")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_MESSAGE_ID = 256


class InvalidSignedDocument(SecServerError):
    """A signed document cannot be built or parsed: a field breaks the grammar."""

    code = "InvalidSignedDocument"
    http_status = 400


def _check_text(value: str, field: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidSignedDocument(f"signed document field {field} must be text")
    if not value and not allow_empty:
        raise InvalidSignedDocument(f"signed document field {field} is empty")
    for char in value:
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or char in "\u2028\u2029":
            raise InvalidSignedDocument(
                f"signed document field {field} contains the control character U+{code:04X}")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise InvalidSignedDocument("signing time must be timezone-aware (UTC)")
    return value.astimezone(UTC).strftime(_TIME_FORMAT)


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Lower-case names, strip values, sort by (name, value)."""
    out = []
    for name, value in headers:
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidSignedDocument("header names and values must be text")
        lowered = name.lower()
        if not _TOKEN.fullmatch(lowered):
            raise InvalidSignedDocument(f"header name {name!r} is not an HTTP token")
        stripped = value.strip(" \t")
        _check_text(stripped, f"header {lowered}", allow_empty=True)
        out.append((lowered, stripped))
    return tuple(sorted(out))


@dataclass(frozen=True)
class SignedDocument:
    """What one side signs for one request or response (see the module docstring).

    ``headers`` are normalised on construction (lower-cased names, stripped values,
    sorted); ``signing_time`` is converted to UTC.
    """

    version: int
    message_id: str
    direction: Direction
    client: ClientId
    service: ServiceId
    method: str
    path_and_query: str
    headers: tuple[tuple[str, str], ...]
    request_hash: str | None
    status: int | None
    body_digest: str
    signing_time: datetime

    def __post_init__(self) -> None:
        if self.version != VERSION:
            raise InvalidSignedDocument(f"signed document version {self.version} is not "
                                        f"supported; this server speaks version {VERSION}")
        _check_text(self.message_id, "message-id")
        if len(self.message_id) > MAX_MESSAGE_ID:
            raise InvalidSignedDocument(f"message id is longer than {MAX_MESSAGE_ID} characters")
        if self.direction not in ("request", "response"):
            raise InvalidSignedDocument(f"direction {self.direction!r} is not request or "
                                        "response")
        if not isinstance(self.client, ClientId) or not isinstance(self.service, ServiceId):
            raise InvalidSignedDocument("client and service must be ClientId and ServiceId")
        if not isinstance(self.method, str) or not _METHOD.fullmatch(self.method):
            raise InvalidSignedDocument(f"HTTP method {self.method!r} is not an upper-case "
                                        "token")
        _check_text(self.path_and_query, "path", allow_empty=True)
        object.__setattr__(self, "headers", canonical_headers(self.headers))
        if self.direction == "response":
            if self.request_hash is None or not _B64_SHA512.fullmatch(self.request_hash):
                raise InvalidSignedDocument("a response document needs the request hash "
                                            "(base64 SHA-512)")
            if not isinstance(self.status, int) or isinstance(self.status, bool) \
                    or not 100 <= self.status <= 999:
                raise InvalidSignedDocument(f"response status {self.status!r} is not a "
                                            "three-digit HTTP status")
        elif self.request_hash is not None or self.status is not None:
            raise InvalidSignedDocument("a request document has no request hash or status")
        if not isinstance(self.body_digest, str) or not _B64_SHA512.fullmatch(self.body_digest):
            raise InvalidSignedDocument("body digest must be a base64 SHA-512 (88 characters)")
        if not isinstance(self.signing_time, datetime) or self.signing_time.tzinfo is None:
            raise InvalidSignedDocument("signing time must be a timezone-aware datetime")
        object.__setattr__(self, "signing_time", self.signing_time.astimezone(UTC))

    def to_bytes(self) -> bytes:
        lines = [
            f"secserver-signed-document: {self.version}",
            f"message-id: {self.message_id}",
            f"direction: {self.direction}",
            f"client: {self.client}",
            f"service: {self.service}",
            f"method: {self.method}",
            f"path: {self.path_and_query}",
        ]
        lines.extend(f"header: {name}: {value}" for name, value in self.headers)
        if self.direction == "response":
            lines.append(f"request-hash: {self.request_hash}")
            lines.append(f"status: {self.status}")
        lines.append(f"body-sha512: {self.body_digest}")
        lines.append(f"signing-time: {format_time(self.signing_time)}")
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDocument:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidSignedDocument("signed document is not UTF-8") from exc
        if not text.endswith("\n"):
            raise InvalidSignedDocument("signed document does not end with a line feed")
        lines = text[:-1].split("\n")
        pos = 0

        def take(name: str, *, optional: bool = False) -> str | None:
            nonlocal pos
            prefix = f"{name}: "
            if pos < len(lines) and lines[pos].startswith(prefix):
                pos += 1
                return lines[pos - 1][len(prefix):]
            if optional:
                return None
            found = lines[pos].split(":")[0] if pos < len(lines) else "the end"
            raise InvalidSignedDocument(f"signed document line {pos + 1}: expected '{name}', "
                                        f"found {found!r}")

        version_text = take("secserver-signed-document")
        if version_text != str(VERSION):
            raise InvalidSignedDocument(f"signed document version {version_text!r} is not "
                                        f"supported; this server speaks version {VERSION}")
        message_id = take("message-id")
        direction = take("direction")
        client_text, service_text = take("client"), take("service")
        method, path = take("method"), take("path")
        headers: list[tuple[str, str]] = []
        while (header := take("header", optional=True)) is not None:
            name, sep, value = header.partition(": ")
            if not sep:
                raise InvalidSignedDocument(f"signed document line {pos}: header without ': '")
            headers.append((name, value))
        request_hash = status_text = None
        if direction == "response":
            request_hash = take("request-hash")
            status_text = take("status")
        body_digest = take("body-sha512")
        time_text = take("signing-time")
        if pos != len(lines):
            raise InvalidSignedDocument(f"signed document line {pos + 1}: unexpected "
                                        f"{lines[pos].split(':')[0]!r} after signing-time")
        assert message_id is not None and direction is not None and method is not None
        assert client_text is not None and service_text is not None and path is not None
        assert body_digest is not None and time_text is not None
        if direction not in ("request", "response"):
            raise InvalidSignedDocument(f"direction {direction!r} is not request or response")
        if status_text is not None and not re.fullmatch(r"[1-9]\d\d", status_text):
            raise InvalidSignedDocument(f"status {status_text!r} is not a three-digit number")
        if not _TIME.fullmatch(time_text):
            raise InvalidSignedDocument(f"signing time {time_text!r} is not "
                                        "YYYY-MM-DDTHH:MM:SS.ffffffZ")
        try:
            signing_time = datetime.strptime(time_text, _TIME_FORMAT).replace(tzinfo=UTC)
            client = ClientId.parse(client_text)
            service = ServiceId.parse(service_text)
        except InvalidIdentifier as exc:
            raise InvalidSignedDocument(f"signed document: {exc.message}") from exc
        except ValueError as exc:
            raise InvalidSignedDocument(f"signing time {time_text!r} is invalid") from exc
        document = cls(
            version=VERSION, message_id=message_id,
            direction="request" if direction == "request" else "response",
            client=client, service=service, method=method, path_and_query=path,
            headers=tuple(headers), request_hash=request_hash,
            status=int(status_text) if status_text is not None else None,
            body_digest=body_digest, signing_time=signing_time)
        if document.to_bytes() != data:
            raise InvalidSignedDocument("signed document is not in canonical form (header "
                                        "order, case or spacing, or identifier form)")
        return document

    @property
    def request_hash_value(self) -> str:
        """The X-Road-Request-Hash a response to this (request) document must carry."""
        return request_hash(self.to_bytes())


class BodyDigest:
    """SHA-512 of a body fed in chunks while it streams; ``finish`` gives the base64 text."""

    __slots__ = ("_hash", "size")

    def __init__(self) -> None:
        self._hash = hashlib.sha512()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        return _b64(self._hash.digest())


def body_digest(body: bytes) -> str:
    """The ``body-sha512`` value of a whole body."""
    return _b64(hashlib.sha512(body).digest())


EMPTY_BODY_DIGEST = body_digest(b"")


def request_hash(document_bytes: bytes) -> str:
    """``X-Road-Request-Hash``: base64 SHA-512 of the request's signed-document bytes."""
    return _b64(hashlib.sha512(document_bytes).digest())

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
_TIME_ASCII = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z")
_STATUS = re.compile(r"[1-9]\d\d")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# the characters ``_check_text`` refuses: C0 controls, DEL, C1 controls, U+2028, U+2029
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_MESSAGE_ID = 256
# the field lines before the headers, in order (``from_bytes`` fast path)
_HEAD_PREFIXES = ("secserver-signed-document: ", "message-id: ", "direction: ", "client: ",
                  "service: ", "method: ", "path: ")


class InvalidSignedDocument(SecServerError):
    """A signed document cannot be built or parsed: a field breaks the grammar."""

    code = "InvalidSignedDocument"
    http_status = 400


def _check_text(value: str, field: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, str):
        raise InvalidSignedDocument(f"signed document field {field} must be text")
    if not value and not allow_empty:
        raise InvalidSignedDocument(f"signed document field {field} is empty")
    found = _CONTROL.search(value)
    if found is not None:
        code = ord(found.group())
        raise InvalidSignedDocument(
            f"signed document field {field} contains the control character U+{code:04X}")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def format_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise InvalidSignedDocument("signing time must be timezone-aware (UTC)")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year >= 1000:  # ISO form = strftime's form ("+00:00" for the "Z")
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    return value.strftime(_TIME_FORMAT)  # %Y does not pad years below 1000


def _parse_time(text: str) -> datetime:
    """``signing-time`` text (already matched by ``_TIME``) to an aware UTC datetime;
    ``ValueError`` when it names no valid instant."""
    if _TIME_ASCII.fullmatch(text):  # same fields and checks as strptime, ~40x faster
        return datetime.fromisoformat(text)
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


# Header pairs found valid before, with their canonical form: the same few headers come
# with every message. Bounded: emptied when full.
_CANONICAL_PAIRS: dict[tuple[str, str], tuple[str, str]] = {}
_CANONICAL_PAIRS_MAX = 2048


def _canonical_pair(name: str, value: str) -> tuple[str, str]:
    if not isinstance(name, str) or not isinstance(value, str):
        raise InvalidSignedDocument("header names and values must be text")
    lowered = name.lower()
    if not _TOKEN.fullmatch(lowered):
        raise InvalidSignedDocument(f"header name {name!r} is not an HTTP token")
    stripped = value.strip(" \t")
    _check_text(stripped, f"header {lowered}", allow_empty=True)
    if len(_CANONICAL_PAIRS) >= _CANONICAL_PAIRS_MAX:
        _CANONICAL_PAIRS.clear()
    pair = (lowered, stripped)
    # only short pairs of exact str (memory stays small whatever the callers send)
    if type(name) is str and type(value) is str and len(name) + len(value) <= 256:
        _CANONICAL_PAIRS[(name, value)] = pair
    return pair


def canonical_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Lower-case names, strip values, sort by (name, value)."""
    out = []
    known = _CANONICAL_PAIRS
    for header in headers:
        try:
            pair = known.get(header) if type(header) is tuple else None
        except TypeError:  # unhashable parts: not text, refused below
            pair = None
        if pair is None:
            name, value = header
            pair = _canonical_pair(name, value)
        out.append(pair)
    out.sort()
    return tuple(out)


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
        # the fields never change after construction: the bytes are built once
        cached: bytes | None = self.__dict__.get("_bytes")
        if cached is not None:
            return cached
        data = self._render(format_time(self.signing_time))
        object.__setattr__(self, "_bytes", data)
        return data

    def _render(self, signing_time: str) -> bytes:
        """The document's bytes with ``signing_time`` (``format_time`` of the field)."""
        text = (f"secserver-signed-document: {self.version}\n"
                f"message-id: {self.message_id}\n"
                f"direction: {self.direction}\n"
                f"client: {self.client}\n"
                f"service: {self.service}\n"
                f"method: {self.method}\n"
                f"path: {self.path_and_query}\n")
        if self.headers:
            text += "".join([f"header: {name}: {value}\n" for name, value in self.headers])
        if self.direction == "response":
            text += f"request-hash: {self.request_hash}\nstatus: {self.status}\n"
        text += (f"body-sha512: {self.body_digest}\n"
                 f"signing-time: {signing_time}\n")
        return text.encode("utf-8")

    @staticmethod
    def _fields_fast(lines: list[str]) -> tuple[list[str], list[tuple[str, str]],
                                                str | None, str | None] | None:
        """The field values of a well-formed document's lines (``from_bytes``'s result for
        them), or ``None`` when anything is out of place (the general parse then names
        it)."""
        count = len(lines)
        if count < 9:
            return None
        values = []
        for pos, prefix in enumerate(_HEAD_PREFIXES):
            line = lines[pos]
            if not line.startswith(prefix):
                return None
            values.append(line[len(prefix):])
        pos = 7
        headers: list[tuple[str, str]] = []
        while pos < count and lines[pos].startswith("header: "):
            name, sep, value = lines[pos][8:].partition(": ")
            if not sep:
                return None
            headers.append((name, value))
            pos += 1
        request_hash = status_text = None
        if values[2] == "response":
            if pos + 2 > count or not lines[pos].startswith("request-hash: ") \
                    or not lines[pos + 1].startswith("status: "):
                return None
            request_hash, status_text = lines[pos][14:], lines[pos + 1][8:]
            pos += 2
        if pos + 2 != count or not lines[pos].startswith("body-sha512: ") \
                or not lines[pos + 1].startswith("signing-time: "):
            return None
        values.append(lines[pos][13:])
        values.append(lines[pos + 1][14:])
        return values, headers, request_hash, status_text

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDocument:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidSignedDocument("signed document is not UTF-8") from exc
        if not text.endswith("\n"):
            raise InvalidSignedDocument("signed document does not end with a line feed")
        lines = text[:-1].split("\n")
        fast = cls._fields_fast(lines)
        if fast is not None:
            values, headers, request_hash, status_text = fast
            (version_text, message_id, direction, client_text, service_text, method,
             path, body_digest, time_text) = values
            if version_text != str(VERSION):
                raise InvalidSignedDocument(f"signed document version {version_text!r} is "
                                            f"not supported; this server speaks version "
                                            f"{VERSION}")
            return cls._from_fields(data, message_id, direction, client_text, service_text,
                                    method, path, headers, request_hash, status_text,
                                    body_digest, time_text)
        return cls._from_lines(data, lines)

    @classmethod
    def _from_lines(cls, data: bytes, lines: list[str]) -> SignedDocument:
        """The general parse: what ``from_bytes`` does, naming the first line out of
        place."""
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
        return cls._from_fields(data, message_id, direction, client_text, service_text,
                                method, path, headers, request_hash, status_text,
                                body_digest, time_text)

    @classmethod
    def _from_fields(cls, data: bytes, message_id: str, direction: str, client_text: str,
                     service_text: str, method: str, path: str,
                     headers: list[tuple[str, str]], request_hash: str | None,
                     status_text: str | None, body_digest: str,
                     time_text: str) -> SignedDocument:
        if direction not in ("request", "response"):
            raise InvalidSignedDocument(f"direction {direction!r} is not request or response")
        if status_text is not None and not _STATUS.fullmatch(status_text):
            raise InvalidSignedDocument(f"status {status_text!r} is not a three-digit number")
        if not _TIME.fullmatch(time_text):
            raise InvalidSignedDocument(f"signing time {time_text!r} is not "
                                        "YYYY-MM-DDTHH:MM:SS.ffffffZ")
        try:
            signing_time = _parse_time(time_text)
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
        if _TIME_ASCII.fullmatch(time_text) and time_text[0] != "0":
            # ASCII digits and a year from 1000 on: format_time(signing_time) gives back
            # exactly time_text (fromisoformat read every field at a fixed width)
            built = document._render(time_text)
        else:
            built = document.to_bytes()
        if built != data:
            raise InvalidSignedDocument("signed document is not in canonical form (header "
                                        "order, case or spacing, or identifier form)")
        object.__setattr__(document, "_bytes", built)
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

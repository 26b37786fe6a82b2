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

import binascii
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
# a document's lines in order (``from_bytes`` fast path): the values, the header lines
# as one block, request hash and status (responses)
_FIELD_LINES = re.compile(
    "secserver-signed-document: ([^\n]*)\nmessage-id: ([^\n]*)\ndirection: ([^\n]*)\n"
    "client: ([^\n]*)\nservice: ([^\n]*)\nmethod: ([^\n]*)\npath: ([^\n]*)\n"
    "((?:header: [^\n]*\n)*)"
    "(?:request-hash: ([^\n]*)\nstatus: ([^\n]*)\n)?"
    "body-sha512: ([^\n]*)\nsigning-time: ([^\n]*)\n")


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
    return binascii.b2a_base64(digest, newline=False).decode("ascii")  # = b64encode


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


@dataclass(frozen=True, init=False)
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

    def __init__(self, version: int, message_id: str, direction: Direction,
                 client: ClientId, service: ServiceId, method: str, path_and_query: str,
                 headers: tuple[tuple[str, str], ...], request_hash: str | None,
                 status: int | None, body_digest: str, signing_time: datetime) -> None:
        # the dataclass's own __init__ with its checks; the fields are set in one go
        # (a frozen dataclass's generated __init__ sets each through object.__setattr__)
        if version != VERSION:
            raise InvalidSignedDocument(f"signed document version {version} is not "
                                        f"supported; this server speaks version {VERSION}")
        _check_text(message_id, "message-id")
        if len(message_id) > MAX_MESSAGE_ID:
            raise InvalidSignedDocument(f"message id is longer than {MAX_MESSAGE_ID} characters")
        if direction not in ("request", "response"):
            raise InvalidSignedDocument(f"direction {direction!r} is not request or "
                                        "response")
        if not isinstance(client, ClientId) or not isinstance(service, ServiceId):
            raise InvalidSignedDocument("client and service must be ClientId and ServiceId")
        if not isinstance(method, str) or not _METHOD.fullmatch(method):
            raise InvalidSignedDocument(f"HTTP method {method!r} is not an upper-case "
                                        "token")
        _check_text(path_and_query, "path", allow_empty=True)
        headers = canonical_headers(headers)
        if direction == "response":
            if request_hash is None or not _B64_SHA512.fullmatch(request_hash):
                raise InvalidSignedDocument("a response document needs the request hash "
                                            "(base64 SHA-512)")
            if not isinstance(status, int) or isinstance(status, bool) \
                    or not 100 <= status <= 999:
                raise InvalidSignedDocument(f"response status {status!r} is not a "
                                            "three-digit HTTP status")
        elif request_hash is not None or status is not None:
            raise InvalidSignedDocument("a request document has no request hash or status")
        if not isinstance(body_digest, str) or not _B64_SHA512.fullmatch(body_digest):
            raise InvalidSignedDocument("body digest must be a base64 SHA-512 (88 characters)")
        if not isinstance(signing_time, datetime) or signing_time.tzinfo is None:
            raise InvalidSignedDocument("signing time must be a timezone-aware datetime")
        if signing_time.tzinfo is not UTC:
            signing_time = signing_time.astimezone(UTC)
        self.__dict__.update(
            version=version, message_id=message_id, direction=direction, client=client,
            service=service, method=method, path_and_query=path_and_query, headers=headers,
            request_hash=request_hash, status=status, body_digest=body_digest,
            signing_time=signing_time)

    def to_bytes(self) -> bytes:
        # the fields never change after construction: the bytes are built once
        cached: bytes | None = self.__dict__.get("_bytes")
        if cached is not None:
            return cached
        data = self._render(format_time(self.signing_time))
        self.__dict__["_bytes"] = data
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
    def _fields_fast(text: str) -> tuple[list[str], list[tuple[str, str]],
                                         str | None, str | None] | None:
        """The field values of a well-formed document's text (``from_bytes``'s result for
        it), or ``None`` when anything is out of place (the general parse then names it).

        One regular expression reads the lines in their fixed order (each field's prefix
        says what the line is, so there is one way to match)."""
        found = _FIELD_LINES.fullmatch(text)
        if found is None:
            return None
        (version, message_id, direction, client, service, method, path, block, request_hash,
         status_text, body_digest, time_text) = found.groups()
        if (request_hash is not None) != (direction == "response"):
            return None
        headers: list[tuple[str, str]] = []
        if block:
            for line in block[:-1].split("\n"):
                name, sep, value = line[8:].partition(": ")
                if not sep:
                    return None
                headers.append((name, value))
        return ([version, message_id, direction, client, service, method, path, body_digest,
                 time_text], headers, request_hash, status_text)

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedDocument:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidSignedDocument("signed document is not UTF-8") from exc
        if not text.endswith("\n"):
            raise InvalidSignedDocument("signed document does not end with a line feed")
        fast = cls._fields_fast(text)
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
        return cls._from_lines(data, text[:-1].split("\n"))

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
        ascii_time = _TIME_ASCII.fullmatch(time_text) is not None  # implies _TIME's match
        if not ascii_time and not _TIME.fullmatch(time_text):
            raise InvalidSignedDocument(f"signing time {time_text!r} is not "
                                        "YYYY-MM-DDTHH:MM:SS.ffffffZ")
        try:
            # fromisoformat: what _parse_time does for ASCII digits
            signing_time = datetime.fromisoformat(time_text) if ascii_time \
                else _parse_time(time_text)
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
        if ascii_time and time_text[0] != "0":
            # ASCII digits and a year from 1000 on: format_time(signing_time) gives back
            # exactly time_text (fromisoformat read every field at a fixed width)
            built = document._render(time_text)
        else:
            built = document.to_bytes()
        if built != data:
            raise InvalidSignedDocument("signed document is not in canonical form (header "
                                        "order, case or spacing, or identifier form)")
        document.__dict__["_bytes"] = built
        return document

    @property
    def request_hash_value(self) -> str:
        """The X-Road-Request-Hash a response to this (request) document must carry
        (computed once per document)."""
        cached: str | None = self.__dict__.get("_request_hash")
        if cached is None:
            cached = request_hash(self.to_bytes())
            self.__dict__["_request_hash"] = cached
        return cached


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

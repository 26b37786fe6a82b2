"""The signed document: golden vectors from docs/protocol.md, round trips, rejections."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secserver.identifiers import ClientId, ServiceId
from secserver.signing.document import (
    EMPTY_BODY_DIGEST,
    BodyDigest,
    InvalidSignedDocument,
    SignedDocument,
    body_digest,
    canonical_headers,
    request_hash,
)

ASSETS = Path(__file__).parents[2] / "assets" / "signing"
CLIENT = ClientId.parse("JP-DEV/GOV/TOYONO/ELDERCARE")
SERVICE = ServiceId.parse("JP-DEV/COM/OTTA/TAGS/location/v1")
PATH = "/tags/42/position?since=2026-01-01T00%3A00%3A00Z"


def golden_request() -> SignedDocument:
    return SignedDocument(
        version=1, message_id="4f1c2d3e-0000-4000-8000-000000000001", direction="request",
        client=CLIENT, service=SERVICE, method="POST", path_and_query=PATH,
        headers=(("X-Road-UserId", "JP/care-worker-17"), ("Content-Type", "application/json")),
        request_hash=None, status=None,
        body_digest=body_digest((ASSETS / "request-body.json").read_bytes()),
        signing_time=datetime(2026, 1, 15, 9, 30, 0, 250000, tzinfo=UTC))


def golden_response() -> SignedDocument:
    return SignedDocument(
        version=1, message_id="4f1c2d3e-0000-4000-8000-000000000001", direction="response",
        client=CLIENT, service=SERVICE, method="POST", path_and_query=PATH,
        headers=(("content-type", "application/json"),),
        request_hash=request_hash(golden_request().to_bytes()), status=200,
        body_digest=body_digest((ASSETS / "response-body.json").read_bytes()),
        signing_time=datetime(2026, 1, 15, 18, 30, 0, 731000,
                              tzinfo=timezone(timedelta(hours=9))))


def test_golden_request() -> None:
    data = golden_request().to_bytes()
    assert data == (ASSETS / "request.sdoc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == \
        "b6171214714afe90f8042076217a0e5894c81d5f286ce9fa2c2aedf6484ef848"
    assert request_hash(data) == golden_request().request_hash_value == (
        "F/nkUfZTmPP9SCkKIorDL5fZoGWeXD3rNYyQRYOyrn3E9A+CQMOfaaVRGChNRttyNKEzMIHHQR7oPZxfXk70Lg==")
    assert SignedDocument.from_bytes(data) == golden_request()


def test_golden_response() -> None:
    data = golden_response().to_bytes()
    assert data == (ASSETS / "response.sdoc").read_bytes()
    assert hashlib.sha256(data).hexdigest() == \
        "f5d2db17899c90299613152f51034b825a6df62866122b51c702920fd868f770"
    assert SignedDocument.from_bytes(data) == golden_response()
    assert golden_response().signing_time.tzinfo == UTC


def test_documented_vectors_match_docs() -> None:
    docs = (Path(__file__).parents[3] / "docs" / "protocol.md").read_text(encoding="utf-8")
    for name in ("request.sdoc", "response.sdoc"):
        text = (ASSETS / name).read_text(encoding="utf-8")
        assert f"```\n{text}```" in docs, name
    assert EMPTY_BODY_DIGEST in docs


def test_body_digest_streaming() -> None:
    stream = BodyDigest()
    for chunk in (b"ab", b"", b"c" * 100000):
        stream.update(chunk)
    whole = b"ab" + b"c" * 100000
    assert stream.finish() == body_digest(whole) == \
        base64.b64encode(hashlib.sha512(whole).digest()).decode()
    assert stream.size == len(whole)
    assert BodyDigest().finish() == EMPTY_BODY_DIGEST


def test_headers_are_canonical() -> None:
    assert canonical_headers([("B", " 2 "), ("a", "z"), ("b", "1"), ("A", "y")]) == (
        ("a", "y"), ("a", "z"), ("b", "1"), ("b", "2"))
    for bad in ([("bad name", "x")], [("x", "a\r\nb")], [("", "x")], [("x", "\x00")]):
        with pytest.raises(InvalidSignedDocument):
            canonical_headers(bad)


def _replace(**changes: Any) -> SignedDocument:
    return dataclasses.replace(golden_request(), **changes)


@pytest.mark.parametrize(("changes", "message"), [
    ({"version": 2}, "version 2"),
    ({"message_id": ""}, "message-id is empty"),
    ({"message_id": "a\nb"}, "control character"),
    ({"message_id": "x" * 257}, "longer than"),
    ({"direction": "sideways"}, "direction"),
    ({"method": "get"}, "upper-case"),
    ({"path_and_query": "/a\r\nx: y"}, "control character"),
    ({"status": 200}, "request document"),
    ({"request_hash": EMPTY_BODY_DIGEST}, "request document"),
    ({"body_digest": "abc"}, "base64 SHA-512"),
    ({"signing_time": datetime(2026, 1, 1)}, "timezone-aware"),
    ({"direction": "response"}, "request hash"),
    ({"direction": "response", "request_hash": EMPTY_BODY_DIGEST, "status": 42}, "status"),
])
def test_invalid_fields(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSignedDocument, match=message):
        _replace(**changes)


@pytest.mark.parametrize(("old", "new"), [
    (b"secserver-signed-document: 1\n", b"secserver-signed-document: 2\n"),
    (b"signing-time: 2026-01-15T09:30:00.250000Z\n", b""),
    (b"signing-time: 2026-01-15T09:30:00.250000Z\n",
     b"signing-time: 2026-01-15T09:30:00.250000Z\nextra: 1\n"),
    (b"signing-time: 2026-01-15T09:30:00.250000Z\n", b"signing-time: 2026-01-15T09:30:00Z\n"),
    (b"signing-time: 2026-01-15T09:30:00.250000Z\n",
     b"signing-time: 2026-13-15T09:30:00.250000Z\n"),
    (b"header: content-type: application/json\nheader: x-road-userid: JP/care-worker-17\n",
     b"header: x-road-userid: JP/care-worker-17\nheader: content-type: application/json\n"),
    (b"header: content-type", b"header: Content-Type"),
    (b"header: content-type: application/json", b"header: content-type:application/json"),
    (b"header: content-type: application/json", b"header: content-type: application/json "),
    (b"client: JP-DEV/GOV/TOYONO/ELDERCARE", b"client: JP-DEV/GOV/TOYONO/ELDER%41CARE"),
    (b"direction: request", b"direction: response"),
    (b"message-id: 4f", b"message-id:4f"),
    (b"\n", b"\r\n"),
    (b"method: POST\n", b""),
])
def test_from_bytes_rejects(old: bytes, new: bytes) -> None:
    data = (ASSETS / "request.sdoc").read_bytes()
    assert old in data
    with pytest.raises(InvalidSignedDocument):
        SignedDocument.from_bytes(data.replace(old, new, 1))


def test_from_bytes_rejects_encoding() -> None:
    data = (ASSETS / "request.sdoc").read_bytes()
    for bad in (data[:-1], data + b"\n", b"\xff" + data, b""):
        with pytest.raises(InvalidSignedDocument):
            SignedDocument.from_bytes(bad)


text = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40)


@settings(max_examples=80, deadline=None)
@given(
    message_id=text.filter(bool), path=text,
    headers=st.lists(st.tuples(st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True), text),
                     max_size=5),
    response=st.booleans(), status=st.integers(min_value=100, max_value=999),
    micro=st.integers(min_value=0, max_value=999999),
)
def test_round_trip_property(message_id: str, path: str, headers: list[tuple[str, str]],
                             response: bool, status: int, micro: int) -> None:
    document = SignedDocument(
        version=1, message_id=message_id[:256], direction="response" if response else "request",
        client=CLIENT, service=SERVICE, method="PATCH", path_and_query=path, headers=tuple(headers),
        request_hash=EMPTY_BODY_DIGEST if response else None, status=status if response else None,
        body_digest=EMPTY_BODY_DIGEST,
        signing_time=datetime(2026, 2, 3, 4, 5, 6, micro, tzinfo=UTC))
    data = document.to_bytes()
    assert SignedDocument.from_bytes(data) == document
    assert data.endswith(b"\n") and b"\r" not in data


# --- the fast paths against the code they replaced (kept here verbatim as the reference) ---

def _reference_to_bytes(doc: SignedDocument) -> bytes:
    """``SignedDocument.to_bytes`` as it was before the fast path (commit 8795409)."""
    lines = [
        f"secserver-signed-document: {doc.version}",
        f"message-id: {doc.message_id}",
        f"direction: {doc.direction}",
        f"client: {doc.client}",
        f"service: {doc.service}",
        f"method: {doc.method}",
        f"path: {doc.path_and_query}",
    ]
    lines.extend(f"header: {name}: {value}" for name, value in doc.headers)
    if doc.direction == "response":
        lines.append(f"request-hash: {doc.request_hash}")
        lines.append(f"status: {doc.status}")
    lines.append(f"body-sha512: {doc.body_digest}")
    lines.append("signing-time: "
                 + doc.signing_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return ("\n".join(lines) + "\n").encode("utf-8")


_header_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"),
                                              blacklist_characters="\x85\u2028\u2029"),
                       max_size=12)
_times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                      timezones=st.sampled_from([UTC, timezone(timedelta(hours=9)),
                                                 timezone(timedelta(hours=-5, minutes=-30))]))


@settings(max_examples=150, deadline=None)
@given(message_id=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                          min_size=1, max_size=40),
       headers=st.lists(st.tuples(st.sampled_from(["Content-Type", "accept", "X-Road-UserId",
                                                  "x-a", "X-A"]),
                                  _header_text), max_size=5),
       path=_header_text, when=_times, response=st.booleans(),
       status=st.integers(min_value=100, max_value=999))
def test_to_bytes_and_from_bytes_agree_with_the_reference(
        message_id: str, headers: list[tuple[str, str]], path: str, when: datetime,
        response: bool, status: int) -> None:
    changes: dict[str, Any] = dict(message_id=message_id, headers=tuple(headers),
                                   path_and_query=path, signing_time=when)
    if response:
        changes.update(direction="response", request_hash=EMPTY_BODY_DIGEST, status=status)
    doc = dataclasses.replace(golden_request(), **changes)
    data = doc.to_bytes()
    assert data == _reference_to_bytes(doc)
    assert doc.to_bytes() is data  # built once
    try:
        parsed = SignedDocument.from_bytes(data)
    except InvalidSignedDocument as exc:
        # only years below 1000 do not round-trip (strftime does not pad them)
        assert when.astimezone(UTC).year < 1000, exc.message
        return
    assert parsed == doc
    assert parsed.to_bytes() == data
    del parsed.__dict__["_bytes"]  # built again from the fields, not kept from parsing
    assert parsed.to_bytes() == data


@pytest.mark.parametrize("old,new", [
    (b"secserver-signed-document: 1\n", b"secserver-signed-document: 2\n"),
    (b"method: POST\n", b""),
    (b"method: POST\n", b"method: POST\nheader: nocolon\n"),
    (b"body-sha512: ", b"header: x: y\nbody-sha512: "),
    (b"direction: request", b"direction: sideways"),
    (b"direction: request", b"direction: response"),
    (b"signing-time: 2026-01-15T09:30:00.250000Z\n",
     b"signing-time: 2026-01-15T09:30:00.250000Z\nsigning-time: x\n"),
    (b"signing-time: 2026-01-15T09:30:00.250000Z", b"signing-time: 2026-01-15T24:30:00.250000Z"),
    (b"signing-time: 2026-01-15T09:30:00.250000Z", b"signing-time: 2026-02-30T09:30:00.250000Z"),
    (b"signing-time: 2026-01-15T09:30:00.250000Z", b"signing-time: 0999-01-15T09:30:00.250000Z"),
    (b"signing-time: 2026-01-15T09:30:00.250000Z",
     "signing-time: 2026-01-15T09:30:00.25000\u0660Z".encode()),
    (b"signing-time: 2026-01-15T09:30:00.250000Z", b"signing-time: 2026-01-15T09:30:60.250000Z"),
    (b"client: JP-DEV/GOV/TOYONO/ELDERCARE", b"client: JP-DEV/GOV/TOYONO"),
    (b"", b""),
])
def test_fast_parse_equals_the_general_parse(old: bytes, new: bytes) -> None:
    """``from_bytes`` (fast path for well-formed lines) and the general line-by-line parse
    give the same document or the same error, also for the response vector."""
    for asset in ("request.sdoc", "response.sdoc"):
        data = (ASSETS / asset).read_bytes().replace(old, new, 1)
        lines = data.decode()[:-1].split("\n")
        results: list[object] = []
        for parse in (SignedDocument.from_bytes,
                      lambda d: SignedDocument._from_lines(d, lines)):  # noqa: B023
            try:
                results.append(parse(data))
            except InvalidSignedDocument as exc:
                results.append(exc.message)
        assert results[0] == results[1]


@settings(max_examples=200, deadline=None)
@given(when=_times)
def test_time_format_and_parse_agree_with_strftime_and_strptime(when: datetime) -> None:
    from secserver.signing.document import _parse_time, format_time
    text = format_time(when)
    assert text == when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if len(text) == 27:
        assert _parse_time(text) == datetime.strptime(
            text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) == when


def test_canonical_headers_cache_keeps_refusing_and_normalising() -> None:
    for _ in range(2):  # the second round goes through the cache of valid pairs
        assert canonical_headers([("B", " 2 "), ("A", "y")]) == (
            ("a", "y"), ("b", "2"))
        for bad in ([("bad name", "x")], [("x", "a\r\nb")], [("x", "\x00")],
                    [("x", ["list"])], [(b"x", "1")]):
            with pytest.raises(InvalidSignedDocument):
                canonical_headers(bad)  # type: ignore[arg-type]


def test_remembered_header_pairs_stay_bounded() -> None:
    from secserver.signing import document
    long_value = "v" * 300
    canonical_headers([("X-Long", long_value)])
    assert ("X-Long", long_value) not in document._CANONICAL_PAIRS
    for i in range(3000):
        assert canonical_headers([("X-N", f" {i} ")]) == (("x-n", str(i)),)
    assert len(document._CANONICAL_PAIRS) <= document._CANONICAL_PAIRS_MAX


# --- SignedDocument's own __init__ against the dataclass it replaced (kept verbatim) -----

@dataclasses.dataclass(frozen=True)
class _ReferenceDocument:
    """``SignedDocument``'s fields and checks as of commit 754080c (generated
    ``__init__`` plus ``__post_init__``)."""

    version: int
    message_id: str
    direction: str
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
        from secserver.signing.document import (
            _B64_SHA512,
            _METHOD,
            MAX_MESSAGE_ID,
            VERSION,
            _check_text,
        )
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


def _outcome(cls: type, kwargs: dict[str, Any]) -> dict[str, Any] | str:
    try:
        return dataclasses.asdict(cls(**kwargs))
    except InvalidSignedDocument as exc:
        return f"{type(exc).__name__}: {exc.message}"


@settings(max_examples=400, deadline=None)
@given(version=st.sampled_from([1, 2, True]),
       message_id=st.sampled_from(["m-1", "", "a\nb", "x" * 257, "x" * 256, 5]),
       direction=st.sampled_from(["request", "response", "sideways"]),
       client=st.sampled_from([CLIENT, "JP-DEV/GOV/TOYONO"]),
       service=st.sampled_from([SERVICE, None]),
       method=st.sampled_from(["POST", "get", "", None]),
       path=st.sampled_from(["", "/a?b", "/a\r\n"]),
       headers=st.sampled_from([(), (("B", " 1 "), ("a", "2")), (("bad name", "x"),),
                                (("x", "\x00"),)]),
       request_hash_value=st.sampled_from([None, EMPTY_BODY_DIGEST, "abc"]),
       status=st.sampled_from([None, 200, 42, True, 999, "200"]),
       digest=st.sampled_from([EMPTY_BODY_DIGEST, "abc", None]),
       when=st.sampled_from([datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1),
                             datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=9))),
                             "2026-01-01"]))
def test_init_equals_the_generated_dataclass_init(
        version: int, message_id: str, direction: str, client: ClientId, service: ServiceId,
        method: str, path: str, headers: tuple[tuple[str, str], ...],
        request_hash_value: str | None, status: int | None, digest: str,
        when: datetime) -> None:
    kwargs: dict[str, Any] = dict(
        version=version, message_id=message_id, direction=direction, client=client,
        service=service, method=method, path_and_query=path, headers=headers,
        request_hash=request_hash_value, status=status, body_digest=digest,
        signing_time=when)
    assert _outcome(SignedDocument, kwargs) == _outcome(_ReferenceDocument, kwargs)


def test_still_a_frozen_dataclass() -> None:
    doc = golden_request()
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.message_id = "other"  # type: ignore[misc]
    same = SignedDocument(*(getattr(doc, f.name) for f in dataclasses.fields(doc)))
    assert same == doc and hash(same) == hash(doc) and same.to_bytes() == doc.to_bytes()
    assert [f.name for f in dataclasses.fields(SignedDocument)] == [
        f.name for f in dataclasses.fields(_ReferenceDocument)]
    changed = dataclasses.replace(doc, message_id="other")
    assert changed.message_id == "other" and b"message-id: other\n" in changed.to_bytes()
    assert doc.request_hash_value == request_hash(doc.to_bytes())
    assert doc.request_hash_value is doc.request_hash_value  # computed once


_OLD_HEAD_PREFIXES = ("secserver-signed-document: ", "message-id: ", "direction: ",
                      "client: ", "service: ", "method: ", "path: ")


def _reference_fields_fast(lines: list[str]) -> tuple[list[str], list[tuple[str, str]],
                                                      str | None, str | None] | None:
    """``SignedDocument._fields_fast`` as of commit 754080c (over the text's lines)."""
    count = len(lines)
    if count < 9:
        return None
    values = []
    for pos, prefix in enumerate(_OLD_HEAD_PREFIXES):
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
    request_hash_text = status_text = None
    if values[2] == "response":
        if pos + 2 > count or not lines[pos].startswith("request-hash: ") \
                or not lines[pos + 1].startswith("status: "):
            return None
        request_hash_text, status_text = lines[pos][14:], lines[pos + 1][8:]
        pos += 2
    if pos + 2 != count or not lines[pos].startswith("body-sha512: ") \
            or not lines[pos + 1].startswith("signing-time: "):
        return None
    values.append(lines[pos][13:])
    values.append(lines[pos + 1][14:])
    return values, headers, request_hash_text, status_text


_line_values = st.sampled_from(["", "1", "request", "response", "a: b", "x", ": ",
                                "header: y: z", "\r", " response", "request-hash: q"])


@st.composite
def _document_texts(draw: st.DrawFn) -> str:
    prefixes = [*_OLD_HEAD_PREFIXES]
    prefixes += ["header: "] * draw(st.integers(0, 3))
    if draw(st.booleans()):
        prefixes += ["request-hash: ", "status: "]
    prefixes += ["body-sha512: ", "signing-time: "]
    lines = [p + draw(_line_values) for p in prefixes]
    for _ in range(draw(st.integers(0, 2))):  # a mutation: drop, insert, swap, rename
        kind = draw(st.sampled_from(["drop", "insert", "swap", "rename"]))
        pos = draw(st.integers(0, len(lines) - 1))
        if kind == "drop":
            del lines[pos]
        elif kind == "insert":
            lines.insert(pos, draw(st.sampled_from(["header: a: b", "header: nocolon", "",
                                                    "status: 200", "x: y"])))
        elif kind == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[pos], lines[other] = lines[other], lines[pos]
        else:
            lines[pos] = "other" + lines[pos]
        if not lines:
            break
    return "".join(line + "\n" for line in lines)


@settings(max_examples=500, deadline=None)
@given(text=_document_texts())
def test_fields_fast_equals_the_line_reader_it_replaced(text: str) -> None:
    assert SignedDocument._fields_fast(text) == _reference_fields_fast(text[:-1].split("\n"))

"""A small, strict DER encoder and reader for the CMS hot path. Pure.

CMS signing and verification run for every message, so they avoid a general ASN.1 library
(pyasn1 needs milliseconds per structure): encoding is byte concatenation of prebuilt
parts, reading walks the TLVs in place. Only definite lengths in minimal form are
accepted (DER); anything else raises ``DerError``. The RFC 3161 code and the tests use
pyasn1-modules, which also cross-checks what this module writes.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

# Universal tags.
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
SEQUENCE = 0x30
SET = 0x31


class DerError(ValueError):
    """The bytes are not the DER structure expected."""


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    if n < 0x100:
        return bytes((tag, 0x81, n)) + content
    if n < 0x10000:
        return bytes((tag, 0x82, n >> 8, n & 0xFF)) + content
    return bytes((tag,)) + length(n) + content


def sequence(*parts: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    """A DER SET OF: elements sorted by their encodings."""
    return tlv(SET, b"".join(sorted(parts)))


def context(number: int, content: bytes, *, constructed: bool = True) -> bytes:
    return tlv((0xA0 if constructed else 0x80) | number, content)


def integer(value: int) -> bytes:
    size = (value.bit_length() + 8) // 8 if value >= 0 else ((-value - 1).bit_length() + 8) // 8
    return tlv(INTEGER, value.to_bytes(max(size, 1), "big", signed=True))


def octet_string(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def null() -> bytes:
    return b"\x05\x00"


def boolean(value: bool) -> bytes:
    return b"\x01\x01\xff" if value else b"\x01\x01\x00"


@functools.lru_cache(maxsize=256)
def oid(dotted: str) -> bytes:
    return tlv(OID, oid_content(dotted))


def oid_content(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    if len(arcs) < 2:
        raise ValueError(f"object identifier {dotted!r} needs at least two arcs")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


_time_cache: dict[datetime, bytes] = {}


def time(value: datetime) -> bytes:
    """RFC 5280 / 5652 Time: UTCTime for 1950-2049, GeneralizedTime otherwise (whole seconds)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    key = value.replace(microsecond=0)
    cached = _time_cache.get(key)
    if cached is not None:
        return cached
    text = f"{key.month:02d}{key.day:02d}{key.hour:02d}{key.minute:02d}{key.second:02d}Z"
    if 1950 <= key.year < 2050:
        encoded = b"\x17\x0d" + f"{key.year % 100:02d}{text}".encode("ascii")
    else:
        encoded = b"\x18\x0f" + f"{key.year:04d}{text}".encode("ascii")
    if len(_time_cache) > 64:
        _time_cache.clear()
    _time_cache[key] = encoded
    return encoded


def generalized_time(value: datetime) -> bytes:
    """GeneralizedTime with fractional seconds when present (RFC 3161 genTime)."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y%m%d%H%M%S")
    if value.microsecond:
        text += ("." + f"{value.microsecond:06d}").rstrip("0")
    return tlv(GENERALIZED_TIME, (text + "Z").encode("ascii"))


# --- reading -----------------------------------------------------------------------------

def read(data: bytes, offset: int = 0, end: int | None = None) -> tuple[int, int, int]:
    """Read one TLV at ``offset``: ``(tag, content_start, content_end)``."""
    limit = len(data) if end is None else end
    if offset + 2 > limit:
        raise DerError("truncated DER: no room for tag and length")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise DerError("high-tag-number form is not used in these structures")
    first = data[offset + 1]
    pos = offset + 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0:
            raise DerError("indefinite length is not DER")
        if count > 4 or pos + count > limit:
            raise DerError("DER length is too large or truncated")
        size = int.from_bytes(data[pos:pos + count], "big")
        if size < 0x80 or data[pos] == 0:
            raise DerError("DER length is not in minimal form")
        pos += count
    if pos + size > limit:
        raise DerError("truncated DER: content runs past the end")
    return tag, pos, pos + size


def expect(data: bytes, offset: int, tag: int, what: str,
           end: int | None = None) -> tuple[int, int]:
    """Read a TLV that must have ``tag``; return its content bounds."""
    got, start, stop = read(data, offset, end)
    if got != tag:
        raise DerError(f"{what}: expected tag 0x{tag:02x}, found 0x{got:02x}")
    return start, stop


def children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """Every TLV inside ``data[start:end]``: ``(tag, tlv_start, content_start, content_end)``."""
    out = []
    pos = start
    while pos < end:
        tag, cstart, cend = read(data, pos, end)
        out.append((tag, pos, cstart, cend))
        pos = cend
    return out


@functools.lru_cache(maxsize=1024)
def read_oid(content: bytes) -> str:
    """The dotted form of an OID's content bytes (cached: the same few OIDs recur)."""
    if not content or content[-1] & 0x80:
        raise DerError("malformed object identifier")
    arcs: list[int] = []
    value = 0
    for byte in content:
        if value == 0 and byte == 0x80:
            raise DerError("object identifier arc is not minimal")
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(a) for a in head + arcs[1:])


def read_integer(content: bytes) -> int:
    if not content:
        raise DerError("empty INTEGER")
    if len(content) > 1 and (
        (content[0] == 0 and not content[1] & 0x80) or (content[0] == 0xFF and content[1] & 0x80)
    ):
        raise DerError("INTEGER is not in minimal form")
    return int.from_bytes(content, "big", signed=True)


def read_time(tag: int, content: bytes) -> datetime:
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError as exc:
        raise DerError("time is not ASCII") from exc
    if not text.endswith("Z"):
        raise DerError(f"time {text!r} does not end in Z (UTC)")
    body = text[:-1]
    micro = 0
    if tag == UTC_TIME:
        if len(body) != 12 or not body.isdigit() or not body.isascii():
            raise DerError(f"UTCTime {text!r} is not YYMMDDHHMMSSZ")
        year = int(body[:2])
        year += 1900 if year >= 50 else 2000  # RFC 5280: YY >= 50 means 19YY
        rest = body[2:]
    elif tag == GENERALIZED_TIME:
        main, dot, frac = body.partition(".")
        if len(main) != 14 or not main.isdigit() or not main.isascii() or (dot and (
                not frac or not frac.isdigit() or not frac.isascii() or frac.endswith("0"))):
            raise DerError(f"GeneralizedTime {text!r} is not YYYYMMDDHHMMSS[.f]Z")
        year = int(main[:4])
        rest = main[4:]
        if frac:
            micro = int(frac[:6].ljust(6, "0"))
    else:
        raise DerError(f"expected a time, found tag 0x{tag:02x}")
    try:
        return datetime(year, int(rest[0:2]), int(rest[2:4]), int(rest[4:6]), int(rest[6:8]),
                        int(rest[8:10]), micro, tzinfo=UTC)
    except ValueError as exc:
        raise DerError(f"time {text!r} is not valid: {exc}") from exc

"""REST paths: strict normalisation and endpoint pattern matching. Pure.

``normalise_path`` takes the path as sent (percent-encoded, without the query) and returns
its canonical form: every segment percent-decoded once (strict UTF-8) and re-encoded the
same way (unreserved characters and sub-delimiters literal, everything else ``%XX``
upper-case), so ``/%61dmin`` and ``/admin`` are the same path. Anything a backend could
read differently from us is refused instead of "fixed": dot segments (also encoded or
with ``;`` parameters), encoded ``/`` or ``\\``, backslashes, empty segments (``//``), NUL
and other control characters, whitespace, malformed or double percent-encoding (``%252e``)
and invalid UTF-8.
A trailing ``/`` is kept: ``/a/`` and ``/a`` are different paths.

Endpoint patterns use the same canonical form plus two wildcards: ``*`` matches within one
segment (a whole-segment ``*`` needs at least one character), and a segment ``**`` matches
zero or more whole segments. Patterns compile once (cached).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import quote

from secserver.errors import SecServerError

MAX_PATH_LENGTH = 8192
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
                "CONNECT")

# Characters kept literal in the canonical form (RFC 3986 unreserved + sub-delims + ':@').
_SAFE = "!$&'()*+,;=:@-._~"
# Fast path: a path made only of these characters, with no '//' and no '/.' in it, is
# already canonical (no percent-encoding to decode, no dot segments, no empty segments).
_CANONICAL_FAST = re.compile(r"(?:/[A-Za-z0-9!$&'()*+,;=:@\-_~][A-Za-z0-9!$&'()*+,;=:@\-._~]*)*/?")
_HEX = frozenset("0123456789abcdefABCDEF")
_ENCODED = re.compile(r"%[0-9A-Fa-f]{2}")
_METHOD_RE = re.compile(r"[A-Z][A-Z0-9_-]{0,15}")


class InvalidPath(SecServerError):
    """A request path or endpoint pattern that is ambiguous or malformed."""

    code = "InvalidPath"
    http_status = 400


def _percent_decode(segment: str, raw: str) -> str:
    if "%" not in segment:
        return segment
    out = bytearray()
    i = 0
    n = len(segment)
    while i < n:
        char = segment[i]
        if char == "%":
            pair = segment[i + 1:i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise InvalidPath(f"path {raw!r} has a malformed percent-encoding "
                                  f"at {segment[i:i + 3]!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out += char.encode("utf-8")
            i += 1
    try:
        return out.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidPath(f"path {raw!r} is not valid UTF-8 once percent-decoded") from exc


def _check_decoded(segment: str, raw: str) -> None:
    for char in segment:
        if char == "/":
            raise InvalidPath(f"path {raw!r} contains an encoded '/' (%2F); refused as "
                              "ambiguous")
        if char == "\\":
            raise InvalidPath(f"path {raw!r} contains a backslash (or %5C); refused as "
                              "ambiguous")
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):
            raise InvalidPath(f"path {raw!r} contains the control character "
                              f"U+{ord(char):04X}")
    if _ENCODED.search(segment):
        raise InvalidPath(f"path {raw!r} is percent-encoded twice (%25 followed by hex "
                          "digits); refused as ambiguous")
    # A dot segment also when a backend trims white space, drops ';' parameters or
    # folds compatibility characters (U+FF0E fullwidth full stop is '.' under NFKC).
    core = segment.split(";", 1)[0]
    if {core, core.strip(), unicodedata.normalize("NFKC", core).strip()} & {".", ".."}:
        raise InvalidPath(f"path {raw!r} contains a dot segment {segment!r}; send the "
                          "resolved path instead")
    if segment.strip() == "" and segment:
        raise InvalidPath(f"path {raw!r} has a segment made only of white space")


def _canonical(raw: str) -> str:
    if not isinstance(raw, str):
        raise InvalidPath(f"path must be text, not {type(raw).__name__}")
    if raw == "":
        return "/"
    if len(raw) > MAX_PATH_LENGTH:
        raise InvalidPath(f"path is {len(raw)} characters long; at most {MAX_PATH_LENGTH}")
    if not raw.startswith("/"):
        raise InvalidPath(f"path {raw[:80]!r} must start with '/'")
    if "?" in raw or "#" in raw:
        raise InvalidPath(f"path {raw[:80]!r} contains '?' or '#'; pass the path without "
                          "query or fragment")
    for char in raw:
        if char == "\\":
            raise InvalidPath(f"path {raw[:80]!r} contains a backslash; refused as ambiguous")
        if char.isspace() or unicodedata.category(char)[0] in ("C", "Z"):
            raise InvalidPath(f"path {raw[:80]!r} contains the character U+{ord(char):04X} "
                              "(control or white space); percent-encode it")
    segments = raw[1:].split("/")
    out: list[str] = []
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment == "":
            if index == last:  # trailing slash
                out.append("")
                continue
            raise InvalidPath(f"path {raw[:80]!r} contains an empty segment ('//')")
        decoded = _percent_decode(segment, raw[:80])
        _check_decoded(decoded, raw[:80])
        out.append(quote(decoded, safe=_SAFE))
    return "/" + "/".join(out)


def normalise_path(raw: str) -> str:
    """The canonical form of a request path as sent, or raise InvalidPath. Idempotent."""
    if len(raw) <= MAX_PATH_LENGTH and _CANONICAL_FAST.fullmatch(raw) is not None:
        return raw or "/"
    return _canonical(raw)


def normalise_method(method: str) -> str:
    """An HTTP method in upper case, or ``*``; raise InvalidPath when malformed."""
    upper = method.upper()
    if upper == "*" or _METHOD_RE.fullmatch(upper):
        return upper
    raise InvalidPath(f"HTTP method {method!r} is not valid; use e.g. GET, POST or '*'",
                      code="InvalidMethod")


@dataclass(frozen=True)
class PathPattern:
    """A compiled endpoint path pattern; ``matches`` takes a normalised path."""

    text: str
    literal: bool
    _regex: re.Pattern[str] | None = field(repr=False, compare=False)

    def matches(self, path: str) -> bool:
        if self._regex is None:
            return path == self.text
        return self._regex.fullmatch(path) is not None


@lru_cache(maxsize=65536)
def compile_pattern(pattern: str) -> PathPattern:
    """Validate and compile an endpoint path pattern (``*`` and ``**``); cached."""
    canonical = _canonical(pattern)
    if "*" not in canonical:
        return PathPattern(canonical, True, None)
    parts: list[str] = []
    for segment in canonical[1:].split("/"):
        if segment == "**":
            parts.append("(?:/.*)?")
        elif "**" in segment:
            raise InvalidPath(f"pattern {pattern!r}: '**' must be a whole segment "
                              "(use '*' within a segment)")
        elif segment == "*":
            parts.append("/[^/]+")
        else:
            parts.append("/" + "[^/]*".join(re.escape(p) for p in segment.split("*")))
    return PathPattern(canonical, False, re.compile("".join(parts)))


def normalise_pattern(pattern: str) -> str:
    """The canonical text of an endpoint pattern (as stored), or raise InvalidPath."""
    return compile_pattern(pattern).text

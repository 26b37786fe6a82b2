"""HTTP header names of the exchange and the header rules both proxies share. Pure.

``X-Road-*`` names follow the X-Road message protocol for REST; ``X-Road-Data-Subject``,
``X-Road-Signed-Document`` and ``X-Road-Signature`` are secserver's (``docs/protocol.md``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping

from secserver.routing.errors import DuplicateHeaderField, InvalidRequest

X_CLIENT = "X-Road-Client"
X_SERVICE = "X-Road-Service"
X_ID = "X-Road-Id"
X_USER_ID = "X-Road-UserId"
X_ISSUE = "X-Road-Issue"
X_DATA_SUBJECT = "X-Road-Data-Subject"
X_REQUEST_HASH = "X-Road-Request-Hash"
X_ERROR = "X-Road-Error"
X_SIGNED_DOCUMENT = "X-Road-Signed-Document"
X_SIGNATURE = "X-Road-Signature"
X_MESSAGE_KIND = "X-Road-Message-Kind"  # "rest" or "soap", between security servers

# Connection-level headers (RFC 9110 7.6.1) plus those the proxies set themselves.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
PROXY_SET = frozenset({"host", "content-length", "expect", "date", "server"})
# Headers by which proxies tell a server who called it and as what host: a service behind
# the provider node (its proxy) would believe the caller's values.
FORWARDING = frozenset({"forwarded", "via", "x-real-ip"})
FORWARDING_PREFIX = "x-forwarded-"
# X-Road headers that are fields of the signed document or of the transport, never
# passed on as ordinary headers.
X_ROAD_FIELDS = frozenset(h.lower() for h in (
    X_CLIENT, X_SERVICE, X_ID, X_REQUEST_HASH, X_ERROR, X_SIGNED_DOCUMENT, X_SIGNATURE,
    X_MESSAGE_KIND,
))
# X-Road headers the IS may send and that are carried (signed) to the provider.
X_ROAD_CARRIED = frozenset(h.lower() for h in (X_USER_ID, X_ISSUE, X_DATA_SUBJECT))

MESSAGE_ID_RE = re.compile(r"[\x21-\x7e]{1,128}")
_TEXT_MAX = 256
_TEXT_BAD = re.compile(r"[\x00-\x1f\x7f]")
# every name ``end_to_end`` drops whatever the Connection header says
_DROP = HOP_BY_HOP | PROXY_SET | FORWARDING | X_ROAD_FIELDS


def single(headers: Mapping[str, str] | Iterable[tuple[str, str]], name: str) -> str | None:
    """The one value of header ``name`` (case-insensitive), ``None`` when absent."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    lower = name.lower()
    size = len(lower)
    found = [v for k, v in items if len(k) == size and k.lower() == lower]
    if len(found) > 1:
        raise DuplicateHeaderField(f"header {name} appears {len(found)} times; send it once")
    return found[0] if found else None


def lowered(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs with lower-cased names, in order (for ``single_lowered`` and
    ``end_to_end_lowered``, which then need not lower-case them again)."""
    return [(name.lower(), value) for name, value in headers]


def single_lowered(pairs: list[tuple[str, str]], name: str) -> str | None:
    """``single`` over pairs whose names are already lower case."""
    lower = name.lower()
    found = [v for k, v in pairs if k == lower]
    if len(found) > 1:
        raise DuplicateHeaderField(f"header {name} appears {len(found)} times; send it once")
    return found[0] if found else None


def x_road_values(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The values of every ``x-road-*`` header of lower-cased ``pairs``, by name, in
    order: one pass instead of one ``single`` per header."""
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        if name.startswith("x-road-"):
            values = found.get(name)
            if values is None:
                found[name] = [value]
            else:
                values.append(value)
    return found


def single_of(found: dict[str, list[str]], name: str) -> str | None:
    """``single`` of an ``x_road_values`` result (``name`` an ``X-Road-*`` name)."""
    values = found.get(name.lower())
    if values is None:
        return None
    if len(values) > 1:
        raise DuplicateHeaderField(f"header {name} appears {len(values)} times; send it once")
    return values[0]


def check_message_id(value: str, where: str) -> str:
    if not MESSAGE_ID_RE.fullmatch(value):
        raise InvalidRequest(f"{where} must be 1-128 visible ASCII characters",
                             detail=value[:40])
    return value


def check_text(value: str, where: str) -> str:
    """A free-text X-Road value (user id, issue, data subject): 1-256 chars, no controls."""
    if not value or len(value) > _TEXT_MAX or _TEXT_BAD.search(value) is not None:
        raise InvalidRequest(f"{where} must be 1-{_TEXT_MAX} characters without control "
                             "characters")
    return value


def connection_tokens(headers: Iterable[tuple[str, str]]) -> frozenset[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return frozenset(tokens)


def _alias(lower: str, drop: frozenset[str]) -> bool:
    """An underscore spelling (``x_road_client``) of a dropped or X-Road header: CGI and
    WSGI servers map ``_`` and ``-`` to one variable (``HTTP_X_ROAD_CLIENT``), so a service
    could take it for the header the provider sets."""
    if "_" not in lower:
        return False
    dashed = lower.replace("_", "-")
    return dashed in drop or dashed.startswith(("x-road-", FORWARDING_PREFIX))


def end_to_end(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers a proxy passes on: hop-by-hop, proxy-set, forwarding (``Forwarded``,
    ``X-Forwarded-*``, ...) and X-Road fields removed, and underscore spellings of those
    and of any ``X-Road-*`` name.

    Names are lower-cased; order is kept. ``X-Road-UserId``, ``X-Road-Issue`` and
    ``X-Road-Data-Subject`` stay (they travel signed to the provider).
    """
    return end_to_end_lowered(lowered(headers))


def end_to_end_lowered(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``end_to_end`` of pairs whose names are already lower case."""
    drop = _DROP
    for lower, _ in pairs:
        if lower == "connection":
            drop = _DROP | connection_tokens(pairs)
            break
    out: list[tuple[str, str]] = []
    for lower, value in pairs:
        if lower in drop or lower.startswith(FORWARDING_PREFIX) \
                or ("_" in lower and _alias(lower, drop)):
            continue
        out.append((lower, value))
    return out


def _name(pair: tuple[str, str]) -> str:
    return pair[0]


def signed_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """End-to-end headers sorted by name (stable for repeated names), as signed."""
    out = end_to_end(headers)
    out.sort(key=_name)
    return tuple(out)


def signed_headers_lowered(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """``signed_headers`` of pairs whose names are already lower case."""
    out = end_to_end_lowered(pairs)
    out.sort(key=_name)
    return tuple(out)


ANY_IP_LITERAL = "*ip-literal*"  # in ``allowed``: accept any IP address (wildcard binds)


# (Host, allowed) pairs that passed ``check_host``: every request of a client sends the
# same Host. Bounded: a flood of new ones only stops the set from growing.
_HOSTS_PASSED: set[tuple[str, frozenset[str]]] = set()
_HOSTS_PASSED_MAX = 256


def check_host(host: str | None, allowed: frozenset[str]) -> None:
    """Refuse a missing or foreign ``Host`` (the port, if any, is ignored)."""
    if host is None:
        raise InvalidRequest("the request has no Host header")
    key = (host, allowed)
    if type(host) is str and type(allowed) is frozenset and key in _HOSTS_PASSED:
        return
    _check_host(host, allowed)
    if type(host) is str and type(allowed) is frozenset \
            and len(_HOSTS_PASSED) < _HOSTS_PASSED_MAX:
        _HOSTS_PASSED.add(key)


def _check_host(host: str, allowed: frozenset[str]) -> None:
    name = host.strip().lower()
    port = ""
    if name.startswith("["):
        name, _, port = name[1:].partition("]")
    elif name.count(":") == 1:
        name, port = name.split(":")
        port = ":" + port
    if port and not (port[0] == ":" and port[1:].isascii()
                     and (port[1:].isdigit() or not port[1:])):
        raise InvalidRequest("the Host header is not a host name with an optional port",
                             detail=host[:80])
    if ANY_IP_LITERAL in allowed:
        try:
            ipaddress.ip_address(name)
            return
        except ValueError:
            pass
    if name not in allowed:
        raise InvalidRequest("the Host header names a host this node does not serve; "
                             "requests are never routed by Host", detail=host[:80])


def check_origin_form(target: str) -> None:
    """Refuse any request target that is not origin-form (``/path?query``)."""
    if not target.startswith("/") or target.startswith("//"):
        raise InvalidRequest("the request target must be origin-form (/path?query); "
                             "absolute-form and authority-form targets are refused",
                             detail=target[:80])
    if "#" in target:
        raise InvalidRequest("the request target contains a fragment ('#')")

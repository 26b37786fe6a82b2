from __future__ import annotations

import pytest

from secserver.routing import headers as h
from secserver.routing.errors import DuplicateHeaderField, InvalidRequest


def test_end_to_end_drops_hop_by_hop_named_and_transport_headers() -> None:
    pairs = [("Connection", "close, X-Private"), ("X-Private", "1"), ("Keep-Alive", "5"),
             ("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Upgrade", "h2c"),
             ("Proxy-Authorization", "x"), ("Host", "a"), ("Content-Length", "3"),
             ("X-Road-Signature", "s"), ("X-Road-Client", "c"), ("X-Road-UserId", "u"),
             ("Content-Type", "text/plain"), ("Accept", "a"), ("Accept", "b")]
    assert h.end_to_end(pairs) == [("x-road-userid", "u"), ("content-type", "text/plain"),
                                   ("accept", "a"), ("accept", "b")]
    assert [n for n, _ in h.signed_headers(pairs)] == ["accept", "accept", "content-type",
                                                      "x-road-userid"]


def test_end_to_end_drops_underscore_aliases_of_dropped_and_x_road_headers() -> None:
    pairs = [("X_Road_Client", "spoof"), ("x-road_id", "1"), ("X_Road_UserId", "u"),
             ("Content_Length", "9"), ("Connection", "x-private"), ("X_Private", "p"),
             ("X_Custom", "kept"), ("X-Road-UserId", "real")]
    assert h.end_to_end(pairs) == [("x_custom", "kept"), ("x-road-userid", "real")]


def test_end_to_end_drops_forwarding_headers() -> None:
    pairs = [("Forwarded", "for=1.2.3.4"), ("X-Forwarded-For", "1.2.3.4"),
             ("X-Forwarded-Host", "evil"), ("X_Forwarded_Proto", "https"), ("Via", "1.1 p"),
             ("X-Real-IP", "1.2.3.4"), ("X-Forwarding-Note", "kept")]
    assert h.end_to_end(pairs) == [("x-forwarding-note", "kept")]


def test_single() -> None:
    assert h.single([("A", "1")], "a") == "1"
    assert h.single({"B": "2"}, "a") is None
    with pytest.raises(DuplicateHeaderField):
        h.single([("A", "1"), ("a", "2")], "A")


@pytest.mark.parametrize("host", ["localhost", "localhost:8080", "127.0.0.1:1", "[::1]:80",
                                  "LOCALHOST"])
def test_allowed_hosts(host: str) -> None:
    h.check_host(host, frozenset({"localhost", "127.0.0.1", "::1"}))


@pytest.mark.parametrize("host", [None, "evil.example", "evil.example:80", "127.0.0.2",
                                  "localhost:80@evil.example", "[::1]evil.example",
                                  "localhost:8o", "[::1]:٨٠"])
def test_foreign_hosts(host: str | None) -> None:
    with pytest.raises(InvalidRequest):
        h.check_host(host, frozenset({"localhost", "127.0.0.1"}))


@pytest.mark.parametrize("target", ["http://a/b", "a/b", "//a/b", "*", "/a#b"])
def test_origin_form_only(target: str) -> None:
    with pytest.raises(InvalidRequest):
        h.check_origin_form(target)


def test_wildcard_listeners_accept_ip_literals_but_not_foreign_names() -> None:
    allowed = frozenset({"localhost", h.ANY_IP_LITERAL})
    h.check_host("10.0.0.5:8080", allowed)
    h.check_host("[fe80::1]:80", allowed)
    with pytest.raises(InvalidRequest):
        h.check_host("evil.example", allowed)


# --- one pass over lower-cased names against the functions they replaced ---

def _reference_end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``end_to_end`` as it was before (8795409)."""
    drop = h.HOP_BY_HOP | h.PROXY_SET | h.FORWARDING | h.X_ROAD_FIELDS \
        | h.connection_tokens(headers)
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in drop or lower.startswith(h.FORWARDING_PREFIX) or h._alias(lower, drop):
            continue
        out.append((lower, value))
    return out


@pytest.mark.parametrize("pairs", [
    [],
    [("Content-Type", "a"), ("Connection", "keep-alive, X-Secret"), ("X-Secret", "1"),
     ("x_secret", "2"), ("X-Road-Client", "c"), ("x_road_anything", "3"), ("Accept", "b")],
    [("Host", "h"), ("K\u212aY", "kelvin"), ("X-Road-UserId", "u"), ("x-road-issue", "i"),
     ("X_Forwarded_For", "f"), ("Te", "trailers"), ("Zeta", "1"), ("alpha", "2"),
     ("Alpha", "1")],
    [("CONNECTION", "close"), ("connection", "Foo"), ("foo", "1"), ("Bar", "2")],
])
def test_end_to_end_and_signed_headers_equal_the_reference(
        pairs: list[tuple[str, str]]) -> None:
    expected = _reference_end_to_end(pairs)
    assert h.end_to_end(pairs) == expected
    assert h.signed_headers(pairs) == tuple(sorted(expected, key=lambda pair: pair[0]))
    lowered = h.lowered(pairs)
    assert h.signed_headers_lowered(lowered) == h.signed_headers(pairs)
    found = h.x_road_values(lowered)
    for name in (h.X_CLIENT, h.X_ID, h.X_USER_ID, h.X_ISSUE, "Kelvin", "K\u212ay"):
        results: list[str | None] = []
        for way in ("single", "lowered", "of"):
            if way == "of" and not name.lower().startswith("x-road-"):
                continue
            try:
                if way == "single":
                    results.append(h.single(pairs, name))
                elif way == "lowered":
                    results.append(h.single_lowered(lowered, name))
                else:
                    results.append(h.single_of(found, name))
            except DuplicateHeaderField as exc:
                results.append(exc.message)
        assert len(set(results)) == 1, results


def test_text_values_refuse_controls() -> None:
    assert h.check_text("a b\u00e9", "X") == "a b\u00e9"
    for bad in ("", "a\tb", "a\x7fb", "x" * 257, "\x00"):
        with pytest.raises(InvalidRequest):
            h.check_text(bad, "X")


def test_passed_hosts_are_remembered_per_allowed_set() -> None:
    served = frozenset({"localhost"})
    for _ in range(2):  # the second round finds the pair remembered
        h.check_host("LocalHost:8080", served)
        with pytest.raises(InvalidRequest):
            h.check_host("LocalHost:8080", frozenset({"other.example"}))
        with pytest.raises(InvalidRequest):
            h.check_host("evil.example", served)
        with pytest.raises(InvalidRequest):
            h.check_host("localhost:x", served)
    for port in range(1000):
        h.check_host(f"localhost:{port}", served)
    assert len(h._HOSTS_PASSED) <= h._HOSTS_PASSED_MAX

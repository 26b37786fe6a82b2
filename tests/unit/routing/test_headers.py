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

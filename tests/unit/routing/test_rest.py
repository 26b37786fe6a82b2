from __future__ import annotations

import pytest

from secserver.identifiers import ClientId, ServiceId
from secserver.routing.errors import (
    DuplicateHeaderField,
    InvalidClientIdentifier,
    InvalidRequest,
    InvalidServiceIdentifier,
    MissingHeaderField,
)
from secserver.routing.rest import ExchangeRequest, backend_target, parse_rest_request

CLIENT = "JP-DEV/GOV/TOYONO/ELDERCARE"
BASE = "/r1/JP-DEV/COM/OTTA/TAGS/tag-locations"


def parse(target: str, *extra: tuple[str, str], method: str = "GET") -> ExchangeRequest:
    return parse_rest_request(method, target, [("X-Road-Client", CLIENT), *extra])


def test_parses_service_path_query_and_headers() -> None:
    request = parse(f"{BASE}/residents/R%201/locations?since=2026&x=%2B",
                    ("X-Road-Id", "abc"), ("X-Road-UserId", "u1"), ("X-Road-Issue", "i"),
                    ("X-Road-Data-Subject", "JP-1"), ("Content-Type", "application/json"),
                    ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"), ("Host", "h"),
                    method="post")
    assert request.kind == "rest"
    assert request.method == "POST"
    assert request.client == ClientId.parse(CLIENT)
    assert request.service == ServiceId.parse("JP-DEV/COM/OTTA/TAGS/tag-locations")
    assert request.path == "/residents/R%201/locations"
    assert request.query == "since=2026&x=%2B"
    assert request.path_and_query == "/residents/R%201/locations?since=2026&x=%2B"
    assert request.target() == f"{BASE}/residents/R%201/locations?since=2026&x=%2B"
    assert (request.message_id, request.user_id, request.issue, request.data_subject) == \
        ("abc", "u1", "i", "JP-1")
    names = [name for name, _ in request.headers]
    assert names == sorted(names)
    assert "x-hop" not in names and "connection" not in names and "host" not in names
    assert "x-road-client" not in names and "x-road-id" not in names
    assert {"content-type", "x-road-userid", "x-road-data-subject"} <= set(names)


def test_service_root_has_empty_path() -> None:
    request = parse(BASE)
    assert request.path == "" and request.acl_path == "/"
    assert request.target() == BASE


@pytest.mark.parametrize("target", [
    "http://evil/r1/JP-DEV/COM/OTTA/TAGS/x", "//evil/r1/x", "*", "/other", f"{BASE}#frag",
    f"{BASE}/a/../b", f"{BASE}/%2e%2e/b", f"{BASE}/a%2fb", f"{BASE}//a", f"{BASE}/a\\b",
    f"{BASE}/%00", f"{BASE}?a b",
])
def test_refuses_ambiguous_targets(target: str) -> None:
    with pytest.raises(InvalidRequest):
        parse(target)


def test_refuses_methods_outside_rest() -> None:
    with pytest.raises(InvalidRequest):
        parse(BASE, method="TRACE")
    with pytest.raises(InvalidRequest):
        parse(BASE, method="CONNECT")


def test_client_header_rules() -> None:
    with pytest.raises(MissingHeaderField):
        parse_rest_request("GET", BASE, [])
    with pytest.raises(InvalidClientIdentifier):
        parse_rest_request("GET", BASE, [("X-Road-Client", "JP-DEV/GOV/TOYONO")])
    with pytest.raises(InvalidClientIdentifier):
        parse_rest_request("GET", BASE, [("X-Road-Client", "JP-DEV/GOV/TO YONO/X")])
    with pytest.raises(DuplicateHeaderField):
        parse(BASE, ("x-road-client", CLIENT))


def test_service_identifier_rules() -> None:
    with pytest.raises(InvalidServiceIdentifier):
        parse("/r1/JP-DEV/COM/OTTA/TAGS")
    with pytest.raises(InvalidServiceIdentifier):
        parse("/r1/JP-DEV/COM/OT%zzA/TAGS/x")


def test_text_values_are_checked() -> None:
    with pytest.raises(InvalidRequest):
        parse(BASE, ("X-Road-Id", "has space"))
    with pytest.raises(InvalidRequest):
        parse(BASE, ("X-Road-Data-Subject", "x" * 300))


@pytest.mark.parametrize("base,target,expected", [
    ("http://b:1/api", f"{BASE}/x?y=1", "http://b:1/api/x?y=1"),
    ("http://b:1/api/", f"{BASE}/x", "http://b:1/api/x"),
    ("http://b:1/api/", BASE, "http://b:1/api/"),
    ("http://b:1/api?k=v", f"{BASE}?y=1", "http://b:1/api?k=v&y=1"),
    # the path goes below the registered path, never into its query or fragment
    ("http://b:1/api?k=v", f"{BASE}/items?y=1", "http://b:1/api/items?k=v&y=1"),
    ("http://b:1/api/?k=v", f"{BASE}/items", "http://b:1/api/items?k=v"),
    ("http://b:1/api#top", f"{BASE}/items?y=1", "http://b:1/api/items?y=1"),
    ("http://b:1", f"{BASE}/items", "http://b:1/items"),
])
def test_backend_target_only_appends_below_the_registered_url(base: str, target: str,
                                                              expected: str) -> None:
    assert backend_target(base, parse(target)) == expected


@pytest.mark.parametrize("query", ["a=1", "", "a b", "a\tb", "x#y", "a\\b", "a\x00", "a\x7f",
                                   "a\x1fb", "a=%20&b=\u00e9", "~!$&'()*+,;=:@/?"])
def test_query_refusal_equals_the_character_rule(query: str) -> None:
    from secserver.routing.rest import split_target
    bad = any(c in " \t\r\n#\\\x00\x7f" or ord(c) < 0x20 for c in query)  # the rule
    if bad:
        with pytest.raises(InvalidRequest):
            split_target("/p?" + query)
    else:
        assert split_target("/p?" + query) == ("/p", query)


def test_repeated_x_road_headers_are_refused_in_order() -> None:
    target = "/r1/JP-DEV/COM/OTTA/TAGS/echo"
    client = ("X-Road-Client", "JP-DEV/GOV/TOYONO/X")
    with pytest.raises(DuplicateHeaderField, match="X-Road-Client"):
        parse_rest_request("GET", target, [client, ("x-road-client", "JP-DEV/GOV/A/B"),
                                           ("X-Road-Id", "1"), ("X-Road-Id", "2")])
    with pytest.raises(DuplicateHeaderField, match="X-Road-Id"):
        parse_rest_request("GET", target, [client, ("X-ROAD-ID", "1"), ("X-Road-Id", "2"),
                                           ("X-Road-Issue", "1"), ("X-Road-Issue", "2")])
    request = parse_rest_request("GET", target, [client, ("X-ROAD-USERID", "u"),
                                                 ("x-road-data-subject", "s")])
    assert (request.user_id, request.data_subject, request.issue) == ("u", "s", None)


def test_new_message_id_only_when_the_head_has_none() -> None:
    target = "/r1/JP-DEV/COM/OTTA/TAGS/echo"
    client = ("X-Road-Client", "JP-DEV/GOV/TOYONO/X")
    made: list[str] = []

    def new_id() -> str:
        made.append("generated-1")
        return made[-1]

    assert parse_rest_request("GET", target, [client], new_message_id=new_id).message_id \
        == "generated-1"
    assert parse_rest_request("GET", target, [client, ("X-Road-Id", "sent")],
                              new_message_id=new_id).message_id == "sent"
    assert made == ["generated-1"]
    assert parse_rest_request("GET", target, [client]).message_id is None


def test_exchange_request_is_still_a_frozen_dataclass() -> None:
    import dataclasses

    parsed = parse_rest_request("GET", "/r1/JP-DEV/COM/OTTA/TAGS/echo/x?y=1",
                                [("X-Road-Client", "JP-DEV/GOV/TOYONO/X"), ("X-Road-Id", "m")])
    values = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
    assert list(values) == ["kind", "client", "service", "method", "path", "query", "headers",
                            "message_id", "user_id", "issue", "data_subject"]
    assert ExchangeRequest(**values) == parsed and hash(ExchangeRequest(**values)) == hash(parsed)
    assert ExchangeRequest(*values.values()) == parsed
    short = ExchangeRequest(parsed.kind, parsed.client, parsed.service, "GET", "/x", "", ())
    assert (short.message_id, short.user_id, short.issue, short.data_subject) == (None,) * 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.method = "POST"  # type: ignore[misc]
    assert dataclasses.replace(parsed, message_id="n").message_id == "n"

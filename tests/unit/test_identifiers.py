from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secserver.errors import InvalidIdentifier
from secserver.identifiers import (
    ClientId,
    ServerId,
    ServiceId,
    decode_url_part,
    parse_rest_service_path,
)

part = st.text(
    alphabet=st.characters(categories=("L", "N"), include_characters="-_.~"),
    min_size=1, max_size=32,
).filter(lambda s: s not in (".", "..") and __import__("unicodedata").normalize("NFC", s) == s)


@given(part, part, part, st.none() | part)
def test_client_round_trip(instance: str, cls: str, member: str, sub: str | None) -> None:
    client = ClientId(instance, cls, member, sub)
    assert ClientId.parse(str(client)) == client


@given(part, part, part, part, part, st.none() | part)
def test_service_round_trip(i: str, c: str, m: str, s: str, code: str, v: str | None) -> None:
    service = ServiceId(ClientId(i, c, m, s), code, v)
    assert ServiceId.parse(str(service)) == service


@given(part, part, part, part, part, st.text(max_size=30))
def test_rest_url_round_trip(i: str, c: str, m: str, s: str, code: str, tail: str) -> None:
    service = ServiceId(ClientId(i, c, m, s), code)
    from urllib.parse import quote
    raw_tail = "/" + quote(tail, safe="/")
    parsed, rest = parse_rest_service_path(service.url_path() + raw_tail)
    assert parsed == service
    assert rest == raw_tail


def test_server_id() -> None:
    server = ServerId.parse("JP-DEV/COM/OTTA/SS1")
    assert server.owner == ClientId("JP-DEV", "COM", "OTTA")
    assert str(server) == "JP-DEV/COM/OTTA/SS1"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("JP-DEV/GOV", "has 2 parts"),
        ("JP-DEV//TOYONO", "member class is empty"),
        ("JP-DEV/GOV/TOY ONO", "member code"),
        ("JP-DEV/GOV/TOYONO/..", "must not be '..'"),
        ("JP-DEV/GOV/TOYONO/A%2FB", "subsystem code"),
        ("JP-DEV/GOV/TOYONO/A\x00", "U+0000"),
        ("JP-DEV/GOV/" + "X" * 65, "at most 64"),
    ],
)
def test_client_errors_name_the_part(text: str, fragment: str) -> None:
    with pytest.raises(InvalidIdentifier, match=fragment.replace(".", r"\.").replace("+", r"\+")):
        ClientId.parse(text)


def test_service_needs_subsystem() -> None:
    with pytest.raises(InvalidIdentifier, match="subsystem"):
        ServiceId(ClientId("JP-DEV", "GOV", "TOYONO"), "registry")


def test_url_decoding_is_strict() -> None:
    assert decode_url_part("%E8%B1%8A%E8%83%BD", "member code") == "豊能"
    with pytest.raises(InvalidIdentifier, match="percent"):
        decode_url_part("a%2", "member code")
    with pytest.raises(InvalidIdentifier, match="UTF-8"):
        decode_url_part("%ff", "member code")
    with pytest.raises(InvalidIdentifier, match="'/'"):
        decode_url_part("a%2Fb", "member code")


def test_rest_path_too_short() -> None:
    with pytest.raises(InvalidIdentifier, match="does not name a service"):
        parse_rest_service_path("JP-DEV/COM/OTTA")


def test_validate_part_remembers_only_valid_parts_per_limit() -> None:
    from secserver import identifiers

    assert identifiers.validate_part("TOYONO-memo", "member code") == "TOYONO-memo"
    assert ("TOYONO-memo", identifiers.MAX_PART_LENGTH) in identifiers._VALID_PARTS
    assert identifiers.validate_part("TOYONO-memo", "member code") == "TOYONO-memo"
    for bad in ("bad/part", "..", "", "a b"):
        with pytest.raises(InvalidIdentifier):
            identifiers.validate_part(bad, "member code")
        assert (bad, identifiers.MAX_PART_LENGTH) not in identifiers._VALID_PARTS
    long_part = "x" * 40  # valid within 64 characters, not within an instance's 32
    assert identifiers.validate_part(long_part, "member code") == long_part
    with pytest.raises(InvalidIdentifier, match="at most 32"):
        identifiers.validate_part(long_part, "instance", max_length=32)


def test_remembered_valid_parts_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from secserver import identifiers

    monkeypatch.setattr(identifiers, "_VALID_PARTS", set())
    monkeypatch.setattr(identifiers, "_VALID_PARTS_MAX", 3)
    for n in range(10):
        assert identifiers.validate_part(f"part{n}", "member code") == f"part{n}"
    assert len(identifiers._VALID_PARTS) == 3
    assert identifiers.validate_part("part9", "member code") == "part9"
    with pytest.raises(InvalidIdentifier):
        identifiers.validate_part("part 9", "member code")


def test_parsed_and_formatted_forms_are_remembered_exactly() -> None:
    text = "JP-DEV/GOV/CACHED/SUB"
    first = ClientId.parse(text)
    assert ClientId.parse(text) is first  # remembered
    assert str(first) == text and str(first) is str(first)
    assert first.member == ClientId("JP-DEV", "GOV", "CACHED") and first.member is first.member
    assert first == ClientId("JP-DEV", "GOV", "CACHED", "SUB")
    assert hash(first) == hash(ClientId("JP-DEV", "GOV", "CACHED", "SUB"))
    assert repr(first) == "ClientId(instance='JP-DEV', member_class='GOV', " \
        "member_code='CACHED', subsystem='SUB')"
    service = ServiceId.parse(text + "/svc/v1")
    assert ServiceId.parse(text + "/svc/v1") is service
    assert str(service) == text + "/svc/v1"
    assert service.url_path() == text + "/svc" and service.url_path() is service.url_path()
    for bad in ("JP-DEV/GOV/CACHED/S B", "JP-DEV/GOV"):  # never remembered: raise each time
        for _ in range(2):
            with pytest.raises(InvalidIdentifier):
                ClientId.parse(bad)
    with pytest.raises(InvalidIdentifier):
        ClientId.parse(None)  # type: ignore[arg-type]

from __future__ import annotations

import pytest
from lxml import etree

from secserver.identifiers import ClientId, ServiceId
from secserver.routing.errors import (
    DuplicateHeaderField,
    InvalidClientIdentifier,
    InvalidContentType,
    InvalidProtocolVersion,
    InvalidServiceIdentifier,
    InvalidSoap,
    InvalidXml,
    MissingHeaderField,
)
from secserver.routing.rest import ExchangeRequest
from secserver.routing.soap import (
    SOAP_ENV,
    InconsistentHeader,
    SoapHeader,
    XmlLimits,
    check_response,
    parse_soap_request,
    render_envelope,
    render_fault,
)

CLIENT = ClientId.parse("JP-DEV/GOV/TOYONO/ELDERCARE")
SERVICE = ServiceId.parse("JP-DEV/COM/OTTA/TAGS/getResident/v1")
LIMITS = XmlLimits(max_depth=16, max_elements=200)


def envelope() -> bytes:
    header = SoapHeader(CLIENT, SERVICE, "id-1", "4.0", user_id="u", issue="i",
                        data_subject="JP-1")
    return render_envelope(header, '<m:get xmlns:m="urn:x"><id>1</id></m:get>')


def parse(data: bytes, content_type: str = "text/xml; charset=utf-8") -> ExchangeRequest:
    return parse_soap_request(data, content_type, [("Content-Type", content_type),
                                                   ("SOAPAction", '"get"')], LIMITS)


def test_parses_the_x_road_header() -> None:
    request = parse_soap_request(envelope(), "text/xml", [("SOAPAction", "x")], LIMITS)
    assert request.kind == "soap" and request.method == "POST"
    assert request.client == CLIENT and request.service == SERVICE
    assert (request.message_id, request.user_id, request.issue, request.data_subject) == \
        ("id-1", "u", "i", "JP-1")
    assert request.path_and_query == "" and request.target() == "/"
    assert request.headers == (("soapaction", "x"),)


@pytest.mark.parametrize("data", [
    b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
    b'<!DOCTYPE a SYSTEM "http://example/x.dtd"><a/>',
    '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE a []><a/>'.encode("utf-16"),
    b"<a><b></a>",
    b"",
    b"<a>" * 20 + b"</a>" * 20,
    b"<a>" + b"<b/>" * 300 + b"</a>",
])
def test_hostile_xml_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidXml):
        parse(data)


def test_content_type_must_be_soap_1_1() -> None:
    with pytest.raises(InvalidContentType):
        parse(envelope(), "application/soap+xml")


@pytest.mark.parametrize("old,new,error", [
    (b">4.0<", b">3.0<", InvalidProtocolVersion),
    (b"<xrd:id>id-1</xrd:id>", b"", MissingHeaderField),
    (b"<xrd:id>id-1</xrd:id>", b"<xrd:id>id-1</xrd:id><xrd:id>2</xrd:id>", DuplicateHeaderField),
    (b'objectType="SUBSYSTEM"', b'objectType="MEMBER"', InvalidClientIdentifier),
    (b'objectType="SERVICE"', b'objectType="SUBSYSTEM"', InvalidSoap),
    (b"<id:serviceCode>getResident</id:serviceCode>", b"", InvalidServiceIdentifier),
    (b"<id:memberCode>TOYONO</id:memberCode>", b"<id:memberCode>TO YO</id:memberCode>",
     InvalidClientIdentifier),
    (b"<m:get", b"<m:other xmlns:m='urn:y'/><m:get", InvalidSoap),
    (b"</xrd:client>", b"<id:extra>1</id:extra></xrd:client>", InvalidSoap),
])
def test_header_rules(old: bytes, new: bytes, error: type[Exception]) -> None:
    data = envelope()
    assert old in data
    with pytest.raises(error):
        parse(data.replace(old, new, 1))


def test_charset_of_content_type_wins_over_the_declaration() -> None:
    latin1 = envelope().replace(b"<xrd:userId>u<", "<xrd:userId>Jürgen<".encode())
    latin1 = latin1.split(b"?>", 1)[1].decode().encode("iso-8859-1")
    assert parse(latin1, "text/xml; charset=\"ISO-8859-1\"").user_id == "Jürgen"
    with pytest.raises(InvalidXml):
        parse(latin1, "text/xml; charset=utf-8")
    with pytest.raises(InvalidContentType):
        parse(envelope(), "text/xml; charset=no-such-charset")


def test_not_an_envelope() -> None:
    with pytest.raises(InvalidSoap):
        parse(b'<Envelope xmlns="urn:not-soap"/>')
    with pytest.raises(InvalidSoap):
        parse(f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Header/></s:Envelope>'.encode())


def test_response_must_echo_the_header() -> None:
    request = parse_soap_request(envelope(), "text/xml", [], LIMITS)
    assert check_response(envelope(), request, LIMITS) is False
    other = render_envelope(SoapHeader(CLIENT, SERVICE, "id-2", "4.0"), "<r/>")
    with pytest.raises(InconsistentHeader):
        check_response(other, request, LIMITS)
    bare = f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body><r/></s:Body></s:Envelope>'.encode()
    with pytest.raises(InconsistentHeader):
        check_response(bare, request, LIMITS)
    fault = render_fault("Server.X", "boom")
    assert check_response(fault, request, LIMITS) is True


@pytest.mark.parametrize("user_id", [None, "someone-else"])
def test_response_must_echo_the_user_id(user_id: str | None) -> None:
    # X-Road checks client, service, id and userId of the echo (absent only if absent)
    request = parse_soap_request(envelope(), "text/xml", [], LIMITS)
    other = render_envelope(SoapHeader(CLIENT, SERVICE, "id-1", "4.0", user_id=user_id),
                            "<r/>")
    with pytest.raises(InconsistentHeader, match="userId"):
        check_response(other, request, LIMITS)


def test_fault_layout_and_escaping() -> None:
    fault = render_fault("Client.InvalidXml", "a < b & c", "d > e")
    root = etree.fromstring(fault)
    node = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert node is not None
    assert node.findtext("faultcode") == "Client.InvalidXml"
    assert node.findtext("faultstring") == "a < b & c"
    assert node.findtext("detail/faultDetail") == "d > e"

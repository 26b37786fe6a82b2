"""TOYONO's sample SOAP service: parsing, echoed headers, faults, hostile XML, the WSDL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from secserver.examples.resident_registry import (
    SAMPLE_RESIDENTS,
    SOAP_ENV,
    TNS,
    WSDL_SOAP,
    XROAD,
    XROAD_ID,
    SoapFault,
    answer,
    make_app,
    parse_request,
    wsdl_bytes,
)

HEADER = f"""
<SOAP-ENV:Header xmlns:xrd="{XROAD}" xmlns:id="{XROAD_ID}">
  <xrd:client id:objectType="SUBSYSTEM">
    <id:xRoadInstance>JP-DEV</id:xRoadInstance><id:memberClass>COM</id:memberClass>
    <id:memberCode>OTTA</id:memberCode><id:subsystemCode>TAGS</id:subsystemCode>
  </xrd:client>
  <xrd:service id:objectType="SERVICE">
    <id:xRoadInstance>JP-DEV</id:xRoadInstance><id:memberClass>GOV</id:memberClass>
    <id:memberCode>TOYONO</id:memberCode><id:subsystemCode>ELDERCARE</id:subsystemCode>
    <id:serviceCode>resident-registry</id:serviceCode>
  </xrd:service>
  <xrd:userId>JPtanaka</xrd:userId>
  <xrd:id>4894e35d-bf0f-44a6-867a-8e51f1daa7e0</xrd:id>
  <xrd:protocolVersion>4.0</xrd:protocolVersion>
</SOAP-ENV:Header>"""


def envelope(resident_id: str = "R-1001", header: str = HEADER, body: str | None = None) -> bytes:
    if body is None:
        body = f"<rr:getResident><rr:residentId>{resident_id}</rr:residentId></rr:getResident>"
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:rr="{TNS}">'
            f"{header}<SOAP-ENV:Body>{body}</SOAP-ENV:Body></SOAP-ENV:Envelope>").encode()


def fault_of(data: bytes) -> tuple[str, str]:
    root = etree.fromstring(data)
    fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None
    return fault.findtext("faultcode") or "", fault.findtext("faultstring") or ""


def test_answer_returns_the_resident_and_echoes_every_xroad_header() -> None:
    status, data = answer(envelope("R-1002"), SAMPLE_RESIDENTS)
    assert status == 200
    root = etree.fromstring(data)
    header = root.find(f"{{{SOAP_ENV}}}Header")
    assert header is not None
    echoed = [etree.QName(e).localname for e in header]
    # X-Road's order: client, service, id, userId, issue, protocolVersion.
    assert echoed == ["client", "service", "id", "userId", "protocolVersion"]
    request_header = etree.fromstring(envelope()).find(f"{{{SOAP_ENV}}}Header")
    response_header = root.find(f"{{{SOAP_ENV}}}Header")
    assert request_header is not None and response_header is not None
    for name in ("client", "service", "id", "userId", "protocolVersion"):
        sent = request_header.find(f"{{{XROAD}}}{name}")
        got = response_header.find(f"{{{XROAD}}}{name}")
        assert sent is not None and got is not None
        assert etree.tostring(got, method="c14n") == etree.tostring(sent, method="c14n")
    result = root.find(f"{{{SOAP_ENV}}}Body/{{{TNS}}}getResidentResponse")
    assert result is not None
    assert {etree.QName(e).localname: e.text for e in result} == {
        "residentId": "R-1002", "name": "Sato Ichiro", "district": "Shimotoyono",
        "careLevel": "care-1"}


def test_unknown_resident_is_a_client_fault_with_headers_echoed() -> None:
    status, data = answer(envelope("R-9999"), SAMPLE_RESIDENTS)
    assert status == 500
    assert fault_of(data) == ("SOAP-ENV:Client", "no resident R-9999 in TOYONO's registry")
    assert etree.fromstring(data).find(f"{{{SOAP_ENV}}}Header/{{{XROAD}}}id") is not None


@pytest.mark.parametrize(("data", "code", "words"), [
    (envelope(header="<SOAP-ENV:Header/>"), "SOAP-ENV:Client",
     "missing X-Road header element(s) client, service, id, protocolVersion"),
    (envelope(body="<rr:getSomethingElse/>"), "SOAP-ENV:Client", "exactly one getResident"),
    (envelope("1001"), "SOAP-ENV:Client", "residentId must look like R-1001"),
    (b"<Envelope/>", "SOAP-ENV:VersionMismatch", "SOAP 1.1 Envelope"),
    (b"<SOAP-ENV:Envelope", "SOAP-ENV:Client", "not well-formed"),
    (envelope(header=HEADER.replace("</SOAP-ENV:Header>",
                                    '<x:secret xmlns:x="urn:x" SOAP-ENV:mustUnderstand="1"/>'
                                    "</SOAP-ENV:Header>")),
     "SOAP-ENV:MustUnderstand", "{urn:x}secret is not understood"),
])
def test_bad_requests_are_faults_that_say_what_to_fix(data: bytes, code: str,
                                                      words: str) -> None:
    status, response = answer(data, SAMPLE_RESIDENTS)
    assert status == 500
    got_code, message = fault_of(response)
    assert got_code == code
    assert words in message


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_any_doctype_is_refused(encoding: str) -> None:
    billion_laughs = (f'<?xml version="1.0" encoding="{encoding}"?><!DOCTYPE lolz ['
                      '<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>')
    rest = envelope("&lol2;").decode().split("?>", 1)[1]
    data = (billion_laughs + rest).encode(encoding)
    with pytest.raises(SoapFault, match="DOCTYPE is not allowed"):
        parse_request(data)


def test_external_entities_are_never_fetched(tmp_path: Any) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("R-1001")
    data = envelope("&xxe;").replace(
        b"?>", f'?><!doctype x [<!ENTITY xxe SYSTEM "file://{secret}">]>'.encode(), 1)
    status, response = answer(data, SAMPLE_RESIDENTS)
    assert status == 500
    assert "DOCTYPE" in fault_of(response)[1]


def test_deep_nesting_and_size_are_bounded() -> None:
    deep = "<a>" * 40 + "</a>" * 40
    with pytest.raises(SoapFault, match="nested deeper"):
        parse_request(envelope(body=deep))
    with pytest.raises(SoapFault, match="larger than"):
        parse_request(envelope(body="<a>" + "x" * 300_000 + "</a>"))


def test_wsdl_ships_and_takes_the_running_address() -> None:
    shipped = etree.fromstring(wsdl_bytes())
    assert shipped.get("targetNamespace") == TNS
    served = etree.fromstring(wsdl_bytes("http://127.0.0.1:9/"))
    addresses = [a.get("location") for a in served.iter(f"{{{WSDL_SOAP}}}address")]
    assert addresses == ["http://127.0.0.1:9/"]


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(make_app(), host="127.0.0.1")) as test_client:
        yield test_client


async def test_app_answers_soap_and_serves_the_wsdl(client: TestClient[Any, Any]) -> None:
    response = await client.post("/", data=envelope("R-1001"),
                                 headers={"Content-Type": "text/xml; charset=utf-8"})
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert "Yamada Hanako" in await response.text()
    response = await client.get("/?wsdl", headers={"Host": "evil.example"})
    assert response.status == 200
    wsdl = await response.read()
    assert b"evil.example" not in wsdl
    assert f'location="http://127.0.0.1:{client.port}/"'.encode() in wsdl
    response = await client.get("/")
    assert response.status == 405


async def test_app_refuses_oversized_bodies_with_a_fault(client: TestClient[Any, Any]) -> None:
    response = await client.post("/", data=b"<" * 300_000)
    assert response.status == 500
    assert "larger than" in fault_of(await response.read())[1]

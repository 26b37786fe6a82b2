"""TOYONO's SOAP ``resident-registry`` service: who a resident is.

Service id in the demo: ``JP-DEV/GOV/TOYONO/ELDERCARE/resident-registry``. SOAP 1.1,
document/literal, one operation ``getResident(residentId)`` answering name, district and
care level. The WSDL ships next to this module (``resident_registry.wsdl``) and is served
at ``GET /?wsdl`` with the address of the running service.

As every X-Road SOAP service does, it echoes the X-Road header elements of the request
(``client``, ``service``, ``id``, ``userId``, ``issue``, ``protocolVersion``) in its
response. Requests are parsed with lxml with entity expansion and network access off;
any DOCTYPE is refused. Errors are SOAP 1.1 faults (HTTP 500) whose ``faultcode`` is
``SOAP-ENV:Client`` or ``SOAP-ENV:Server`` and whose ``faultstring`` says what to fix.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XROAD = "http://x-road.eu/xsd/xroad.xsd"
XROAD_ID = "http://x-road.eu/xsd/identifiers"
TNS = "http://toyono.example.jp/eldercare/resident-registry"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"

#: The X-Road header elements a response echoes, in this order.
ECHOED_HEADERS = ("client", "service", "id", "userId", "issue", "protocolVersion")
REQUIRED_HEADERS = ("client", "service", "id", "protocolVersion")
MAX_REQUEST_BYTES = 256 * 1024
MAX_DEPTH = 32
RESIDENT_ID = re.compile(r"R-[0-9]{4}")
XML_CONTENT_TYPE = "text/xml; charset=utf-8"


@dataclass(frozen=True)
class Resident:
    resident_id: str
    name: str
    district: str
    care_level: str


SAMPLE_RESIDENTS: dict[str, Resident] = {r.resident_id: r for r in (
    Resident("R-1001", "Yamada Hanako", "Kamitoyono", "support-2"),
    Resident("R-1002", "Sato Ichiro", "Shimotoyono", "care-1"),
    Resident("R-1003", "鈴木 ハル", "南郷", "care-3"),
)}


class SoapFault(Exception):
    """A request the service answers with a SOAP fault."""

    def __init__(self, code: str, message: str,
                 echoed: Sequence[etree._Element] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.echoed = tuple(echoed)


@dataclass(frozen=True)
class SoapRequest:
    """A parsed ``getResident`` request: the header elements to echo and the argument."""

    echoed: tuple[etree._Element, ...]
    resident_id: str


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           dtd_validation=False, huge_tree=False, remove_pis=True)


def parse_xml(data: bytes) -> etree._Element:
    """Parse untrusted XML: no entities, no network, no DOCTYPE, bounded size and depth."""
    if len(data) > MAX_REQUEST_BYTES:
        raise SoapFault("SOAP-ENV:Client",
                        f"request is larger than {MAX_REQUEST_BYTES} bytes")
    if b"<!DOCTYPE" in data or b"<!doctype" in data:
        raise SoapFault("SOAP-ENV:Client", "a DOCTYPE is not allowed in SOAP messages")
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise SoapFault("SOAP-ENV:Client", f"request is not well-formed XML: {exc.msg}") \
            from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise SoapFault("SOAP-ENV:Client", "a DOCTYPE is not allowed in SOAP messages")
    for element in root.iter():
        depth = sum(1 for _ in element.iterancestors())
        if depth > MAX_DEPTH:
            raise SoapFault("SOAP-ENV:Client", f"XML is nested deeper than {MAX_DEPTH}")
    return root


def parse_request(data: bytes) -> SoapRequest:
    """Read a SOAP 1.1 ``getResident`` request, or raise :class:`SoapFault`."""
    root = parse_xml(data)
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault("SOAP-ENV:VersionMismatch",
                        f"expected a SOAP 1.1 Envelope in namespace {SOAP_ENV}")
    header = root.find(f"{{{SOAP_ENV}}}Header")
    body = root.find(f"{{{SOAP_ENV}}}Body")
    found: dict[str, etree._Element] = {}
    if header is not None:
        for element in header:
            if not isinstance(element.tag, str):
                continue
            qname = etree.QName(element)
            if qname.namespace == XROAD and qname.localname in ECHOED_HEADERS:
                found[qname.localname] = element
            elif element.get(f"{{{SOAP_ENV}}}mustUnderstand") in ("1", "true"):
                raise SoapFault("SOAP-ENV:MustUnderstand",
                                f"header element {qname.text} is not understood")
    echoed = tuple(found[name] for name in ECHOED_HEADERS if name in found)
    missing = [name for name in REQUIRED_HEADERS if name not in found]
    if missing:
        raise SoapFault("SOAP-ENV:Client", "missing X-Road header element(s) "
                        f"{', '.join(missing)} in namespace {XROAD}", echoed)
    if body is None:
        raise SoapFault("SOAP-ENV:Client", "the Envelope has no Body", echoed)
    children = [c for c in body if isinstance(c.tag, str)]
    if len(children) != 1 or children[0].tag != f"{{{TNS}}}getResident":
        raise SoapFault("SOAP-ENV:Client", "the Body must hold exactly one getResident "
                        f"element in namespace {TNS}", echoed)
    resident_id = children[0].findtext(f"{{{TNS}}}residentId")
    if resident_id is None or not RESIDENT_ID.fullmatch(resident_id.strip()):
        raise SoapFault("SOAP-ENV:Client", "residentId must look like R-1001, "
                        f"got {resident_id!r}", echoed)
    return SoapRequest(echoed, resident_id.strip())


def _envelope(echoed: Sequence[etree._Element]) -> tuple[etree._Element, etree._Element]:
    nsmap = {"SOAP-ENV": SOAP_ENV, "xrd": XROAD, "id": XROAD_ID, "rr": TNS}
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap=nsmap)
    if echoed:
        header = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Header")
        for element in echoed:
            header.append(copy.deepcopy(element))
    body = etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    return envelope, body


def _serialise(envelope: etree._Element) -> bytes:
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


def build_response(request: SoapRequest, resident: Resident) -> bytes:
    envelope, body = _envelope(request.echoed)
    answer = etree.SubElement(body, f"{{{TNS}}}getResidentResponse")
    for name, value in (("residentId", resident.resident_id), ("name", resident.name),
                        ("district", resident.district), ("careLevel", resident.care_level)):
        etree.SubElement(answer, f"{{{TNS}}}{name}").text = value
    return _serialise(envelope)


def build_fault(fault: SoapFault) -> bytes:
    envelope, body = _envelope(fault.echoed)
    element = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    # faultcode and faultstring are unqualified in SOAP 1.1.
    etree.SubElement(element, "faultcode").text = fault.code
    etree.SubElement(element, "faultstring").text = fault.message
    return _serialise(envelope)


def answer(data: bytes, residents: dict[str, Resident]) -> tuple[int, bytes]:
    """The whole service, pure: request bytes in, HTTP status and response bytes out."""
    try:
        request = parse_request(data)
        resident = residents.get(request.resident_id)
        if resident is None:
            raise SoapFault("SOAP-ENV:Client",
                            f"no resident {request.resident_id} in TOYONO's registry",
                            request.echoed)
    except SoapFault as fault:
        return 500, build_fault(fault)
    return 200, build_response(request, resident)


def wsdl_bytes(location: str | None = None) -> bytes:
    """The shipped WSDL, with the service address set to ``location`` when given."""
    data = resources.files("secserver.examples").joinpath("resident_registry.wsdl").read_bytes()
    if location is None:
        return data
    root = etree.fromstring(data, _parser())
    for address in root.iter(f"{{{WSDL_SOAP}}}address"):
        address.set("location", location)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


RESIDENTS = web.AppKey("residents", dict[str, Resident])


async def soap_endpoint(request: web.Request) -> web.Response:
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        status, data = 500, build_fault(SoapFault(
            "SOAP-ENV:Client", f"request is larger than {MAX_REQUEST_BYTES} bytes"))
    else:
        status, data = answer(await request.read(), request.app[RESIDENTS])
    return web.Response(status=status, body=data, content_type="text/xml", charset="utf-8")


async def wsdl(request: web.Request) -> web.Response:
    if "wsdl" not in request.query:
        return web.Response(status=405, text="POST a SOAP 1.1 envelope here; "
                            "the WSDL is at ?wsdl\n", headers={"Allow": "POST"})
    # The address this socket is bound to, never the client's Host header.
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    location = f"http://{sockname[0]}:{sockname[1]}/" if sockname else None
    return web.Response(body=wsdl_bytes(location), content_type="text/xml", charset="utf-8")


def make_app(residents: dict[str, Resident] | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES + 1)
    app[RESIDENTS] = dict(SAMPLE_RESIDENTS) if residents is None else residents
    app.router.add_post("/", soap_endpoint)
    app.router.add_get("/", wsdl)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    from secserver.examples.runner import main as run

    run("TOYONO's sample SOAP service resident-registry (SOAP 1.1, WSDL at ?wsdl).",
        make_app, argv)


if __name__ == "__main__":
    main()

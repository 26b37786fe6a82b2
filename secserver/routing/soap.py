"""The SOAP adapter (X-Road message protocol 4.0, SOAP 1.1). Pure.

Parsing is hostile-input safe: lxml with entity resolution and network access off and
``huge_tree`` off; any DOCTYPE is refused outright (so no entity can be declared); depth and
element count are bounded. The body is never re-serialised: the envelope's bytes travel
unchanged and the adapter only reads the X-Road header out of them.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree

from secserver.errors import InvalidIdentifier
from secserver.identifiers import ClientId, ServiceId
from secserver.routing import headers as h
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

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XROAD = "http://x-road.eu/xsd/xroad.xsd"
IDENT = "http://x-road.eu/xsd/identifiers"
SECSERVER = "urn:secserver:exchange:1"  # secserver's own header elements (dataSubject)
PROTOCOL_VERSION = "4.0"
SOAP_CONTENT_TYPES = frozenset({"text/xml"})

_CLIENT_PARTS = ("xRoadInstance", "memberClass", "memberCode", "subsystemCode")
_SERVICE_PARTS = (*_CLIENT_PARTS, "serviceCode", "serviceVersion")


@dataclass(frozen=True)
class XmlLimits:
    max_depth: int = 64
    max_elements: int = 10000


@dataclass(frozen=True)
class SoapHeader:
    """The X-Road header of an envelope (request, or the echo in a response)."""

    client: ClientId
    service: ServiceId
    message_id: str
    protocol_version: str
    user_id: str | None = None
    issue: str | None = None
    data_subject: str | None = None


def _parser(encoding: str | None) -> etree.XMLParser:
    try:
        return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False,
                               load_dtd=False, dtd_validation=False, remove_blank_text=False,
                               encoding=encoding)
    except LookupError as exc:
        raise InvalidContentType(f"charset {encoding!r} is not supported") from exc


def parse_xml(data: bytes, limits: XmlLimits, encoding: str | None = None) -> etree._Element:
    """Parse untrusted XML bytes within ``limits`` or raise InvalidXml; ``encoding`` (the
    Content-Type charset) overrides the XML declaration, as RFC 7303 says."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise InvalidXml("XML with a DOCTYPE or entity declaration is refused")
    try:
        root = etree.fromstring(data, parser=_parser(encoding))
    except etree.XMLSyntaxError as exc:
        raise InvalidXml("the message is not well-formed XML",
                         detail=str(exc.msg)[:200] if exc.msg else None) from exc
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise InvalidXml("XML with a DOCTYPE is refused")
    depth = 0
    count = 0
    for event, _element in etree.iterwalk(root, events=("start", "end")):
        if event == "start":
            depth += 1
            count += 1
            if depth > limits.max_depth:
                raise InvalidXml(f"XML nesting is deeper than {limits.max_depth} levels")
            if count > limits.max_elements:
                raise InvalidXml(f"XML has more than {limits.max_elements} elements")
        else:
            depth -= 1
    return root


def check_content_type(content_type: str | None) -> str | None:
    """Refuse anything but ``text/xml``; the ``charset`` parameter, if any.

    The charset decides how the envelope is read (over its XML declaration), as it does
    for the service (RFC 7303; X-Road does the same).
    """
    media, *params = (content_type or "").split(";")
    media = media.strip().lower()
    if media not in SOAP_CONTENT_TYPES:
        raise InvalidContentType(f"a SOAP 1.1 message must be text/xml, got "
                                 f"{media or 'no Content-Type'}")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"')
            try:
                codecs.lookup(charset)
            except LookupError as exc:
                raise InvalidContentType(f"charset {charset[:40]!r} is not supported") from exc
            return charset
    return None


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


def _only(parent: etree._Element, ns: str, name: str, where: str) -> etree._Element | None:
    found = parent.findall(f"{{{ns}}}{name}")
    if len(found) > 1:
        raise DuplicateHeaderField(f"{where} has {len(found)} {name} elements; expected one")
    return found[0] if found else None


def _identifier(element: etree._Element, parts: tuple[str, ...], object_types: tuple[str, ...],
                where: str) -> list[str | None]:
    object_type = element.get(f"{{{IDENT}}}objectType")
    if object_type not in object_types:
        raise InvalidSoap(f"{where} must have id:objectType {' or '.join(object_types)}, "
                          f"got {object_type!r}")
    values: list[str | None] = []
    for part in parts:
        child = _only(element, IDENT, part, where)
        values.append(None if child is None else _text(child))
    for child in element:
        if not isinstance(child.tag, str):
            continue
        if etree.QName(child).namespace != IDENT or etree.QName(child).localname not in parts:
            raise InvalidSoap(f"{where} has an unexpected element {child.tag}")
    return values


def _client(element: etree._Element) -> ClientId:
    values = _identifier(element, _CLIENT_PARTS, ("MEMBER", "SUBSYSTEM"), "header client")
    object_type = element.get(f"{{{IDENT}}}objectType")
    if (object_type == "SUBSYSTEM") != (values[3] is not None):
        raise InvalidClientIdentifier("header client: objectType and subsystemCode disagree")
    if any(v is None for v in values[:3]):
        raise InvalidClientIdentifier("header client needs xRoadInstance, memberClass and "
                                      "memberCode")
    try:
        return ClientId(*(v for v in values if v is not None))
    except InvalidIdentifier as exc:
        raise InvalidClientIdentifier(f"header client: {exc.message}") from exc


def _service(element: etree._Element) -> ServiceId:
    values = _identifier(element, _SERVICE_PARTS, ("SERVICE",), "header service")
    if any(v is None for v in values[:5]):
        raise InvalidServiceIdentifier("header service needs xRoadInstance, memberClass, "
                                       "memberCode, subsystemCode and serviceCode")
    try:
        provider = ClientId(*(str(v) for v in values[:4]))
        return ServiceId(provider, str(values[4]), values[5])
    except InvalidIdentifier as exc:
        raise InvalidServiceIdentifier(f"header service: {exc.message}") from exc


def read_header(envelope: etree._Element) -> SoapHeader:
    """The X-Road header elements of a parsed envelope; strict about structure."""
    if envelope.tag != f"{{{SOAP_ENV}}}Envelope":
        raise InvalidSoap("the document is not a SOAP 1.1 Envelope")
    header = _only(envelope, SOAP_ENV, "Header", "Envelope")
    body = _only(envelope, SOAP_ENV, "Body", "Envelope")
    if body is None:
        raise InvalidSoap("the SOAP Envelope has no Body")
    if header is None:
        raise MissingHeaderField("the SOAP Envelope has no Header with the X-Road fields")
    elements: dict[str, etree._Element | None] = {}
    for name in ("client", "service", "id", "protocolVersion", "userId", "issue"):
        elements[name] = _only(header, XROAD, name, "SOAP Header")
    subject = _only(header, SECSERVER, "dataSubject", "SOAP Header")
    for name in ("client", "service", "id", "protocolVersion"):
        if elements[name] is None:
            raise MissingHeaderField(f"the SOAP Header has no xrd:{name} element")
    client_el, service_el = elements["client"], elements["service"]
    id_el, version_el = elements["id"], elements["protocolVersion"]
    assert client_el is not None and service_el is not None
    assert id_el is not None and version_el is not None
    version = _text(version_el)
    if version != PROTOCOL_VERSION:
        raise InvalidProtocolVersion(f"protocolVersion must be {PROTOCOL_VERSION}, "
                                     f"got {version[:20]!r}")
    message_id = h.check_message_id(_text(id_el), "header id")
    optional: dict[str, str | None] = {}
    for name, element in (("userId", elements["userId"]), ("issue", elements["issue"]),
                          ("dataSubject", subject)):
        optional[name] = None if element is None else h.check_text(_text(element),
                                                                    f"header {name}")
    return SoapHeader(_client(client_el), _service(service_el), message_id, version,
                      optional["userId"], optional["issue"], optional["dataSubject"])


def parse_soap_request(data: bytes, content_type: str | None,
                       request_headers: list[tuple[str, str]],
                       limits: XmlLimits) -> ExchangeRequest:
    """Parse a SOAP request envelope posted to ``/``."""
    envelope = parse_xml(data, limits, check_content_type(content_type))
    header = read_header(envelope)
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    if len([c for c in body if isinstance(c.tag, str)]) != 1:
        raise InvalidSoap("the SOAP Body of a request must hold exactly one element")
    if not header.client.is_subsystem:
        raise InvalidClientIdentifier("header client names a member; the client of a call "
                                      "is always a subsystem")
    return ExchangeRequest(
        kind="soap", client=header.client, service=header.service, method="POST", path="",
        query="", headers=h.signed_headers(request_headers), message_id=header.message_id,
        user_id=header.user_id, issue=header.issue, data_subject=header.data_subject,
    )


def check_response(data: bytes, request: ExchangeRequest, limits: XmlLimits,
                   encoding: str | None = None) -> bool:
    """Check a service's SOAP response (``encoding``: its Content-Type charset); True
    when it is a fault.

    Raises InvalidXml/InvalidSoap for garbage and ``InconsistentHeader`` when the echoed
    X-Road header does not match the request.
    """
    envelope = parse_xml(data, limits, encoding)
    if envelope.tag != f"{{{SOAP_ENV}}}Envelope":
        raise InvalidSoap("the response is not a SOAP 1.1 Envelope")
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    if body is None:
        raise InvalidSoap("the response has no SOAP Body")
    if body.find(f"{{{SOAP_ENV}}}Fault") is not None:
        return True
    try:
        header = read_header(envelope)
    except MissingHeaderField as exc:
        raise InconsistentHeader("the response does not echo the request's X-Road header "
                                 f"({exc.message})") from exc
    for field, echoed, sent in (("client", header.client, request.client),
                                ("service", header.service, request.service),
                                ("id", header.message_id, request.message_id),
                                ("userId", header.user_id, request.user_id)):
        if echoed != sent:  # X-Road's consistency check: these four must be echoed
            raise InconsistentHeader(f"the response's X-Road header does not echo the "
                                     f"request's {field}")
    return False


class InconsistentHeader(InvalidSoap):
    code = "InconsistentResponse"


def render_fault(code: str, message: str, detail: str | None = None) -> bytes:
    """A SOAP 1.1 fault in X-Road's layout (faultcode is the X-Road error code)."""
    detail_xml = (f"<detail><faultDetail xmlns=\"\">{escape(detail)}</faultDetail></detail>"
                  if detail else "")
    return (
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>"
        f"<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"{SOAP_ENV}\"><SOAP-ENV:Body><SOAP-ENV:Fault>"
        f"<faultcode>{escape(code)}</faultcode><faultstring>{escape(message)}</faultstring>"
        f"{detail_xml}</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()


def render_header(header: SoapHeader, prefix_xrd: str = "xrd", prefix_id: str = "id") -> str:
    """The X-Road header elements as XML text (used by tests and examples)."""
    x, i = prefix_xrd, prefix_id

    def ident(tag: str, object_type: str, names: tuple[str, ...],
              values: tuple[str | None, ...]) -> str:
        inner = "".join(f"<{i}:{n}>{escape(v)}</{i}:{n}>" for n, v in zip(names, values,
                                                                            strict=False)
                        if v is not None)
        return f"<{x}:{tag} {i}:objectType=\"{object_type}\">{inner}</{x}:{tag}>"

    client = header.client
    service = header.service
    parts = [
        ident("client", "SUBSYSTEM" if client.is_subsystem else "MEMBER", _CLIENT_PARTS,
              (client.instance, client.member_class, client.member_code, client.subsystem)),
        ident("service", "SERVICE", _SERVICE_PARTS,
              (*service.provider.parts(), service.code, service.version)),
        f"<{x}:id>{escape(header.message_id)}</{x}:id>",
        f"<{x}:protocolVersion>{escape(header.protocol_version)}</{x}:protocolVersion>",
    ]
    if header.user_id is not None:
        parts.append(f"<{x}:userId>{escape(header.user_id)}</{x}:userId>")
    if header.issue is not None:
        parts.append(f"<{x}:issue>{escape(header.issue)}</{x}:issue>")
    if header.data_subject is not None:
        parts.append(f"<ss:dataSubject xmlns:ss=\"{SECSERVER}\">"
                     f"{escape(header.data_subject)}</ss:dataSubject>")
    return "".join(parts)


def render_envelope(header: SoapHeader, body_xml: str) -> bytes:
    """A complete request or response envelope (tests, examples)."""
    return (
        f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><SOAP-ENV:Envelope "
        f"xmlns:SOAP-ENV=\"{SOAP_ENV}\" xmlns:xrd=\"{XROAD}\" xmlns:id=\"{IDENT}\">"
        f"<SOAP-ENV:Header>{render_header(header)}</SOAP-ENV:Header>"
        f"<SOAP-ENV:Body>{body_xml}</SOAP-ENV:Body></SOAP-ENV:Envelope>"
    ).encode()

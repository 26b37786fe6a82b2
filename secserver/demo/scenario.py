"""The demo's scenario: what the members' information systems send, and what must come back.

The demo plays both information systems. TOYONO's elder-care system calls OTTA's REST
``tag-locations`` service through TOYONO's security server; OTTA's tag system calls
TOYONO's SOAP ``resident-registry`` through OTTA's security server. Requests are built
and answers judged by pure functions here; :func:`send` is the only I/O.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree

from secserver.demo.layout import (
    ACL_REFRESH_INTERVAL,
    HOST,
    OTTA_TAGS,
    RESIDENT_REGISTRY,
    TAG_LOCATIONS,
    TOYONO_ELDERCARE,
)
from secserver.identifiers import ClientId, ServiceId

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
XROAD = "http://x-road.eu/xsd/xroad.xsd"
XROAD_ID = "http://x-road.eu/xsd/identifiers"
REGISTRY_NS = "http://toyono.example.jp/eldercare/resident-registry"
ACCESS_DENIED = "Server.ServerProxy.AccessDenied"
CONSENTED_RESIDENT = "R-1001"  # consented when the demo registered OTTA's service
NEW_RESIDENT = "R-1002"  # consents during the demo (step 5)
CONSENT_PURPOSE = "elder-care watch: find residents who wander"
TIMEOUT = 30.0
CONSENT_PICKUP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes = b""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@dataclass(frozen=True)
class Outcome:
    """How one step went: ``ok`` when it behaved as expected, and what was seen."""

    ok: bool
    summary: str


@dataclass(frozen=True)
class Step:
    number: int
    title: str
    call: str  # one line: who calls what
    expect: str  # one line: what must happen
    outcome: Outcome
    notes: tuple[str, ...] = field(default=())


def send(port: int, request: Request, timeout: float = TIMEOUT) -> Answer:
    """Send ``request`` to the security server's client port on 127.0.0.1."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(request.method, request.target, body=request.body or None,
                           headers=dict(request.headers))
        response = connection.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(response.status, response.reason, headers, body)
    finally:
        connection.close()


# --- REST ---------------------------------------------------------------------------------

def rest_request(client: ClientId, service: ServiceId, method: str, path: str, *,
                 data_subject: str | None = None, body: Any = None) -> Request:
    """An X-Road REST call ``METHOD /r1/{serviceId}{path}`` as an information system sends it."""
    headers = {"X-Road-Client": str(client), "Accept": "application/json",
               "X-Road-UserId": "JP-DEV-demo"}
    if data_subject is not None:
        headers["X-Road-Data-Subject"] = data_subject
    data = b""
    if body is not None:
        data = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    return Request(method, f"/r1/{service.url_path()}{path}", headers, data)


def error_of(answer: Answer) -> tuple[str, str]:
    """The X-Road error code and message of an answer (REST JSON or SOAP fault)."""
    code = answer.header("X-Road-Error") or ""
    message = ""
    data = answer.json()
    if isinstance(data, dict):
        code = code or str(data.get("type", ""))
        message = str(data.get("message", ""))
    else:
        fault = soap_fault(answer.body)
        if fault is not None:
            code = code or fault[0]
            message = fault[1]
    return code, message


def judge_locations(answer: Answer, resident: str) -> Outcome:
    data = answer.json()
    if answer.status != 200 or not isinstance(data, dict):
        code, message = error_of(answer)
        return Outcome(False, f"{answer.status} {code or answer.reason}: {message}".strip())
    locations = data.get("locations")
    if data.get("residentId") != resident or not isinstance(locations, list) or not locations:
        return Outcome(False, f"200 but an unexpected body: {answer.body[:200]!r}")
    missing = [h for h in ("X-Road-Id", "X-Road-Request-Hash") if not answer.header(h)]
    if missing:
        return Outcome(False, f"200 but without the response header(s) {', '.join(missing)}")
    last = locations[-1]
    return Outcome(True, f"200 OK: {len(locations)} position(s) of {resident}, last "
                         f"{last.get('place')} at {last.get('at')}; "
                         f"X-Road-Id {answer.header('X-Road-Id')}")


def judge_refused(answer: Answer, expected_code: str, must_mention: str) -> Outcome:
    code, message = error_of(answer)
    seen = f"{answer.status} {code}: {message}".strip()
    if answer.status < 400:
        return Outcome(False, f"expected a refusal, but the call passed: {seen}")
    if code != expected_code:
        return Outcome(False, f"refused, but with {seen}; expected {expected_code}")
    if must_mention.lower() not in message.lower():
        return Outcome(False, f"refused with {code}, but the message does not mention "
                              f"{must_mention!r}: {message}")
    return Outcome(True, f"refused as expected: {seen}")


# --- SOAP ---------------------------------------------------------------------------------

def _identifier_xml(tag: str, object_type: str, parts: Mapping[str, str | None]) -> str:
    inner = "".join(f"<id:{name}>{escape(value)}</id:{name}>"
                    for name, value in parts.items() if value is not None)
    return f'<xrd:{tag} id:objectType="{object_type}">{inner}</xrd:{tag}>'


def soap_envelope(client: ClientId, service: ServiceId, message_id: str,
                  resident_id: str) -> bytes:
    """A getResident request in X-Road SOAP (message protocol 4.0) form."""
    client_xml = _identifier_xml("client", "SUBSYSTEM" if client.subsystem else "MEMBER", {
        "xRoadInstance": client.instance, "memberClass": client.member_class,
        "memberCode": client.member_code, "subsystemCode": client.subsystem})
    service_xml = _identifier_xml("service", "SERVICE", {
        "xRoadInstance": service.provider.instance,
        "memberClass": service.provider.member_class,
        "memberCode": service.provider.member_code,
        "subsystemCode": service.provider.subsystem, "serviceCode": service.code,
        "serviceVersion": service.version})
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<SOAP-ENV:Envelope xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:xrd="{XROAD}" '
        f'xmlns:id="{XROAD_ID}" xmlns:rr="{REGISTRY_NS}">'
        f"<SOAP-ENV:Header>{client_xml}{service_xml}"
        f"<xrd:id>{escape(message_id)}</xrd:id><xrd:userId>JP-DEV-demo</xrd:userId>"
        "<xrd:protocolVersion>4.0</xrd:protocolVersion></SOAP-ENV:Header>"
        f"<SOAP-ENV:Body><rr:getResident><rr:residentId>{escape(resident_id)}</rr:residentId>"
        "</rr:getResident></SOAP-ENV:Body></SOAP-ENV:Envelope>").encode()


def soap_request(client: ClientId, service: ServiceId, resident_id: str,
                 message_id: str) -> Request:
    return Request("POST", "/", {"Content-Type": "text/xml; charset=utf-8",
                                 "SOAPAction": '""'},
                   soap_envelope(client, service, message_id, resident_id))


def _parse(body: bytes) -> etree._Element | None:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        return None
    if root.getroottree().docinfo.internalDTD is not None:
        return None
    return root


def soap_fault(body: bytes) -> tuple[str, str] | None:
    root = _parse(body)
    if root is None:
        return None
    fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    if fault is None:
        return None
    return (fault.findtext("faultcode") or "").strip(), (fault.findtext("faultstring") or "")


def judge_resident(answer: Answer, resident_id: str, message_id: str) -> Outcome:
    root = _parse(answer.body)
    if answer.status != 200 or root is None:
        code, message = error_of(answer)
        return Outcome(False, f"{answer.status} {code or answer.reason}: {message}".strip())
    result = root.find(f"{{{SOAP_ENV}}}Body/{{{REGISTRY_NS}}}getResidentResponse")
    if result is None:
        return Outcome(False, f"200 but no getResidentResponse: {answer.body[:200]!r}")
    values = {etree.QName(e).localname: (e.text or "") for e in result}
    if values.get("residentId") != resident_id:
        return Outcome(False, f"200 but for resident {values.get('residentId')!r}")
    echoed_id = root.findtext(f"{{{SOAP_ENV}}}Header/{{{XROAD}}}id")
    if echoed_id != message_id:
        return Outcome(False, f"200 but the response echoes id {echoed_id!r}, "
                              f"not {message_id!r}")
    return Outcome(True, f"200 OK: {values.get('name')}, district {values.get('district')}, "
                         f"care level {values.get('careLevel')}; X-Road headers echoed "
                         f"(id {echoed_id})")


# --- the scenario -------------------------------------------------------------------------

def run_scenario(toyono_client_port: int, otta_client_port: int,
                 record_consent: Callable[[str], str],
                 on_step: Callable[[Step], None]) -> list[Step]:
    """Run steps 1-5; ``record_consent(resident)`` stores a consent and describes it."""
    steps: list[Step] = []

    def done(step: Step) -> None:
        steps.append(step)
        on_step(step)

    def rest(method: str, path: str, subject: str | None,
             body: Any = None) -> Answer:
        return send(toyono_client_port, rest_request(
            TOYONO_ELDERCARE, TAG_LOCATIONS, method, path, data_subject=subject, body=body))

    locations = "/residents/{}/locations?since=2026-11-21T08:00:00%2B09:00"
    answer = rest("GET", locations.format(CONSENTED_RESIDENT), CONSENTED_RESIDENT)
    done(Step(1, "allowed REST call",
              f"REST {TOYONO_ELDERCARE} -> {TAG_LOCATIONS}: GET "
              f"{locations.format(CONSENTED_RESIDENT)} (data subject {CONSENTED_RESIDENT}, "
              "who has consented)",
              "200 with the resident's positions",
              judge_locations(answer, CONSENTED_RESIDENT)))

    message_id = str(uuid.uuid4())
    answer = send(otta_client_port,
                  soap_request(OTTA_TAGS, RESIDENT_REGISTRY, CONSENTED_RESIDENT, message_id))
    done(Step(2, "allowed SOAP call",
              f"SOAP {OTTA_TAGS} -> {RESIDENT_REGISTRY}: getResident({CONSENTED_RESIDENT})",
              "200 with the resident, X-Road headers echoed",
              judge_resident(answer, CONSENTED_RESIDENT, message_id)))

    answer = rest("POST", "/tags/TAG-0001/alerts", CONSENTED_RESIDENT,
                  body={"type": "sos", "message": "demo: no right to raise alerts"})
    done(Step(3, "call without a right",
              f"REST {TOYONO_ELDERCARE} -> {TAG_LOCATIONS}: POST /tags/TAG-0001/alerts "
              "(TOYONO may read positions, not raise alerts)",
              f"refused with {ACCESS_DENIED}",
              judge_refused(answer, ACCESS_DENIED, "right")))

    path = locations.format(NEW_RESIDENT)
    answer = rest("GET", path, NEW_RESIDENT)
    done(Step(4, "personal data without consent",
              f"REST {TOYONO_ELDERCARE} -> {TAG_LOCATIONS}: GET {path} "
              f"(data subject {NEW_RESIDENT}, no consent)",
              f"refused with {ACCESS_DENIED} (consent missing)",
              judge_refused(answer, ACCESS_DENIED, "consent")))

    recorded = record_consent(NEW_RESIDENT)
    # The node re-reads its registry every ACL_REFRESH_INTERVAL seconds: wait that long,
    # and give a loaded machine a few more rounds before calling it a failure.
    started = time.monotonic()
    time.sleep(2 * ACL_REFRESH_INTERVAL)
    answer = rest("GET", path, NEW_RESIDENT)
    while (answer.status == 403 and time.monotonic() - started < CONSENT_PICKUP_TIMEOUT
           and "consent" in error_of(answer)[1].lower()):
        time.sleep(ACL_REFRESH_INTERVAL)
        answer = rest("GET", path, NEW_RESIDENT)
    done(Step(5, "same call after consent",
              f"consent recorded: {recorded}; then the call of step 4 again",
              "200 with the resident's positions",
              judge_locations(answer, NEW_RESIDENT),
              (f"the provider's node applied the new consent within "
               f"{time.monotonic() - started:.1f} s",)))
    return steps


def render_step(step: Step) -> str:
    mark = "ok  " if step.outcome.ok else "FAIL"
    lines = [f"[{step.number}] {mark} {step.title}", f"         {step.call}",
             f"         expected: {step.expect}", f"         got: {step.outcome.summary}"]
    lines.extend(f"         {note}" for note in step.notes)
    return "\n".join(lines)

"""A real third-party SOAP client (zeep) calls TOYONO's resident-registry through both nodes.

Everything is real and on 127.0.0.1: development PKI, a development TSA, the sample SOAP
service, and both security servers as ``secserver serve`` processes talking mutual TLS.
zeep loads the WSDL that ships with secserver, fills the X-Road header elements from the
WSDL's header parts, and posts the envelope to OTTA's security server (the client's own
node), exactly as an X-Road SOAP client does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import zeep
import zeep.transports
from lxml import etree
from zeep.exceptions import Fault

from secserver.acl import registry
from secserver.config import load_config
from secserver.demo.layout import (
    OTTA_TAGS,
    RESIDENT_REGISTRY,
    Layout,
    Ports,
    write_layout,
)
from secserver.demo.processes import ProcessGroup
from secserver.demo.registration import ACTOR, node_session, register_all
from secserver.demo.run import start_everything
from secserver.examples.resident_registry import TNS, wsdl_bytes
from secserver.identifiers import ClientId

pytestmark = pytest.mark.integration

OTTA_BILLING = ClientId("JP-DEV", "COM", "OTTA", "BILLING")  # local to OTTA, no right
BINDING = f"{{{TNS}}}residentRegistryBinding"


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    root = tmp_path_factory.mktemp("zeep")
    layout = write_layout(root, Ports.free())
    toyono = load_config(layout.consumer_config)
    otta = load_config(layout.provider_config)
    register_all(toyono, otta, layout.resident_registry_url, layout.tag_locations_url,
                 datetime.now(UTC))
    with node_session(otta) as session:
        registry.add_subsystem(session, ACTOR, OTTA_BILLING, local=True, auth="none")
    group = ProcessGroup(layout.logs)
    try:
        start_everything(group, layout, lambda text: None)
        yield layout
    finally:
        group.stop_all()


def xroad_header(client: ClientId, message_id: str) -> dict[str, Any]:
    service = RESIDENT_REGISTRY
    return {
        "client": {"xRoadInstance": client.instance, "memberClass": client.member_class,
                   "memberCode": client.member_code, "subsystemCode": client.subsystem,
                   "objectType": "SUBSYSTEM"},
        "service": {"xRoadInstance": service.provider.instance,
                    "memberClass": service.provider.member_class,
                    "memberCode": service.provider.member_code,
                    "subsystemCode": service.provider.subsystem,
                    "serviceCode": service.code, "objectType": "SERVICE"},
        "id": message_id,
        "userId": "JP-zeep-test",
        "protocolVersion": "4.0",
    }


@pytest.fixture(scope="module")
def wsdl_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wsdl") / "resident_registry.wsdl"
    path.write_bytes(wsdl_bytes())
    return path


def zeep_service(exchange: Layout, wsdl_file: Path) -> Any:
    """zeep on the shipped WSDL, pointed at OTTA's security server client port."""
    session = requests.Session()
    session.trust_env = False  # never a proxy from the environment for 127.0.0.1
    # zeep's annotations are partial: call it through Any.
    transport_class: Any = zeep.transports.Transport
    client_class: Any = zeep.Client
    client = client_class(str(wsdl_file), transport=transport_class(session=session, timeout=30),
                          settings=zeep.Settings(strict=True))
    return client.create_service(BINDING, f"http://127.0.0.1:{exchange.ports.otta_client}/")


def test_zeep_gets_a_resident_through_both_security_servers(exchange: Layout,
                                                           wsdl_file: Path) -> None:
    service = zeep_service(exchange, wsdl_file)
    message_id = str(uuid.uuid4())
    result = service.getResident(residentId="R-1003",
                                 _soapheaders=xroad_header(OTTA_TAGS, message_id))
    assert result.body.residentId == "R-1003"
    assert result.body.name == "鈴木 ハル"
    assert result.body.district == "南郷"
    assert result.body.careLevel == "care-3"
    # The X-Road header comes back as the client sent it.
    assert result.header.id == message_id
    assert result.header.protocolVersion == "4.0"
    assert result.header.userId == "JP-zeep-test"
    assert result.header.client.memberCode == "OTTA"
    assert result.header.client.subsystemCode == "TAGS"
    assert result.header.service.serviceCode == "resident-registry"


def test_two_calls_on_one_zeep_client_get_separate_answers(exchange: Layout,
                                                          wsdl_file: Path) -> None:
    service = zeep_service(exchange, wsdl_file)
    names = [service.getResident(residentId=resident,
                                 _soapheaders=xroad_header(OTTA_TAGS, str(uuid.uuid4())))
             .body.name for resident in ("R-1001", "R-1002")]
    assert names == ["Yamada Hanako", "Sato Ichiro"]


def test_exchange_refusal_is_a_zeep_fault_with_the_xroad_code(exchange: Layout,
                                                             wsdl_file: Path) -> None:
    service = zeep_service(exchange, wsdl_file)
    with pytest.raises(Fault) as info:
        service.getResident(residentId="R-1001",
                            _soapheaders=xroad_header(OTTA_BILLING, str(uuid.uuid4())))
    assert info.value.code == "Server.ServerProxy.AccessDenied"
    assert str(OTTA_BILLING) in (info.value.message or "")


def test_replayed_message_id_is_a_zeep_fault(exchange: Layout, wsdl_file: Path) -> None:
    service = zeep_service(exchange, wsdl_file)
    header = xroad_header(OTTA_TAGS, str(uuid.uuid4()))
    service.getResident(residentId="R-1001", _soapheaders=header)
    with pytest.raises(Fault) as info:
        service.getResident(residentId="R-1001", _soapheaders=header)
    assert info.value.code == "Server.ServerProxy.DuplicateMessageId"


def test_service_fault_passes_through_unchanged(exchange: Layout, wsdl_file: Path) -> None:
    service = zeep_service(exchange, wsdl_file)
    with pytest.raises(Fault) as info:
        service.getResident(residentId="R-9999",
                            _soapheaders=xroad_header(OTTA_TAGS, str(uuid.uuid4())))
    assert info.value.message == "no resident R-9999 in TOYONO's registry"
    assert info.value.code is not None and info.value.code.endswith("Client")


def test_wsdl_is_served_by_the_service_itself(exchange: Layout) -> None:
    session = requests.Session()
    session.trust_env = False
    response = session.get(f"{exchange.resident_registry_url}?wsdl", timeout=10)
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    assert root.get("targetNamespace") == TNS

from __future__ import annotations

from secserver.errors import SecServerError
from secserver.routing.errors import (
    AccessDenied,
    InvalidRequest,
    RelayedError,
    ServiceTimeout,
    qualified_code,
)


def test_client_fault_is_client_on_the_consumer_side() -> None:
    assert qualified_code(InvalidRequest("x"), "ClientProxy") == "Client.InvalidRequest"
    assert qualified_code(InvalidRequest("x"), "ServerProxy") == "Server.ServerProxy.InvalidRequest"


def test_server_faults_carry_the_side() -> None:
    assert qualified_code(AccessDenied("x"), "ClientProxy") == "Server.ClientProxy.AccessDenied"
    assert qualified_code(ServiceTimeout("x"), "ServerProxy") == \
        "Server.ServerProxy.ServiceFailed.Timeout"


def test_foreign_bare_codes_are_prefixed_and_full_codes_kept() -> None:
    assert qualified_code(SecServerError("x", code="LoggingFailed"), "ServerProxy") == \
        "Server.ServerProxy.LoggingFailed"
    relayed = RelayedError("Server.ServerProxy.AccessDenied", 403, "no")
    assert qualified_code(relayed, "ClientProxy") == "Server.ServerProxy.AccessDenied"
    assert relayed.http_status == 403

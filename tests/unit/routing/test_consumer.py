from __future__ import annotations

import hashlib
import ipaddress
import json

import pytest

from secserver.acl.snapshot import SubsystemEntry
from secserver.identifiers import ClientId
from secserver.routing.body import SpooledBody
from secserver.routing.consumer import authorise_caller, relayed_error
from secserver.routing.errors import AccessDenied, SslAuthenticationFailed, UnknownMember
from secserver.routing.peer import PeerResponse
from secserver.routing.soap import render_fault

CLIENT = ClientId.parse("JP-DEV/GOV/TOYONO/X")
LOOPBACK = ipaddress.ip_address("127.0.0.1")
OTHER = ipaddress.ip_address("192.0.2.7")


def entry(auth: str, *, sha: str | None = None, allow: tuple[str, ...] = ()) -> SubsystemEntry:
    return SubsystemEntry(CLIENT, True, auth, sha, allow)


def test_unknown_client() -> None:
    with pytest.raises(UnknownMember):
        authorise_caller(None, str(CLIENT), None, LOOPBACK)


def test_tls_pin() -> None:
    der = b"certificate bytes"
    pinned = entry("tls", sha=hashlib.sha256(der).hexdigest().upper())
    authorise_caller(pinned, str(CLIENT), der, OTHER)
    with pytest.raises(SslAuthenticationFailed):
        authorise_caller(pinned, str(CLIENT), b"another", OTHER)
    with pytest.raises(SslAuthenticationFailed):
        authorise_caller(pinned, str(CLIENT), None, LOOPBACK)


def test_allowlist_and_none() -> None:
    allow = entry("allowlist", allow=("192.0.2.0/24", "not a network"))
    authorise_caller(allow, str(CLIENT), None, OTHER)
    with pytest.raises(AccessDenied):
        authorise_caller(allow, str(CLIENT), None, LOOPBACK)
    authorise_caller(entry("none"), str(CLIENT), None, LOOPBACK)
    authorise_caller(entry("none"), str(CLIENT), None, ipaddress.ip_address("::1"))
    with pytest.raises(AccessDenied):
        authorise_caller(entry("none"), str(CLIENT), None, OTHER)
    with pytest.raises(AccessDenied):
        authorise_caller(entry("magic"), str(CLIENT), None, LOOPBACK)


def test_relayed_errors_keep_code_message_and_detail() -> None:
    body = json.dumps({"type": "Server.ServerProxy.AccessDenied", "message": "no right",
                       "detail": "d"}).encode()
    relayed = relayed_error(PeerResponse(403, [], SpooledBody.from_bytes(body)),
                            "Server.ServerProxy.AccessDenied")
    assert (relayed.code, relayed.http_status, relayed.message, relayed.detail) == (
        "Server.ServerProxy.AccessDenied", 403, "no right", "d")
    fault = render_fault("Server.ServerProxy.InvalidMessage", "mismatch", "path")
    relayed = relayed_error(PeerResponse(500, [], SpooledBody.from_bytes(fault)),
                            "Server.ServerProxy.InvalidMessage")
    assert (relayed.message, relayed.detail, relayed.http_status) == ("mismatch", "path", 500)
    garbage = relayed_error(PeerResponse(200, [], SpooledBody.from_bytes(b"<<<")),
                            "Server.ServerProxy.X.Y")
    assert garbage.http_status == 502 and garbage.code == "Server.ServerProxy.X.Y"


@pytest.mark.parametrize("code", ["Client.InvalidRequest", "Server.ClientProxy.AccessDenied",
                                  "X.Y", "Server.ServerProxy.", "Server.ServerProxy.A\nB",
                                  "Server.ServerProxy." + "A" * 300])
def test_a_provider_can_only_relay_provider_codes(code: str) -> None:
    # the error is unsigned: a provider must not pose as the caller's own node or blame
    # the caller's request
    body = json.dumps({"type": code, "message": "m"}).encode()
    relayed = relayed_error(PeerResponse(400, [], SpooledBody.from_bytes(body)), code)
    assert relayed.code == "Server.ClientProxy.InconsistentResponse"
    assert relayed.http_status == 502


def test_new_message_id_is_a_canonical_random_uuid4() -> None:
    import uuid

    from secserver.routing.consumer import new_message_id

    ids = [new_message_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and len(text) == 36  # canonical: lower case, hyphens
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # every hex digit but the version digit and the variant's top bits varies
    for pos in range(36):
        seen = {text[pos] for text in ids}
        if pos in (8, 13, 18, 23):
            assert seen == {"-"}
        elif pos == 14:
            assert seen == {"4"}
        elif pos == 19:
            assert seen == set("89ab")
        else:
            assert len(seen) == 16

"""The exchange end to end: real ``secserver serve`` processes, real mutual TLS, a real
backend process. REST with JSON, binary and multipart bodies, SOAP, X-Road headers."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pytest
from exchange_harness import (
    ALLOWLISTED,
    BYTES,
    CLIENT,
    CONSENTED_SUBJECT,
    ECHO,
    LIMITED,
    PERSONAL,
    SOAP_ECHO,
    Exchange,
    exchange_fixture,  # noqa: F401
    running_exchange,
)

from secserver.routing.soap import SoapHeader, render_envelope

pytestmark = pytest.mark.integration


def echo_of(body: bytes) -> dict[str, object]:
    value = json.loads(body)
    assert isinstance(value, dict)
    return value


def test_rest_get_passes_path_query_and_x_road_headers(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(ECHO, "/items/42?q=a%20b&x=1"),
                           headers={"X-Road-Id": "id-get-1", "X-Road-UserId": "EE123",
                                    "X-Road-Issue": "ticket-7", "Accept": "application/json"})
    assert answer.status == 200, answer.body
    echo = echo_of(answer.body)
    assert echo["method"] == "GET"
    assert echo["path"] == "/echo/items/42"
    assert echo["query"] == "q=a%20b&x=1"
    headers = echo["headers"]
    assert isinstance(headers, dict)
    assert headers["x-road-client"] == str(CLIENT)
    assert headers["x-road-id"] == "id-get-1"
    assert headers["x-road-userid"] == "EE123"
    assert headers["x-road-issue"] == "ticket-7"
    assert headers["accept"] == "application/json"
    assert "x-road-signature" not in headers and "x-road-signed-document" not in headers
    assert answer.header("X-Road-Client") == str(CLIENT)
    assert answer.header("X-Road-Service") == str(ECHO)
    assert answer.header("X-Road-Id") == "id-get-1"
    request_hash = answer.header("X-Road-Request-Hash")
    assert request_hash is not None and len(request_hash) == 88
    assert answer.header("X-Road-Error") is None
    assert answer.header("X-Road-Signature") is None
    assert answer.header("X-Backend") == "echo"


def test_message_id_is_generated_when_missing(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(ECHO))
    assert answer.status == 200, answer.body
    message_id = answer.header("X-Road-Id")
    assert message_id is not None
    uuid.UUID(message_id)
    assert echo_of(answer.body)["headers"]["x-road-id"] == message_id  # type: ignore[index]


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_rest_methods_with_json(exchange: Exchange, method: str) -> None:
    body = json.dumps({"name": "Yamada", "n": [1, 2, 3]}).encode()
    answer = exchange.call(method, exchange.rest_target(ECHO, "/things/1"), body=body,
                           headers={"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    echo = echo_of(answer.body)
    assert echo["method"] == method
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["headers"]["content-type"] == "application/json"  # type: ignore[index]


def test_binary_body_passes_unchanged(exchange: Exchange) -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)  # above the spool threshold
    answer = exchange.call("PUT", exchange.rest_target(ECHO, "/blob"), body=body,
                           headers={"Content-Type": "application/octet-stream"})
    assert answer.status == 200, answer.body
    echo = echo_of(answer.body)
    assert echo["body_size"] == len(body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_multipart_body_passes_unchanged(exchange: Exchange) -> None:
    boundary = "----secserver-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"a.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + bytes(range(256)) + f"\r\n--{boundary}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={boundary}"
    answer = exchange.call("POST", exchange.rest_target(ECHO, "/upload"), body=body,
                           headers={"Content-Type": content_type})
    assert answer.status == 200, answer.body
    echo = echo_of(answer.body)
    assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert echo["headers"]["content-type"] == content_type  # type: ignore[index]


def test_large_binary_response(exchange: Exchange) -> None:
    size = 5 * 1024 * 1024 + 3
    answer = exchange.call("GET", exchange.rest_target(BYTES, f"/{size}"))
    assert answer.status == 200, answer.body[:300]
    expected = (bytes(range(256)) * 1024 * 21)[:size]
    assert answer.body == expected
    assert answer.header("Content-Type") == "application/octet-stream"


def test_endpoint_right_allows_only_its_paths(exchange: Exchange) -> None:
    allowed = exchange.call("GET", exchange.rest_target(LIMITED, "/public/a/b"))
    assert allowed.status == 200, allowed.body
    denied = exchange.call("GET", exchange.rest_target(LIMITED, "/private/a"))
    assert denied.status == 403
    assert denied.header("X-Road-Error") == "Server.ServerProxy.AccessDenied"


def test_consent_decides_personal_data(exchange: Exchange) -> None:
    target = exchange.rest_target(PERSONAL, "/residents/1")
    allowed = exchange.call("GET", target, headers={"X-Road-Data-Subject": CONSENTED_SUBJECT})
    assert allowed.status == 200, allowed.body
    assert echo_of(allowed.body)["headers"]["x-road-data-subject"] == CONSENTED_SUBJECT  # type: ignore[index]
    refused = exchange.call("GET", target, headers={"X-Road-Data-Subject": "JP-PERSON-9"})
    assert refused.status == 403
    assert refused.header("X-Road-Error") == "Server.ServerProxy.AccessDenied"
    assert "consent" in json.loads(refused.body)["message"]
    missing = exchange.call("GET", target)
    assert missing.status == 403


def test_soap_request_and_echoed_header(exchange: Exchange) -> None:
    header = SoapHeader(CLIENT, SOAP_ECHO, "soap-id-1", "4.0", user_id="EE1")
    envelope = render_envelope(header, "<echo xmlns=\"urn:test\">hi</echo>")
    answer = exchange.call("POST", "/", body=envelope, client=None,
                           headers={"Content-Type": "text/xml; charset=utf-8",
                                    "SOAPAction": "\"echo\""})
    assert answer.status == 200, answer.body
    assert b"echoResponse" in answer.body
    assert b"soap-id-1" in answer.body  # the header comes back echoed
    assert answer.header("X-Road-Id") == "soap-id-1"
    assert answer.header("X-Road-Service") == str(SOAP_ECHO)


def test_allowlisted_subsystem_refused_from_loopback(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(ECHO), client=ALLOWLISTED)
    assert answer.status == 403
    assert answer.header("X-Road-Error") == "Server.ClientProxy.AccessDenied"


def test_admin_health(exchange: Exchange) -> None:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", exchange.layout.ports.toyono_admin,
                                            timeout=10)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        state = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 200
    assert state["status"] in ("ok", "degraded")
    assert state["database"]["status"] == "ok"
    assert "log" in state and "tsa" in state


def test_root_has_no_secrets_in_errors(exchange: Exchange, tmp_path: Path) -> None:
    answer = exchange.call("GET", exchange.rest_target(ECHO).replace("/echo", "/nothing"))
    assert answer.status >= 400
    text = answer.body.decode()
    assert "Traceback" not in text and "PRIVATE KEY" not in text
    assert str(exchange.backend_port) not in text


@pytest.mark.postgres
def test_exchange_on_postgresql(tmp_path: Path, postgres_server: str) -> None:
    from postgres import create_database

    consumer_env = {"SECSERVER_DATABASE_URL": create_database(postgres_server)}
    provider_env = {"SECSERVER_DATABASE_URL": create_database(postgres_server)}
    with running_exchange(tmp_path, consumer_env=consumer_env,
                          provider_env=provider_env) as pg:
        answer = pg.call("POST", pg.rest_target(ECHO, "/pg"), body=b"{}",
                         headers={"Content-Type": "application/json", "X-Road-Id": "pg-1"})
        assert answer.status == 200, answer.body
        again = pg.call("POST", pg.rest_target(ECHO, "/pg"), body=b"{}",
                        headers={"X-Road-Id": "pg-1"})
        assert again.header("X-Road-Error") == "Server.ServerProxy.DuplicateMessageId"
        denied = pg.call("GET", pg.rest_target(LIMITED, "/private/x"))
        assert denied.header("X-Road-Error") == "Server.ServerProxy.AccessDenied"


def issue_client_certificate(pki: Path, folder: Path, name: str) -> tuple[Path, Path, str]:
    """An information system's TLS client certificate from the development CA."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import serialization

    from secserver.signing.keys import load_certificate, load_private_key
    from secserver.signing.pki import generate_key, issue_certificate, plain_subject

    now = datetime.now(UTC)
    key = generate_key("ec-p256")
    certificate = issue_certificate(
        subject=plain_subject("JP-DEV", name), public_key=key.public_key(),
        issuer_key=load_private_key(pki / "ca/ca.key"), issuer=load_certificate(pki / "ca/ca.crt"),
        profile="tls", not_before=now - timedelta(hours=1), not_after=now + timedelta(days=1))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    der = certificate.public_bytes(serialization.Encoding.DER)
    return cert_path, key_path, hashlib.sha256(der).hexdigest()


def test_client_port_over_tls_with_pinned_client_certificate(tmp_path: Path) -> None:
    import http.client
    import ssl
    import time

    from exchange_harness import PINNED

    from secserver.acl import registry
    from secserver.demo.registration import node_session

    root = tmp_path / "tls"
    server_dir = root / "pki/servers/GOV.TOYONO.SS1"
    env = {"SECSERVER_CLIENT_TLS": "true",
           "SECSERVER_CLIENT_CERT_FILE": str(server_dir / "tls.crt"),
           "SECSERVER_CLIENT_KEY_FILE": str(server_dir / "tls.key")}
    with running_exchange(root, consumer_env=env, start_nodes=False) as tls:
        good_cert, good_key, fingerprint = issue_client_certificate(tls.layout.pki, tmp_path,
                                                                    "is-good")
        other_cert, other_key, _ = issue_client_certificate(tls.layout.pki, tmp_path, "is-other")
        with node_session(tls.config(tls.layout.toyono)) as session:
            registry.update_subsystem(session, "tests", PINNED, tls_cert_sha256=fingerprint)
        with node_session(tls.config(tls.layout.otta)) as session:
            registry.grant(session, "tests", str(PINNED), ECHO)
        tls.provider = tls.start_node(tls.layout.otta)
        # /healthz is on the plain admin port; the client port now speaks TLS only
        tls.consumer = tls.start_node(tls.layout.toyono)

        def call(cert: tuple[Path, Path] | None) -> tuple[int, str | None]:
            context = ssl.create_default_context(cafile=str(tls.layout.pki / "ca/ca.crt"))
            if cert is not None:
                context.load_cert_chain(*cert)
            connection = http.client.HTTPSConnection("127.0.0.1", tls.consumer_port,
                                                     context=context, timeout=30)
            try:
                connection.request("GET", tls.rest_target(ECHO, "/tls"),
                                   headers={"X-Road-Client": str(PINNED)})
                response = connection.getresponse()
                response.read()
                return response.status, response.getheader("X-Road-Error")
            finally:
                connection.close()

        time.sleep(0.5)  # the registry change is picked up within refresh_interval
        assert call((good_cert, good_key)) == (200, None)
        assert call((other_cert, other_key)) == (
            403, "Server.ClientProxy.SslAuthenticationFailed")
        assert call(None) == (403, "Server.ClientProxy.SslAuthenticationFailed")


def test_head_and_options(exchange: Exchange) -> None:
    head = exchange.call("HEAD", exchange.rest_target(ECHO, "/h"))
    assert head.status == 200 and head.body == b""
    options = exchange.call("OPTIONS", exchange.rest_target(ECHO, "/o"))
    assert options.status == 200
    assert echo_of(options.body)["method"] == "OPTIONS"


def test_serve_reports_configuration_problems(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "node.toml"
    config.write_text('[node]\nserver_id = "JP-DEV/GOV/TOYONO/SS1"\n')
    result = subprocess.run([sys.executable, "-m", "secserver", "serve", "--config",
                             str(config)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 1
    assert "[directory] file" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reports_a_port_in_use(exchange: Exchange) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, **exchange.env["consumer"],
           "SECSERVER_NODE_DATA_DIR": str(exchange.layout.root / "data" / "second")}
    result = subprocess.run([sys.executable, "-m", "secserver", "serve", "--config",
                             str(exchange.layout.consumer_config)], capture_output=True,
                            text=True, timeout=60, check=False, env=env,
                            cwd=exchange.layout.root)
    assert result.returncode == 1
    assert "cannot listen on" in result.stderr
    assert "Traceback" not in result.stderr


def test_hop_by_hop_headers_are_not_forwarded(exchange: Exchange) -> None:
    answer = exchange.call("GET", exchange.rest_target(ECHO, "/hop"),
                           headers={"Connection": "X-Secret-Hop", "X-Secret-Hop": "1",
                                    "Keep-Alive": "timeout=5", "X-Kept": "yes",
                                    "X-Road-Signature": "forged", "Proxy-Authorization": "x"})
    assert answer.status == 200, answer.body
    headers = echo_of(answer.body)["headers"]
    assert isinstance(headers, dict)
    assert headers.get("x-kept") == "yes"
    for name in ("x-secret-hop", "keep-alive", "proxy-authorization"):
        assert name not in headers, name
    assert headers.get("x-road-signature") is None


@pytest.mark.parametrize("path", ["/@evil.example/x", "/%40evil.example:80/x", "/x?u=http://evil/"])
def test_requests_cannot_steer_the_backend(exchange: Exchange, path: str) -> None:
    # forwarding headers too: a service behind a proxy (the provider node) takes them for
    # the caller's address and the host it was called as (ProxyFix, trust proxy, ...)
    forwarding = {"X-Forwarded-Host": "evil.example", "X-Forwarded-For": "10.0.0.1",
                  "X-Forwarded-Proto": "https", "Forwarded": "for=10.0.0.1;host=evil",
                  "X-Real-IP": "10.0.0.1", "X_Forwarded_For": "10.0.0.2"}
    answer = exchange.call("GET", exchange.rest_target(ECHO, path), headers=forwarding)
    assert answer.status == 200, answer.body
    echo = echo_of(answer.body)
    assert isinstance(echo["path"], str) and echo["path"].startswith("/echo/")
    headers = echo["headers"]
    assert isinstance(headers, dict)
    assert headers["host"] == f"127.0.0.1:{exchange.backend_port}"
    assert not [name for name in forwarding if name.lower() in headers], headers


def test_serve_refuses_keys_that_do_not_fit_the_node(exchange: Exchange) -> None:
    import os
    import subprocess
    import sys

    pki = exchange.layout.pki
    cases = {
        "SECSERVER_SERVER_CERT_FILE": (str(pki / "servers/COM.OTTA.SS1/tls.crt"),
                                       "[server] cert_file"),
        "SECSERVER_SIGNING_CERT_FILE": (str(pki / "members/COM.OTTA/sign.crt"),
                                        "[signing] cert_file"),
    }
    for key, (value, expected) in cases.items():
        env = {**os.environ, **exchange.env["consumer"], key: value,
               "SECSERVER_NODE_DATA_DIR": str(exchange.layout.root / "data" / "misfit")}
        if key == "SECSERVER_SIGNING_CERT_FILE":
            env["SECSERVER_SIGNING_KEY_FILE"] = str(pki / "members/COM.OTTA/sign.key")
        else:
            env["SECSERVER_SERVER_KEY_FILE"] = str(pki / "servers/COM.OTTA.SS1/tls.key")
        result = subprocess.run([sys.executable, "-m", "secserver", "serve", "--config",
                                 str(exchange.layout.consumer_config)], capture_output=True,
                                text=True, timeout=60, check=False, env=env,
                                cwd=exchange.layout.root)
        assert result.returncode == 1, result.stderr
        assert expected in result.stderr, result.stderr


def test_response_without_content_type(exchange: Exchange) -> None:
    from exchange_harness import NO_CONTENT_TYPE

    answer = exchange.call("GET", exchange.rest_target(NO_CONTENT_TYPE))
    assert answer.status == 200, answer.body
    assert answer.body == b"plain bytes"
    assert answer.header("Content-Type") == "application/octet-stream"

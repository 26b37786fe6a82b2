"""Start a real exchange for tests and benchmarks: two ``secserver serve`` processes, a
test backend process, the development PKI and real TLS, all on 127.0.0.1.

Reuses the demo's layout (``secserver.demo.layout``: PKI, node configurations, member
directory) and registers test services through ``secserver.acl.registry``::

    with running_exchange(tmp_path) as ex:
        answer = ex.call("GET", ex.rest_target(ECHO, "/a?b=1"))
        assert answer.status == 200

Per-process configuration overrides go through ``SECSERVER_<SECTION>_<KEY>`` environment
variables (``consumer_env`` / ``provider_env`` / ``env`` for both).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from secserver.acl import registry
from secserver.config import NodeConfig, load_config
from secserver.demo.layout import (
    HOST,
    OTTA_TAGS,
    TOYONO_ELDERCARE,
    Layout,
    NodeFiles,
    Ports,
    write_layout,
)
from secserver.demo.processes import Child, ProcessGroup
from secserver.demo.registration import node_session, register_otta, register_toyono
from secserver.demo.scenario import Answer, Request, send
from secserver.identifiers import ClientId, ServiceId
from secserver.signing.keys import load_certificate

ACTOR = "exchange-tests"
START_TIMEOUT = 60.0
BACKEND_SCRIPT = Path(__file__).with_name("exchange_backend.py")

CLIENT = TOYONO_ELDERCARE                                   # local, auth none (loopback)
ALLOWLISTED = ClientId("JP-DEV", "GOV", "TOYONO", "ALLOWLISTED")  # only from 192.0.2.1
PINNED = ClientId("JP-DEV", "GOV", "TOYONO", "PINNED")      # only with a pinned TLS cert
ECHO = ServiceId(OTTA_TAGS, "echo")                          # granted to CLIENT
LIMITED = ServiceId(OTTA_TAGS, "limited")                    # only GET /public/** granted
PERSONAL = ServiceId(OTTA_TAGS, "personal")                  # needs consent; granted
NO_RIGHT = ServiceId(OTTA_TAGS, "no-right")                  # registered, nobody granted
SLOW = ServiceId(OTTA_TAGS, "slow")                          # backend sleeps 5 s; timeout 1 s
DOWN = ServiceId(OTTA_TAGS, "down")                          # backend port closed
GARBAGE = ServiceId(OTTA_TAGS, "garbage")                    # backend answers non-HTTP
BYTES = ServiceId(OTTA_TAGS, "bytes")                        # GET /{n}: n bytes
STATUS = ServiceId(OTTA_TAGS, "status")                      # ANY /{code}: that status
NO_CONTENT_TYPE = ServiceId(OTTA_TAGS, "no-content-type")    # body without Content-Type
DESYNC = ServiceId(OTTA_TAGS, "desync")                      # answers twice to one request
SOAP_ECHO = ServiceId(OTTA_TAGS, "soap-echo")                # SOAP, header echoed
SOAP_NO_ECHO = ServiceId(OTTA_TAGS, "soap-no-echo")          # SOAP, header not echoed
UNREGISTERED = ServiceId(OTTA_TAGS, "unregistered")          # not on the provider
CONSENTED_SUBJECT = "JP-PERSON-0001"
OTHER_SUBJECT = "JP-PERSON-0002"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def certificate_sha256(path: Path) -> str:
    return hashlib.sha256(load_certificate(path).public_bytes(Encoding.DER)).hexdigest()


@dataclass
class Exchange:
    """A running exchange: consumer (TOYONO) and provider (OTTA) nodes and a backend."""

    layout: Layout
    group: ProcessGroup
    backend_port: int
    garbage_port: int
    closed_port: int
    consumer: Child | None = None
    provider: Child | None = None
    env: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def consumer_port(self) -> int:
        return self.layout.ports.toyono_client

    @property
    def provider_server_port(self) -> int:
        return self.layout.ports.otta_server

    def config(self, node: NodeFiles) -> NodeConfig:
        return load_config(self.layout.config_path(node), env=self.env.get(node.role, {}))

    @staticmethod
    def rest_target(service: ServiceId, path: str = "") -> str:
        return f"/r1/{service.url_path()}{path}"

    def call(self, method: str, target: str, *, headers: Mapping[str, str] | None = None,
             body: bytes = b"", client: ClientId | None = CLIENT,
             timeout: float = 60.0) -> Answer:
        """An information system's call to the consumer node's client port."""
        all_headers = {} if client is None else {"X-Road-Client": str(client)}
        all_headers.update(headers or {})
        return send(self.consumer_port, Request(method, target, all_headers, body), timeout)

    def start_node(self, node: NodeFiles, extra_env: Mapping[str, str] | None = None) -> Child:
        """Start ``secserver serve`` for ``node`` and wait for its /healthz."""
        env = {**os.environ, **self.env.get(node.role, {}), **(extra_env or {})}
        log_path = self.layout.logs / f"node-{node.data_name}.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "secserver", "serve", "--config",
                 str(self.layout.config_path(node))],
                cwd=self.layout.root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, start_new_session=True)
        child = Child(f"node-{node.data_name}", ("serve",), log_path, process)
        self.group.children.append(child)
        # 503: up, but reporting a failing state (e.g. a TSA overdue on purpose)
        self.group.wait_http(child, HOST, node.admin_port, "/healthz", START_TIMEOUT,
                             ok=(200, 503))
        return child

    def stop_node(self, child: Child | None) -> int | None:
        """Stop a node gracefully (SIGTERM); its exit code (None when not running)."""
        return self.group.stop(child) if child is not None else None

    def restart_provider(self) -> None:
        if self.provider is not None:
            self.stop_node(self.provider)
        self.provider = self.start_node(self.layout.otta)

    def node_log(self, child: Child | None) -> str:
        return child.log_tail(200) if child is not None else ""


def register_test_services(exchange: Exchange, now: datetime) -> None:
    """Both nodes' registries: the demo's entries plus the test services above."""
    layout = exchange.layout
    backend = f"http://{HOST}:{exchange.backend_port}"
    toyono, otta = exchange.config(layout.toyono), exchange.config(layout.otta)
    with node_session(toyono) as session:
        register_toyono(session, f"{backend}/soap")
        registry.add_subsystem(session, ACTOR, ALLOWLISTED, local=True, auth="allowlist",
                               allowlist=["192.0.2.1/32"])
        registry.add_subsystem(session, ACTOR, PINNED, local=True, auth="tls",
                               tls_cert_sha256="ab" * 32)
    with node_session(otta) as session:
        register_otta(session, f"{backend}/echo")
        for subsystem in (ALLOWLISTED, PINNED):
            registry.add_subsystem(session, ACTOR, subsystem)
        services: list[tuple[ServiceId, str, float, bool]] = [
            (ECHO, f"{backend}/echo", 10.0, False),
            (LIMITED, f"{backend}/echo", 10.0, False),
            (PERSONAL, f"{backend}/echo", 10.0, True),
            (NO_RIGHT, f"{backend}/echo", 10.0, False),
            (SLOW, f"{backend}/slow/5", 1.0, False),
            (DOWN, f"http://{HOST}:{exchange.closed_port}/", 5.0, False),
            (GARBAGE, f"http://{HOST}:{exchange.garbage_port}/", 5.0, False),
            (BYTES, f"{backend}/bytes", 60.0, False),
            (STATUS, f"{backend}/status", 10.0, False),
            (NO_CONTENT_TYPE, f"http://{HOST}:{exchange.garbage_port}/no-content-type", 10.0,
             False),
            (DESYNC, f"http://{HOST}:{exchange.garbage_port}/desync", 10.0, False),
            (SOAP_ECHO, f"{backend}/soap", 10.0, False),
            (SOAP_NO_ECHO, f"{backend}/soap-noecho", 10.0, False),
        ]
        for service, url, timeout, consent in services:
            registry.add_service(session, ACTOR, service, backend_url=url, timeout=timeout,
                                 requires_consent=consent)
            if service not in (LIMITED, NO_RIGHT):
                registry.grant(session, ACTOR, str(CLIENT), service)
        registry.add_endpoint(session, ACTOR, LIMITED, "GET", "/public/**")
        registry.add_endpoint(session, ACTOR, LIMITED, "*", "/private/**")
        registry.grant(session, ACTOR, str(CLIENT), LIMITED, method="GET", path="/public/**")
        key = (otta.acl.subject_key_file.read_bytes().strip()
               if otta.acl.subject_key_file is not None else b"")
        registry.record_consent(session, ACTOR, key, CONSENTED_SUBJECT, CLIENT, PERSONAL,
                                "exchange tests", valid_from=now - timedelta(minutes=1),
                                valid_until=now + timedelta(days=1), now=now)


@contextlib.contextmanager
def running_exchange(root: Path, *, env: Mapping[str, str] | None = None,
                     consumer_env: Mapping[str, str] | None = None,
                     provider_env: Mapping[str, str] | None = None,
                     start_nodes: bool = True) -> Iterator[Exchange]:
    """Lay out, register and start everything; stop every process afterwards.

    By default the TSA is off (``SECSERVER_TSA_URL=""``): timestamps are the log's
    business, and the exchange must not depend on them.
    """
    base = {"SECSERVER_TSA_URL": "", **(env or {})}
    layout = write_layout(root, Ports.free())
    group = ProcessGroup(layout.logs)
    exchange = Exchange(layout, group, free_port(), free_port(), free_port(),
                        env={"consumer": {**base, **(consumer_env or {})},
                             "provider": {**base, **(provider_env or {})}})
    try:
        backend = group.start("backend", [str(BACKEND_SCRIPT), "--port",
                                          str(exchange.backend_port), "--garbage-port",
                                          str(exchange.garbage_port)], root)
        group.wait_http(backend, HOST, exchange.backend_port, "/", START_TIMEOUT)
        register_test_services(exchange, datetime.now(UTC))
        if start_nodes:
            exchange.provider = exchange.start_node(layout.otta)
            exchange.consumer = exchange.start_node(layout.toyono)
        yield exchange
    finally:
        group.stop_all()


@pytest.fixture(scope="module", name="exchange")
def exchange_fixture(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    """A running exchange with default settings, one per test module that imports this
    (as ``exchange_fixture``; tests request it as ``exchange``)."""
    name = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    with running_exchange(tmp_path_factory.mktemp(name)) as running:
        yield running


def stop_gracefully(child: Child, timeout: float = 30.0) -> int:
    """SIGTERM and wait; the exit code."""
    child.process.send_signal(signal.SIGTERM)
    try:
        return child.process.wait(timeout)
    finally:
        if child.process.poll() is None:
            child.process.kill()


def wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")

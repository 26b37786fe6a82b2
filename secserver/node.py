"""One secserver node: three listeners around the exchange, started and stopped in order.

* client port: local information systems (HTTP, or HTTPS with optional client
  certificates when ``[client] tls = true``) -> the consumer proxy;
* server port: other security servers, mutual TLS only (TLS 1.2 minimum) -> the provider
  proxy;
* admin port (loopback only): ``GET /healthz`` with database, log and TSA state.

Start: database upgrade (unless ``[database] auto_upgrade = false``), registry snapshot,
message log (it also stores the replay reservations), keys, then the listeners. Stop
(SIGTERM/SIGINT): stop accepting, drain the requests in flight, then flush the log (final
checkpoint), then exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import hdrs, web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from secserver.acl.snapshot import RegistryWatcher
from secserver.aio import cancel_and_wait
from secserver.audit.writer import LogWriter
from secserver.config import NodeConfig, read_secret
from secserver.db import migrate
from secserver.db.engine import make_async_engine
from secserver.errors import ConfigError
from secserver.routing import consumer, provider
from secserver.routing.backend import BackendClient
from secserver.routing.context import ExchangeNode
from secserver.routing.directory import Directory, certificate_sha256, load_directory
from secserver.routing.documents import replay_retention
from secserver.routing.errors import Side
from secserver.routing.headers import ANY_IP_LITERAL
from secserver.routing.middleware import coded_error, expect_continue, use_coded_errors
from secserver.routing.peer import PeerPool
from secserver.routing.replay import REPLAY_WINDOW, ReplayGuard
from secserver.signing.keys import load_certificates
from secserver.signing.signer import Signer
from secserver.signing.trust import TrustStore

log = structlog.get_logger("secserver.node")

SHUTDOWN_TIMEOUT = 30.0
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _pem(certificates: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(Encoding.PEM).decode("ascii") for c in certificates)


def server_tls_context(cert_file: Path, key_file: Path, password: bytes | None,
                       cas: list[x509.Certificate], *, require_client: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file, password=password)
    context.load_verify_locations(cadata=_pem(cas))
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    # a connection's client certificate is then fixed once the handshake is done (the
    # handlers learn it once per connection), and a client cannot make the server redo
    # expensive handshakes on one connection
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def peer_tls_context(cert_file: Path, key_file: Path, password: bytes | None,
                     cas: list[x509.Certificate]) -> ssl.SSLContext:
    """Outgoing mutual TLS: chain to a trusted CA; the peer itself is pinned per server."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=_pem(cas))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # directory addresses are often IPs; pinning decides
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert_file, key_file, password=password)
    return context


def allowed_hosts(listen_host: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
    """Host header values a listener answers to (never used for routing)."""
    names = {listen_host.lower(), *LOOPBACK_NAMES, *(e.lower() for e in extra)}
    if listen_host in ("0.0.0.0", "::", ""):  # noqa: S104
        names.update({socket.gethostname().lower(), socket.getfqdn().lower(),
                      ANY_IP_LITERAL})
    return frozenset(names)


class ConnectionCap:
    """At most ``limit`` open connections on one listener, TLS handshakes included.

    The site's accept loop asks ``admit`` before taking a connection: beyond the cap it
    is closed at once, before any TLS handshake. A burst of refusals is logged once
    (when the first is refused) and once more when accepting resumes.
    """

    def __init__(self, listener: str, limit: int) -> None:
        self.listener = listener
        self.limit = limit
        self.pending = 0  # accepted, transport not yet set up (TLS handshake)
        self._transports: set[asyncio.BaseTransport] = set()
        self._refused = 0

    def open_count(self) -> int:
        self._transports = {t for t in self._transports if not t.is_closing()}
        return self.pending + len(self._transports)

    def admit(self) -> bool:
        if self.open_count() >= self.limit:
            if self._refused == 0:
                log.warning("connection limit reached: closing new connections",
                            listener=self.listener, max_connections=self.limit)
            self._refused += 1
            return False
        if self._refused:
            log.info("accepting connections again", listener=self.listener,
                     refused=self._refused)
            self._refused = 0
        self.pending += 1
        return True

    def established(self, transport: asyncio.BaseTransport | None) -> None:
        self.pending -= 1
        if transport is not None:
            self._transports.add(transport)


def _listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address of ``host``."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Site(web.BaseSite):
    """A site on one listening socket with its own accept loop, so that

    * connections beyond ``[limits] max_connections`` are closed before any TLS handshake
      (the event loop's server would hand them on unasked);
    * TLS handshakes must end within ``handshake_timeout`` seconds: asyncio's default
      (60 s) let a client that never finishes one hold the connection well past the
      request head deadline, which starts only after the handshake.
    """

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, *,
                 ssl_context: ssl.SSLContext | None, handshake_timeout: float,
                 cap: ConnectionCap) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._sock = sock
        self._handshake_timeout = handshake_timeout
        self._cap = cap
        self._accepting: asyncio.Task[None] | None = None
        self._connecting: set[asyncio.Task[None]] = set()
        host, port = sock.getsockname()[:2]
        scheme = "https" if ssl_context else "http"
        self._name = f"{scheme}://{host}:{port}"

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        await super().start()  # registers the site with its runner
        self._accepting = asyncio.create_task(self._accept_loop())

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self._sock)
            except OSError as exc:  # e.g. out of file descriptors: try again shortly
                log.warning("accept failed", listener=self._cap.listener,
                            error=exc.strerror or type(exc).__name__)
                await asyncio.sleep(0.1)
                continue
            if not self._cap.admit():
                conn.close()
                continue
            task = asyncio.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: socket.socket) -> None:
        server = self._runner.server
        assert server is not None
        transport: asyncio.BaseTransport | None = None
        try:
            transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
                server, conn, ssl=self._ssl_context,
                ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None)
        except (OSError, TimeoutError):
            conn.close()  # a failed or abandoned handshake: nothing to answer
        except asyncio.CancelledError:
            conn.close()
            raise
        except Exception as exc:  # keep accepting whatever one connection did
            conn.close()
            log.info("connection setup failed", listener=self._cap.listener,
                     error=type(exc).__name__)
        finally:
            self._cap.established(transport)

    async def stop(self) -> None:
        await cancel_and_wait(self._accepting)
        for task in list(self._connecting):
            task.cancel()
        self._sock.close()
        self._runner._unreg_site(self)


ExchangeHandler = Callable[[web.BaseRequest, ExchangeNode], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Exchange:
    """An exchange port's request handler (``Node._exchange_server``) and its side."""

    side: Side
    serve: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def _require(value: Path | None, key: str, problems: list[str]) -> Path:
    if value is None:
        problems.append(f"{key} is required to run a node")
        return Path()
    return value


@dataclass
class Node:
    """A running node; ``start`` then ``stop`` (or ``run`` until a signal)."""

    config: NodeConfig
    directory: Directory = field(init=False)
    engine: AsyncEngine = field(init=False)
    runners: list[web.BaseRunner] = field(default_factory=list)
    _closers: list[Any] = field(default_factory=list)
    _in_flight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _writer: LogWriter | None = None
    _registry: RegistryWatcher | None = None

    async def start(self) -> None:
        config = self.config
        problems: list[str] = []
        directory_file = _require(config.directory.file, "[directory] file", problems)
        server_cert = _require(config.server.cert_file, "[server] cert_file", problems)
        server_key = _require(config.server.key_file, "[server] key_file", problems)
        if problems:
            raise ConfigError(problems)
        self.directory = load_directory(directory_file)
        cas = list(self.directory.ca_certificates)
        for path in config.trust.ca_files:
            cas.extend(load_certificates(path))
        trust = TrustStore(cas)
        password = read_secret(config.server.key_passphrase_file,
                               "[server] key_passphrase_file")
        own = self.directory.server(config.server_id)
        if own is None:
            raise ConfigError([f"[node] server_id: {config.server_id} is not in the member "
                               f"directory {directory_file}"])

        own_cert = load_certificates(server_cert)[0]
        if certificate_sha256(own_cert) != own.tls_cert_sha256:
            raise ConfigError([f"[server] cert_file: {server_cert} is not the TLS certificate "
                               f"the member directory lists for {config.server_id}; other "
                               "security servers would refuse this node"])
        signer = Signer.from_config(config)
        if signer.member != config.server_id.owner:
            raise ConfigError([f"[signing] cert_file: the signing certificate belongs to "
                               f"{signer.member}, not to this node's owner "
                               f"{config.server_id.owner}"])

        if config.database.auto_upgrade:
            await asyncio.to_thread(migrate.upgrade, config.database_url)
        self.engine = make_async_engine(config.database_url)
        self._closers.append(self.engine.dispose)
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (OSError, SQLAlchemyError) as exc:
            raise ConfigError([f"[database] url: cannot connect to the database "
                               f"({type(exc).__name__}); is it running and reachable?"]
                              ) from exc

        subject_key = read_secret(config.acl.subject_key_file, "[acl] subject_key_file")
        registry = RegistryWatcher(self.engine, config.acl.refresh_interval,
                                   subject_key=subject_key)
        await registry.start()
        writer = LogWriter(config, engine=self.engine)
        # reservations commit with the request's log record (one transaction); ids outlive
        # the accepted signing age by the allowed clock skew (no replay of a request signed
        # ahead of this node's clock once its id was pruned)
        replay = ReplayGuard(writer, window=replay_retention(REPLAY_WINDOW))
        peers = PeerPool(peer_tls_context(server_cert, server_key, password, cas),
                         idle_timeout=max(1.0, config.limits.header_timeout / 2))
        backend = BackendClient(idle_timeout=4.0)
        # closed in reverse order, after the listeners have drained
        self._closers += [backend.close, peers.close, signer.close, writer.stop,
                          registry.stop]
        spool_dir = config.node.data_dir / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        self._writer = writer
        node = ExchangeNode(
            server_id=config.server_id, directory=self.directory,
            registry=lambda: registry.current, trust=trust, sign=signer.sign,
            append_log=writer.append, check_accepting=writer.check_accepting, peers=peers,
            backend=backend, replay=replay, limits=config.limits, spool_dir=spool_dir,
            client_hosts=allowed_hosts(config.client.host),
            server_hosts=allowed_hosts(config.server.host, (own.host,)),
            subject_key=subject_key,
        )
        self._registry = registry

        client_ssl = None
        if config.client.tls:
            assert config.client.cert_file is not None and config.client.key_file is not None
            client_ssl = server_tls_context(config.client.cert_file, config.client.key_file,
                                            None, cas, require_client=False)
        server_ssl = server_tls_context(server_cert, server_key, password, cas,
                                        require_client=True)
        await self._listen(self._exchange_server("ClientProxy", node, consumer.handle),
                           config.client.host, config.client.port, client_ssl)
        await self._listen(self._exchange_server("ServerProxy", node, provider.handle),
                           config.server.host, config.server.port, server_ssl)
        # a node that cannot listen must not touch its log; until the writer runs,
        # messages are refused with LoggingFailed ("not running")
        await writer.start()
        # health last: once /healthz answers, the node takes messages
        await self._listen(self._admin_app(), config.admin.host, config.admin.port, None)
        log.info("node started", server_id=str(config.server_id),
                 client=f"{config.client.host}:{config.client.port}",
                 server=f"{config.server.host}:{config.server.port}",
                 admin=f"{config.admin.host}:{config.admin.port}")

    def _exchange_server(self, side: Side, node: ExchangeNode,
                         handle: ExchangeHandler) -> _Exchange:
        """The port's one request handler, without aiohttp's router and middleware chain:
        every request goes to ``handle``; it counts as in flight (for the drain at stop)
        until answered, and every error becomes a coded answer (``coded_error``)."""

        async def serve(request: web.BaseRequest) -> web.StreamResponse:
            self._in_flight += 1
            self._idle.clear()
            try:
                if hdrs.EXPECT in request.headers:
                    await expect_continue(request)
                return await handle(request, node)
            except Exception as exc:
                return coded_error(request, exc, side)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()

        return _Exchange(side, serve)

    def _admin_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        return app

    async def _listen(self, target: web.Application | _Exchange, host: str, port: int,
                      ssl_context: ssl.SSLContext | None) -> None:
        limits = self.config.limits
        settings: dict[str, Any] = dict(
            access_log=None, keepalive_timeout=limits.header_timeout,
            max_line_size=limits.max_header_bytes, max_field_size=limits.max_header_bytes,
            max_headers=limits.max_header_count, lingering_time=0.5)
        runner: web.BaseRunner
        if isinstance(target, _Exchange):
            server = web.Server(target.serve, **settings)
            use_coded_errors(server, target.side)
            runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT,
                                      handle_signals=False)
            name = "client" if target.side == "ClientProxy" else "server"
        else:
            runner = web.AppRunner(target, shutdown_timeout=SHUTDOWN_TIMEOUT,
                                   handle_signals=False, **settings)
            name = "admin"
        await runner.setup()
        self.runners.append(runner)
        cap = ConnectionCap(name, limits.max_connections)  # shared by the host's addresses
        try:
            for sock in _listening_sockets(host, port):
                site = _Site(runner, sock, ssl_context=ssl_context,
                             handshake_timeout=limits.header_timeout, cap=cap)
                await site.start()
        except OSError as exc:
            raise ConfigError([f"[{name}] port: cannot listen on {host}:{port}: "
                               f"{exc.strerror or exc}"]) from exc

    async def health(self) -> dict[str, Any]:
        database: dict[str, Any] = {"status": "ok"}
        try:
            async with asyncio.timeout(5.0):
                async with self.engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
        except Exception as exc:
            database = {"status": "failing", "error": type(exc).__name__}
        assert self._writer is not None and self._registry is not None
        log_state = self._writer.health()
        statuses = [database["status"], log_state.get("status", "failing")]
        status = ("failing" if "failing" in statuses
                  else "degraded" if "degraded" in statuses else "ok")
        return {"status": status, "server_id": str(self.config.server_id),
                "database": database, "log": log_state, "tsa": log_state.get("tsa"),
                "registry_version": self._registry.current.version}

    async def _healthz(self, request: web.Request) -> web.Response:
        state = await self.health()
        return web.json_response(state, status=503 if state["status"] == "failing" else 200)

    async def stop(self) -> None:
        """Stop listening, drain requests in flight, then flush the log, then close."""
        log.info("node stopping: draining requests in flight", in_flight=self._in_flight)
        for runner in self.runners:  # stop listening; connections in progress go on
            for site in list(runner.sites):
                with contextlib.suppress(Exception):
                    await site.stop()
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), SHUTDOWN_TIMEOUT)
        for runner in self.runners:
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self.runners.clear()
        for close in reversed(self._closers):
            try:
                await close()
            except Exception as exc:  # keep closing the rest
                log.warning("shutdown step failed", step=getattr(close, "__qualname__", "?"),
                            error=type(exc).__name__)
        self._closers.clear()
        log.info("node stopped")


GC_YOUNG_THRESHOLD = 20_000


def settle_garbage_collector() -> None:
    """Once the node has started: move everything alive into the collector's permanent
    generation and collect the young generation less often.

    A call leaves almost no reference cycles (reference counting frees its objects), but
    with the defaults the collector walked the young objects of every in-flight call every
    700 allocations and the whole start-up heap (modules, certificates, registry) on each
    full pass: 3-4% of a node's CPU under load (perf, docs/performance.md).
    """
    gc.collect()
    gc.freeze()
    _young, *older = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *older)


async def run_node(config: NodeConfig) -> None:
    """Run a node until SIGTERM or SIGINT, then stop it gracefully."""
    node = Node(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await node.start()
        settle_garbage_collector()
        await stop.wait()
    finally:
        await node.stop()

"""The full secserver exchange for the benchmark: development TSA, provider and consumer nodes.

Set up with the demo's own building blocks (``secserver.demo.layout.write_layout``: the
development PKI, both node configurations and the member directory) and the registry code
behind ``secserver acl``: OTTA's node serves ``JP-DEV/COM/OTTA/TAGS/bench-echo`` (backend:
the benchmark's echo backend) to ``JP-DEV/GOV/TOYONO/ELDERCARE``; TOYONO's node lets its
local subsystem ELDERCARE call out. Both nodes run as real ``secserver serve`` processes:
signatures both ways, access checks, replay check, message log with group commit and
checkpoints timestamped by ``secserver tsa serve``.

For PostgreSQL each node gets its own fresh database on one throw-away server
(``tests/postgres.py``), passed to the node as ``SECSERVER_DATABASE_URL``.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench_procs import Child, Processes, tail

ROOT = Path(__file__).resolve().parent.parent
SERVICE_CODE = "bench-echo"
START_TIMEOUT = 90.0


class ExchangeUnavailable(Exception):
    """The exchange cannot be started here; the message says why."""


@dataclass
class Exchange:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    processes: dict[str, Child] = field(default_factory=dict)


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ExchangeUnavailable(f"{what} is not available ({module} missing)")


def _postgres_server(stack: contextlib.ExitStack) -> str:
    """One PostgreSQL server for the whole benchmark run (started on first use)."""
    cached: str | None = getattr(_postgres_server, "url", None)
    if cached is not None:
        return cached
    sys.path.insert(0, str(ROOT / "tests"))
    import postgres

    if postgres.find_pg_bin() is None:
        raise ExchangeUnavailable("PostgreSQL server binaries not found (Debian package "
                                  "'postgresql')")
    url: str = stack.enter_context(postgres.running_postgres())
    _postgres_server.url = url  # type: ignore[attr-defined]
    return url


def _new_database(stack: contextlib.ExitStack) -> str:
    server = _postgres_server(stack)
    import postgres  # on sys.path since _postgres_server

    url: str = postgres.create_database(server)
    return url


def _http_status(port: int, path: str) -> int | None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def _wait_http(child: Child, port: int, path: str, accept_any: bool = False) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}; log "
                               f"{child.log}:\n{tail(child.log)}")
        status = _http_status(port, path)
        if status == 200 or (accept_any and status is not None):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not answer GET {path} on port {port} within "
                               f"{START_TIMEOUT:.0f} s; log {child.log}:\n{tail(child.log)}")
        time.sleep(0.1)


@contextlib.contextmanager
def _env(overrides: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def start_exchange(procs: Processes, stack: contextlib.ExitStack, workdir: Path, db: str,
                   backend_url: str, cpu_prefix: list[str],
                   log: Callable[[str], None]) -> Exchange:
    """Set up and start TSA, provider and consumer; return how to call the bench service."""
    _require("secserver.cli.serve", "`secserver serve`")
    _require("secserver.cli.tsa", "`secserver tsa serve`")
    _require("secserver.demo.layout", "the demo layout")
    from secserver.acl import registry
    from secserver.config import load_config
    from secserver.demo.layout import OTTA, OTTA_TAGS, TOYONO, TOYONO_ELDERCARE, Ports, write_layout
    from secserver.demo.registration import node_session
    from secserver.identifiers import ServiceId

    log(f"exchange-{db}: writing PKI, configurations and directory in {workdir}")
    layout = write_layout(workdir, Ports.free())
    env_of: dict[str, dict[str, str]] = {"consumer": {}, "provider": {}}
    if db == "postgresql":
        for role in env_of:
            env_of[role]["SECSERVER_DATABASE_URL"] = _new_database(stack)
    service = ServiceId(OTTA_TAGS, SERVICE_CODE)
    actor = "secserver-bench"
    with _env(env_of["provider"]):
        provider_config = load_config(layout.provider_config)
    with _env(env_of["consumer"]):
        consumer_config = load_config(layout.consumer_config)
    with node_session(provider_config) as session:
        registry.add_member(session, actor, OTTA, "Otta Watch Tags Inc.")
        registry.add_member(session, actor, TOYONO, "Toyono Town")
        registry.add_subsystem(session, actor, OTTA_TAGS, local=True, auth="none")
        registry.add_subsystem(session, actor, TOYONO_ELDERCARE)
        registry.add_service(session, actor, service, backend_url=backend_url, timeout=30.0)
        registry.grant(session, actor, str(TOYONO_ELDERCARE), service)
    with node_session(consumer_config) as session:
        registry.add_member(session, actor, TOYONO, "Toyono Town")
        registry.add_member(session, actor, OTTA, "Otta Watch Tags Inc.")
        registry.add_subsystem(session, actor, TOYONO_ELDERCARE, local=True, auth="none")
        registry.add_subsystem(session, actor, OTTA_TAGS)

    ports = layout.ports
    python = [*cpu_prefix, sys.executable, "-m", "secserver"]
    tsa = procs.start(f"exchange-{db}-tsa", [*python, "tsa", "serve", "--dir", str(layout.pki),
                                            "--port", str(ports.tsa)], cwd=workdir)
    _wait_http(tsa, ports.tsa, "/", accept_any=True)
    nodes: dict[str, Child] = {}
    for role, config, admin_port in (("provider", layout.provider_config, ports.otta_admin),
                                     ("consumer", layout.consumer_config, ports.toyono_admin)):
        child = procs.start(f"exchange-{db}-{role}", [*python, "serve", "--config", str(config)],
                            env={**os.environ, **env_of[role]}, cwd=workdir)
        _wait_http(child, admin_port, "/healthz")
        nodes[role] = child
    log(f"exchange-{db}: consumer on 127.0.0.1:{ports.toyono_client}, provider on "
        f"127.0.0.1:{ports.otta_server} (mTLS), TSA on 127.0.0.1:{ports.tsa}")
    url = f"http://127.0.0.1:{ports.toyono_client}/r1/{service.url_path()}/echo"
    return Exchange(url=url, headers=(("X-Road-Client", str(TOYONO_ELDERCARE)),),
                    processes={"consumer": nodes["consumer"], "provider": nodes["provider"],
                               "tsa": tsa})

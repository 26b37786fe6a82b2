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

With a git ``revision``, the package as of that commit is extracted and put first on
``PYTHONPATH`` of the set-up and of every process, so past and present code can be
measured side by side in one run (``bench.py --revisions``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_procs import Child, Processes, tail

from secserver.demo.processes import http_status

ROOT = Path(__file__).resolve().parent.parent
SERVICE_CODE = "bench-echo"
START_TIMEOUT = 90.0


class ExchangeUnavailable(Exception):
    """The exchange cannot be started here; the message says why."""


@dataclass
class Exchange:
    name: str
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


def _wait_http(child: Child, port: int, path: str, accept_any: bool = False) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}; log "
                               f"{child.log}:\n{tail(child.log)}")
        status = http_status("127.0.0.1", port, path, timeout=2)
        if status == 200 or (accept_any and status is not None):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not answer GET {path} on port {port} within "
                               f"{START_TIMEOUT:.0f} s; log {child.log}:\n{tail(child.log)}")
        time.sleep(0.1)


def setup(workdir: Path, backend_url: str, database_urls: dict[str, str]) -> dict[str, Any]:
    """Write PKI, configurations and directory; register the bench service on both nodes.

    Runs in a child process (``python bench_exchange.py setup ...``) so that the secserver
    it imports is the one under test (``PYTHONPATH``), which may be a past commit.
    """
    from secserver.acl import registry
    from secserver.config import load_config
    from secserver.demo.layout import OTTA, OTTA_TAGS, TOYONO, TOYONO_ELDERCARE, Ports, write_layout
    from secserver.demo.registration import node_session
    from secserver.identifiers import ServiceId

    layout = write_layout(workdir, Ports.free())
    service = ServiceId(OTTA_TAGS, SERVICE_CODE)
    actor = "secserver-bench"
    configs = {}
    for role, path in (("provider", layout.provider_config),
                       ("consumer", layout.consumer_config)):
        env = dict(os.environ)
        if role in database_urls:
            env["SECSERVER_DATABASE_URL"] = database_urls[role]
        configs[role] = load_config(path, env=env)
    with node_session(configs["provider"]) as session:
        registry.add_member(session, actor, OTTA, "Otta Watch Tags Inc.")
        registry.add_member(session, actor, TOYONO, "Toyono Town")
        registry.add_subsystem(session, actor, OTTA_TAGS, local=True, auth="none")
        registry.add_subsystem(session, actor, TOYONO_ELDERCARE)
        registry.add_service(session, actor, service, backend_url=backend_url, timeout=30.0)
        registry.grant(session, actor, str(TOYONO_ELDERCARE), service)
    with node_session(configs["consumer"]) as session:
        registry.add_member(session, actor, TOYONO, "Toyono Town")
        registry.add_member(session, actor, OTTA, "Otta Watch Tags Inc.")
        registry.add_subsystem(session, actor, TOYONO_ELDERCARE, local=True, auth="none")
        registry.add_subsystem(session, actor, OTTA_TAGS)
    ports = layout.ports
    return {
        "pki": str(layout.pki), "tsa_port": ports.tsa,
        "provider_config": str(layout.provider_config), "provider_admin": ports.otta_admin,
        "provider_server": ports.otta_server,
        "consumer_config": str(layout.consumer_config), "consumer_admin": ports.toyono_admin,
        "consumer_client": ports.toyono_client,
        "path": f"/r1/{service.url_path()}/echo", "client": str(TOYONO_ELDERCARE),
    }


def source_tree(revision: str, workdir: Path) -> Path:
    """The ``secserver`` package as of a git revision, extracted under ``workdir``."""
    target = workdir / "src"
    target.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "secserver"],
                             capture_output=True, check=False, timeout=60)
    if archive.returncode != 0:
        raise ExchangeUnavailable(f"git archive {revision} failed: "
                                  f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True,
                   timeout=60)
    return target


def start_exchange(procs: Processes, stack: contextlib.ExitStack, workdir: Path, db: str,
                   backend_url: str, cpu_prefix: list[str], log: Callable[[str], None],
                   revision: str | None = None) -> Exchange:
    """Set up and start TSA, provider and consumer; return how to call the bench service.

    ``revision``: run secserver as of this git revision (or from this directory holding a
    ``secserver`` package, for trying a change) instead of the working tree.
    """
    _require("secserver.cli.serve", "`secserver serve`")
    _require("secserver.cli.tsa", "`secserver tsa serve`")
    _require("secserver.demo.layout", "the demo layout")
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    name = f"exchange-{db}"
    if revision:
        source = Path(revision)
        name += f"@{source.name}"
        if not (source / "secserver").is_dir():  # not a source directory: a git revision
            source = source_tree(revision, workdir)
            name = f"exchange-{db}@{revision}"
        env["PYTHONPATH"] = os.pathsep.join(
            [str(source.resolve()), *filter(None, [env.get("PYTHONPATH")])])
    database_urls = {}
    if db == "postgresql":
        database_urls = {role: _new_database(stack) for role in ("consumer", "provider")}
    log(f"{name}: writing PKI, configurations and directory in {workdir}")
    done = subprocess.run(
        [*cpu_prefix, sys.executable, str(Path(__file__).resolve()), "setup", "--dir",
         str(workdir), "--backend-url", backend_url, "--database-urls",
         json.dumps(database_urls)], cwd=workdir, env=env, capture_output=True, text=True,
        check=False, timeout=300)
    if done.returncode != 0:
        raise ExchangeUnavailable(f"set-up failed: {done.stderr.strip()[-1500:]}")
    info = json.loads(done.stdout)
    python = [*cpu_prefix, sys.executable, "-m", "secserver"]
    tsa = procs.start(f"{name}-tsa", [*python, "tsa", "serve", "--dir", info["pki"],
                                      "--port", str(info["tsa_port"])], cwd=workdir, env=env)
    _wait_http(tsa, info["tsa_port"], "/", accept_any=True)
    nodes: dict[str, Child] = {}
    for role in ("provider", "consumer"):
        role_env = dict(env)
        if role in database_urls:
            role_env["SECSERVER_DATABASE_URL"] = database_urls[role]
        child = procs.start(f"{name}-{role}",
                            [*python, "serve", "--config", info[f"{role}_config"]],
                            env=role_env, cwd=workdir)
        _wait_http(child, info[f"{role}_admin"], "/healthz")
        nodes[role] = child
    log(f"{name}: consumer on 127.0.0.1:{info['consumer_client']}, provider on "
        f"127.0.0.1:{info['provider_server']} (mTLS), TSA on 127.0.0.1:{info['tsa_port']}")
    url = f"http://127.0.0.1:{info['consumer_client']}{info['path']}"
    return Exchange(name=name, url=url, headers=(("X-Road-Client", info["client"]),),
                    processes={"consumer": nodes["consumer"], "provider": nodes["provider"],
                               "tsa": tsa})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="set up the benchmark's exchange")
    parser.add_argument("command", choices=["setup"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--backend-url", required=True)
    parser.add_argument("--database-urls", default="{}",
                        help="JSON object: role (consumer, provider) -> database URL")
    args = parser.parse_args(argv)
    print(json.dumps(setup(args.dir, args.backend_url, json.loads(args.database_urls))))


if __name__ == "__main__":
    main()

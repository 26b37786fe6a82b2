"""kill -9 of a node in the middle of concurrent exchanges, then restart: every response
the client received has its records in both nodes' logs, both chains verify, and the
provider's replay reservations are exactly the ids of its request records (they commit in
one transaction: neither survives a crash without the other).

Real processes: two `secserver serve` nodes (mutual TLS), a backend, the dev PKI; SQLite
and PostgreSQL (one database per node: the two nodes belong to different members)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from exchange_harness import ECHO, running_exchange
from postgres import create_database
from sqlalchemy import text

from secserver.audit.checks import verify_node_log
from secserver.db.engine import make_engine

pytestmark = [pytest.mark.integration, pytest.mark.slow]

THREADS = 8
BEFORE_KILL = 60  # answered exchanges before the kill
MAX_SECONDS = 60.0


def query(url: str, sql: str, **parameters: str) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), parameters).all())
    finally:
        engine.dispose()


def message_records(url: str, node: str) -> list[tuple[str, bytes]]:
    """(message id, canonical record bytes) of one node's message records."""
    return [(m, bytes(content)) for m, content in query(
        url, "SELECT message_id, content FROM log_records WHERE node_id = :node AND "
             "kind = 'message'", node=node)]


def logged_ids(url: str, node: str) -> dict[str, set[str]]:
    """Message id -> directions logged (without an error code) by one node."""
    found: dict[str, set[str]] = {}
    for message_id, data in message_records(url, node):
        if b"\nerror-code: \n" in data:
            direction = data.split(b"\ndirection: ")[1].split(b"\n")[0].decode()
            found.setdefault(message_id, set()).add(direction)
    return found


def request_ids_and_reservations(url: str, node: str) -> tuple[set[str], set[str]]:
    """Message ids of a provider's request records, and of its replay reservations."""
    requests = {m for m, data in message_records(url, node)
                if b"\ndirection: request\n" in data}
    reserved = query(url, "SELECT message_id FROM exchange_seen_messages")
    return requests, {m for (m,) in reserved}


@pytest.mark.parametrize("killed", ["consumer", "provider"])
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgresql",
                                                             marks=pytest.mark.postgres)])
def test_kill_9_during_traffic(database: str, killed: str, tmp_path: Path,
                               request: pytest.FixtureRequest) -> None:
    consumer_env: dict[str, str] = {}
    provider_env: dict[str, str] = {}
    if database == "postgresql":
        server: str = request.getfixturevalue("postgres_server")
        consumer_env["SECSERVER_DATABASE_URL"] = create_database(server)
        provider_env["SECSERVER_DATABASE_URL"] = create_database(server)
    with running_exchange(tmp_path, consumer_env=consumer_env,
                          provider_env=provider_env) as ex:
        answered: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()
        deadline = time.monotonic() + MAX_SECONDS

        def client(number: int) -> None:
            count = 0
            while not stop.is_set() and time.monotonic() < deadline:
                count += 1
                try:
                    answer = ex.call("POST", ex.rest_target(ECHO, f"/crash/{number}/{count}"),
                                     body=b'{"n": %d}' % count, timeout=10)
                except OSError:
                    continue  # the node is gone or restarting: not answered
                if answer.status == 200:
                    message_id = answer.header("X-Road-Id")
                    assert message_id
                    with lock:
                        answered.append(message_id)

        threads = [threading.Thread(target=client, args=(n,), daemon=True)
                   for n in range(THREADS)]
        for thread in threads:
            thread.start()
        while len(answered) < BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.02)
        victim = ex.consumer if killed == "consumer" else ex.provider
        assert victim is not None
        os.kill(victim.process.pid, signal.SIGKILL)  # in the middle of traffic
        victim.process.wait(10)
        killed_at = len(answered)
        if killed == "consumer":
            ex.consumer = ex.start_node(ex.layout.toyono)
        else:
            ex.provider = ex.start_node(ex.layout.otta)
        while len(answered) < killed_at + 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        for thread in threads:
            thread.join(20)
        assert len(answered) >= killed_at + 20, "traffic did not resume after the restart"
        consumer_config = ex.config(ex.layout.toyono)
        provider_config = ex.config(ex.layout.otta)
        assert ex.stop_node(ex.consumer) == 0
        assert ex.stop_node(ex.provider) == 0

    for config in (consumer_config, provider_config):
        logged = logged_ids(config.database_url, config.node.server_id)
        missing = [m for m in answered if logged.get(m) != {"request", "response"}]
        assert missing == [], f"{config.node.server_id}: answered but not logged: {missing[:5]}"
        report = verify_node_log(config)
        assert report.ok, [p.message for p in report.problems]
        assert report.warnings == ()  # a clean stop anchors everything
        assert report.messages >= 2 * len(answered)
    requests, reserved = request_ids_and_reservations(provider_config.database_url,
                                                      str(provider_config.node.server_id))
    assert set(answered) <= requests
    assert requests == reserved

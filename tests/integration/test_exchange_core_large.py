"""A 200 MiB body each way through both nodes with bounded memory (VmHWM), and a graceful
stop that lets a request in flight finish before the log is closed."""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from exchange_harness import BYTES, CLIENT, ECHO, Exchange, running_exchange, vm_hwm_kib

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SIZE = 200 * 1024 * 1024
CHUNK = bytes(range(256)) * 4096  # 1 MiB
MEMORY_GROWTH_LIMIT_KIB = 96 * 1024


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    env = {"SECSERVER_LIMITS_MAX_MESSAGE_BYTES": str(300 * 1024 * 1024),
           "SECSERVER_LIMITS_BODY_TIMEOUT": "300", "SECSERVER_LIMITS_BACKEND_TIMEOUT": "300"}
    with running_exchange(tmp_path_factory.mktemp("large"), env=env) as running:
        yield running


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], Iterator[bytes]]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed early: {buffer[:200]!r}")
        buffer += data
    head, _, rest = buffer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers["content-length"])

    def body() -> Iterator[bytes]:
        received = len(rest)
        yield rest
        while received < length:
            data = sock.recv(1024 * 1024)
            if not data:
                raise AssertionError("connection closed inside the body")
            received += len(data)
            yield data

    return int(lines[0].split()[1]), headers, body()


def test_200_mib_request_body_with_bounded_memory(exchange: Exchange) -> None:
    assert exchange.consumer is not None and exchange.provider is not None
    pids = {"consumer": exchange.consumer.process.pid,
            "provider": exchange.provider.process.pid}
    warm = exchange.call("PUT", exchange.rest_target(ECHO, "/warm"), body=b"x" * 2_000_000)
    assert warm.status == 200
    before = {name: vm_hwm_kib(pid) for name, pid in pids.items()}
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", exchange.consumer_port), timeout=300) as sock:
        sock.sendall((f"PUT {exchange.rest_target(ECHO, '/big')} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1\r\nX-Road-Client: {CLIENT}\r\n"
                      f"Content-Type: application/octet-stream\r\n"
                      f"Content-Length: {SIZE}\r\n\r\n").encode())
        for _ in range(SIZE // len(CHUNK)):
            sock.sendall(CHUNK)
            digest.update(CHUNK)
        status, _headers, body = read_response(sock)
        echo = json.loads(b"".join(body))
    assert status == 200, echo
    assert echo["body_size"] == SIZE
    assert echo["body_sha256"] == digest.hexdigest()
    after = {name: vm_hwm_kib(pid) for name, pid in pids.items()}
    for name in pids:
        growth = after[name] - before[name]
        print(f"{name}: VmHWM {before[name]} KiB -> {after[name]} KiB (+{growth} KiB)")
        assert growth < MEMORY_GROWTH_LIMIT_KIB, (name, before[name], after[name])


def test_200_mib_response_body_with_bounded_memory(exchange: Exchange) -> None:
    assert exchange.consumer is not None and exchange.provider is not None
    pids = {"consumer": exchange.consumer.process.pid,
            "provider": exchange.provider.process.pid}
    before = {name: vm_hwm_kib(pid) for name, pid in pids.items()}
    expected = hashlib.sha256()
    block = bytes(range(256)) * 1024
    for _ in range(SIZE // len(block)):
        expected.update(block)
    received = hashlib.sha256()
    size = 0
    with socket.create_connection(("127.0.0.1", exchange.consumer_port), timeout=300) as sock:
        sock.sendall((f"GET {exchange.rest_target(BYTES, f'/{SIZE}')} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1\r\nX-Road-Client: {CLIENT}\r\n\r\n").encode())
        status, headers, body = read_response(sock)
        for part in body:
            received.update(part)
            size += len(part)
    assert status == 200
    assert size == SIZE
    assert received.hexdigest() == expected.hexdigest()
    assert headers.get("x-road-request-hash")
    after = {name: vm_hwm_kib(pid) for name, pid in pids.items()}
    for name in pids:
        growth = after[name] - before[name]
        print(f"{name}: VmHWM {before[name]} KiB -> {after[name]} KiB (+{growth} KiB)")
        assert growth < MEMORY_GROWTH_LIMIT_KIB, (name, before[name], after[name])


def test_graceful_stop_drains_then_closes_the_log(exchange: Exchange, tmp_path: Path) -> None:
    consumer = exchange.consumer
    assert consumer is not None
    body = b"y" * (4 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", exchange.consumer_port), timeout=60) as sock:
        sock.sendall((f"POST {exchange.rest_target(ECHO, '/in-flight')} HTTP/1.1\r\n"
                      f"Host: 127.0.0.1\r\nX-Road-Client: {CLIENT}\r\nX-Road-Id: in-flight-1\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode())
        sock.sendall(body[:1024])
        time.sleep(0.5)
        consumer.process.terminate()  # SIGTERM while the request is in flight
        time.sleep(0.5)
        sock.sendall(body[1024:])
        status, _headers, answer = read_response(sock)
        echo = json.loads(b"".join(answer))
    assert status == 200
    assert echo["body_size"] == len(body)
    assert consumer.process.wait(60) == 0
    database = exchange.config(exchange.layout.toyono).node.data_dir / "secserver.db"
    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT seq, kind, message_id FROM log_records ORDER BY seq").fetchall()
    in_flight = [seq for seq, kind, message_id in rows if message_id == "in-flight-1"]
    system_after = [seq for seq, kind, _ in rows if kind == "system" and seq > max(in_flight)]
    assert len(in_flight) == 2  # request and response were logged before the log closed
    assert system_after, "no stop record after the drained exchange"
    exchange.group.children.remove(consumer)
    exchange.consumer = exchange.start_node(exchange.layout.toyono)

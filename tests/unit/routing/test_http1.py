from __future__ import annotations

import asyncio
import hashlib
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from secserver.routing import http1
from secserver.routing.body import SpooledBody
from secserver.routing.errors import ExchangeError
from secserver.routing.http1 import Broken, Connection, StaleConnection, parse_head


class Unreachable(ExchangeError):
    code = "T.Unreachable"


class ConnectFailed(ExchangeError):
    code = "T.Connect"


class TimedOut(ExchangeError):
    code = "T.Timeout"


class Malformed(ExchangeError):
    code = "T.Malformed"


class TlsFailed(ExchangeError):
    code = "T.Tls"


class TooLarge(ExchangeError):
    code = "T.TooLarge"


FAILURES = http1.Failures(what="the test peer", unreachable=Unreachable, connect=ConnectFailed,
                          timeout=TimedOut, malformed=Malformed, tls=TlsFailed,
                          too_large=TooLarge)
LIMITS = http1.ResponseLimits(max_bytes=1 << 20, spool_threshold=1 << 16, spool_dir=None)
BODY = SpooledBody.from_bytes(b"ping")


# ---------------------------------------------------------------- response heads


def test_parse_head() -> None:
    status, headers, keep = parse_head(b"HTTP/1.1 201 Created\r\nContent-Type: a/b\r\n"
                                       b"X-Two:  v \r\nConnection: close")
    assert status == 201
    assert headers == [("content-type", "a/b"), ("x-two", "v"), ("connection", "close")]
    assert keep is False
    assert parse_head(b"HTTP/1.1 200 OK")[2] is True
    assert parse_head(b"HTTP/1.1 200")[:2] == (200, [])
    assert parse_head(b"HTTP/1.0 200 OK")[2] is False
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive")[2] is True
    assert parse_head(b"HTTP/1.1 200 OK\r\nConnection: x, Close")[2] is False
    assert parse_head(b"HTTP/1.1 200 OK\r\nX-Connection: close")[2] is True


@pytest.mark.parametrize("head", [b"THIS IS NOT HTTP", b"HTTP/1.1 2000 X", b"HTTP/2 200 OK",
                                  b"HTTP/1.1 20", b"HTTP/1.1 200OK", b"HTTP/1.1  200 OK",
                                  b"HTTP/1.1 2x0 OK", b"HTTP/1.1 \xb2\xb2\xb2 OK", b"",
                                  b"HTTP/1.1 200 OK\r\nNo colon here",
                                  b"HTTP/1.1 200 OK\r\n folded: header",
                                  b"HTTP/1.1 200 OK\r\nBad Name: x",
                                  b"HTTP/1.1 200 OK\r\nBad\tName: x",
                                  b"HTTP/1.1 200 OK\r\nName : x",
                                  b"HTTP/1.1 200 OK\r\n: no name",
                                  b"HTTP/1.1 200 OK\r\n\r\nX-A: 1",
                                  # a bare LF, CR or NUL hides a second header in a value
                                  b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 99",
                                  b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2",
                                  b"HTTP/1.1 200 OK\r\nX-A: 1\x00",
                                  b"HTTP/1.1 200 OK\nContent-Length: 99",
                                  b"HTTP/1.1 200 O\x00K"])
def test_malformed_heads(head: bytes) -> None:
    with pytest.raises(Broken):
        parse_head(head)


def test_header_count_is_limited() -> None:
    lines = b"".join(b"\r\nX-H%d: v" % i for i in range(http1.MAX_HEADERS))
    assert len(parse_head(b"HTTP/1.1 200 OK" + lines)[1]) == http1.MAX_HEADERS
    with pytest.raises(Broken, match="header lines"):
        parse_head(b"HTTP/1.1 200 OK" + lines + b"\r\nX-One-More: v")


def reference_parse_head(head: bytes) -> tuple[int, list[tuple[str, str]], bool]:
    """``parse_head`` as of 1f0a1c7, before the protocol-based client, kept as the reference."""
    lines = head.decode("utf-8", "surrogateescape").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") \
            or len(parts[1]) != 3 or not parts[1].isdigit():
        raise Broken(f"bad status line {lines[0][:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t") \
                or any(c in line for c in "\r\n\x00"):
            raise Broken(f"bad header line {line[:60]!r}")
        headers.append((name.lower(), value.strip(" \t")))
    tokens = {t.strip().lower() for k, v in headers if k == "connection" for t in v.split(",")}
    keep = "keep-alive" in tokens if parts[0] == "HTTP/1.0" else "close" not in tokens
    return int(parts[1]), headers, keep


def test_parse_head_decides_as_the_reference() -> None:
    """Generated heads with valid status lines: the same headers, keep-alive and refusals
    (the new parser is stricter only about the status line and the header count)."""
    rng = random.Random(6)
    pieces = ["Content-Length", "connection", "X-A", "a", "Z", ":", " ", "\t", "\x0b", "\xa0",
              "é", "close", "keep-alive", ",", "1", "\r\n", "\n", "\r", "\x00", "\udcff", "K"]
    for _ in range(5000):
        status = rng.choice(["HTTP/1.1 200 OK", "HTTP/1.0 204", "HTTP/1.1 302 Found it"])
        lines = ["".join(rng.choice(pieces) for _ in range(rng.randrange(1, 7)))
                 for _ in range(rng.randrange(0, 5))]
        head = "\r\n".join([status, *lines]).encode("utf-8", "surrogateescape")
        try:
            expected: object = reference_parse_head(head)
        except Broken:
            expected = Broken
        try:
            got: object = parse_head(head)
        except Broken:
            got = Broken
        assert got == expected, head


# ---------------------------------------------------------------- exchange on a connection


async def socket_connection() -> tuple[Connection, socket.socket]:
    """A real connected transport with the client's protocol; the far end is returned to
    keep it open (what the test feeds is given to the protocol directly)."""
    near, far = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(lambda: http1._Protocol(loop),
                                                       sock=near)
    return Connection(transport, protocol), far


async def run_exchange(pieces: list[bytes], *, method: str = "GET", eof: bool = True,
                       limits: http1.ResponseLimits = LIMITS,
                       lost: Exception | None = None) -> tuple[http1.Response, bool, bytes]:
    """``exchange`` while ``pieces`` arrive one loop iteration apart, then the end."""
    connection, far = await socket_connection()
    try:
        task = asyncio.ensure_future(http1.exchange(connection, method, "/t", "peer", [],
                                                    BODY, limits, FAILURES))
        for piece in pieces:
            await asyncio.sleep(0)
            connection.protocol.data_received(piece)
        await asyncio.sleep(0)
        if lost is not None:
            connection.protocol.connection_lost(lost)
        elif eof:
            connection.protocol.eof_received()
        response, reusable = await task
        body = response.body.read_all()
        response.body.close()
        return response, reusable, body
    finally:
        connection.close()
        far.close()


RESPONSES = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\nA\r\n0123456789\r\n0\r\nT: x\r\n\r\n",
    "close": b"HTTP/1.1 200 OK\r\nX-B: c\r\n\r\nrest of it",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nX: y\r\n\r\n"
               b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
}


@pytest.mark.parametrize("name", sorted(RESPONSES))
async def test_split_reads_at_every_byte_boundary(name: str) -> None:
    data = RESPONSES[name]
    whole, whole_reusable, whole_body = await run_exchange([data])
    assert whole_body in (b"hello", b"hello world0123456789", b"rest of it", b"ok")
    for cut in range(1, len(data)):
        response, reusable, body = await run_exchange([data[:cut], data[cut:]])
        assert (response.status, response.headers, reusable, body) == \
            (whole.status, whole.headers, whole_reusable, whole_body), cut
    response, reusable, body = await run_exchange([data[i:i + 1] for i in range(len(data))])
    assert (response.status, response.headers, body) == (whole.status, whole.headers,
                                                         whole_body)


async def test_reuse_and_surplus() -> None:
    ok = RESPONSES["length"]
    assert (await run_exchange([ok], eof=False))[1] is True
    assert (await run_exchange([RESPONSES["chunked"]], eof=False))[1] is True
    # bytes beyond the response (an answer to nothing): never reused
    assert (await run_exchange([ok + b"HTTP/1.1 200 OK\r\n"], eof=False))[1] is False
    assert (await run_exchange([RESPONSES["chunked"] + b"\r\n"], eof=False))[1] is False
    # "close", HTTP/1.0 and a body ended by the close: not reused either
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    assert (await run_exchange([closing], eof=False))[1] is False
    assert (await run_exchange([b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"],
                               eof=False))[1] is False
    assert (await run_exchange([RESPONSES["close"]]))[1] is False


async def test_pool_refuses_connections_with_late_surplus_or_end() -> None:
    pool = http1.ConnectionPool()
    for late in (b"HTTP/1.1 200 OK\r\n\r\n", None):
        connection, far = await socket_connection()
        try:
            pool.give_back("k", connection)
            if late is not None:
                connection.protocol.data_received(late)  # an answer to nothing
            else:
                connection.protocol.eof_received()
            assert pool.take("k") is None
            assert connection.transport.is_closing()
        finally:
            far.close()
    connection, far = await socket_connection()
    pool.give_back("k", connection)
    assert pool.take("k") is connection
    connection.close()
    far.close()
    await pool.close()


async def test_bodyless_answers() -> None:
    response, reusable, body = await run_exchange(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"], method="HEAD", eof=False)
    assert (body, reusable, response.body.size) == (b"", True, 0)
    assert response.body.digest_b64 == SpooledBody.from_bytes(b"").digest_b64
    response, reusable, body = await run_exchange([b"HTTP/1.1 204 No Content\r\n\r\n"],
                                                  eof=False)
    assert (response.status, body, reusable) == (204, b"", True)
    response, _, body = await run_exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                                            b"Content-Length: 0\r\n\r\n"], eof=False)
    assert body == b""


async def test_chunked_edge_cases() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
    for chunks, expected in [
        (b"0\r\n\r\n", b""),
        (b"0000000003\r\nabc\r\n0\r\n\r\n", b"abc"),
        (b"a \r\n0123456789\r\n0;last\r\n\r\n", b"0123456789"),   # space before CRLF
        (b"F\r\n" + b"x" * 15 + b"\r\n0\r\n\r\n", b"x" * 15),
        (b"3;a=b;c\r\nabc\r\n0\r\nX-1: a\r\nX-2: b\r\n\r\n", b"abc"),
    ]:
        assert (await run_exchange([head + chunks], eof=False))[2] == expected, chunks


@pytest.mark.parametrize("chunks", [
    b"zz\r\nabc\r\n0\r\n\r\n",               # not hex
    b"-3\r\nabc\r\n0\r\n\r\n",
    b"0x3\r\nabc\r\n0\r\n\r\n",
    b"\r\nabc\r\n0\r\n\r\n",                 # no size at all
    b";ext\r\n0\r\n\r\n",
    b"5\r\nabcdeXX0\r\n\r\n",                # chunk not followed by CRLF
    b"5\r\nabc",                             # the connection ends inside a chunk
    b"5\r\nabcde\r\n",                       # ... before the last chunk
    b"0\r\nX: 1\r\n",                        # ... inside the trailers
    b"1" * (http1.HEAD_LIMIT + 8),           # a size line without end
    b"3\r\nabc\r\n0\r\n" + b"X-T: 1\r\n" * 10000 + b"\r\n",  # trailers longer than a head
])
async def test_bad_chunked_bodies(chunks: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    with pytest.raises(Malformed):
        await run_exchange([head + chunks])


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: \xef\xbc\x93\r\n\r\nabc",  # a full-width three
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab",            # the body ends early
    b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\nab",        # ... a larger one too
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 099 Low\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n" * http1.MAX_INTERIM,
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n",                  # ends inside the head
    b"HTTP/1.1 200 OK\r\nX: " + b"v" * http1.HEAD_LIMIT,          # a head without end
    b"HTTP/1.1 200 OK\r\nX: " + b"v" * http1.HEAD_LIMIT + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX:\x00\r\nContent-Length: 0\r\n\r\n",
])
async def test_malformed_responses(data: bytes) -> None:
    with pytest.raises(Malformed):
        await run_exchange([data])


async def test_body_limits() -> None:
    small = http1.ResponseLimits(max_bytes=10, spool_threshold=4, spool_dir=None)
    ten = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789"
    assert (await run_exchange([ten], limits=small))[2] == b"0123456789"
    for data in (b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a",
                 b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n0123456789a",
                 b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"6\r\n012345\r\n6\r\n012345\r\n0\r\n\r\n",
                 b"HTTP/1.1 200 OK\r\n\r\n0123456789a"):
        with pytest.raises(TooLarge, match="larger than the limit of 10 bytes"):
            await run_exchange([data], limits=small)


async def test_stale_only_when_nothing_was_answered() -> None:
    with pytest.raises(StaleConnection):
        await run_exchange([])
    with pytest.raises(StaleConnection):
        await run_exchange([], lost=ConnectionResetError())
    with pytest.raises(Malformed, match="malformed"):
        await run_exchange([b"HTTP/1.1 2"])
    with pytest.raises(ConnectFailed):  # reset after part of the answer: no retry
        await run_exchange([b"HTTP/1.1 200 OK\r\n"], lost=ConnectionResetError())
    with pytest.raises(ConnectFailed):
        await run_exchange([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab"],
                           lost=ConnectionResetError())
    with pytest.raises(Malformed):  # a 100 Continue, then the end: answered
        await run_exchange([b"HTTP/1.1 100 Continue\r\n\r\n"])


async def test_header_with_a_line_break_is_not_sent() -> None:
    connection, far = await socket_connection()
    try:
        for name, value in (("X-A", "1\r\nX-B: 2"), ("X-A", "1\n"), ("X-A", "\r"),
                            ("X-A\r\nX-B", "1"), ("X-A", "a\x00")):
            with pytest.raises(Malformed, match="line break"):
                await http1.exchange(connection, "GET", "/", "peer", [(name, value)], BODY,
                                     LIMITS, FAILURES)
    finally:
        connection.close()
        far.close()


def test_request_head_bytes() -> None:
    head = http1.request_head("POST", "/a?b", "h:1", [("X-A", "v"), ("X-É", "\udcff")], 3,
                              FAILURES)
    assert head == (b"POST /a?b HTTP/1.1\r\nHost: h:1\r\nContent-Length: 3\r\n"
                    b"X-A: v\r\nX-\xc3\x89: \xff\r\n\r\n")


def test_response_header() -> None:
    response = http1.Response(200, [("a", "1"), ("b", "2"), ("b", "3")], BODY)
    assert response.header("A") == "1"
    assert response.header("b") is None
    assert response.header("c") is None


# ---------------------------------------------------------------- request() on a real server


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> AsyncIterator[int]:
    """A server on 127.0.0.1 running ``handler`` per connection; every connection closed
    and every handler ended when the test is done with it."""
    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(run(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head + await reader.readexactly(length)


async def one_request(pool: http1.ConnectionPool, port: int, *, deadline_s: float = 5.0,
                      body: SpooledBody = BODY,
                      limits: http1.ResponseLimits = LIMITS) -> http1.Response:
    async def connect() -> Connection:
        return await pool.connect("127.0.0.1", port, None, None, FAILURES)

    return await http1.request(pool, port, connect, "POST", "/x", "peer", [("X-A", "b")],
                               body, limits, FAILURES, deadline_s)


async def test_kept_alive_connection_and_stale_retry() -> None:
    connections: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await read_request(reader)  # one answer per connection
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the next request: closed without an answer
        writer.close()

    pool = http1.ConnectionPool()
    async for port in serve(handler):
        assert (await one_request(pool, port)).body.read_all() == b"ok"
        assert len(pool._idle[port]) == 1
        # sent on the kept connection, closed unanswered: retried once on a fresh one
        assert (await one_request(pool, port)).body.read_all() == b"ok"
        assert len(connections) == 2
    await pool.close()


async def test_fresh_connection_closed_without_answer_is_a_connect_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    pool = http1.ConnectionPool()
    async for port in serve(handler):
        with pytest.raises(ConnectFailed, match="closed the connection without answering"):
            await one_request(pool, port)
    await pool.close()


async def test_deadline_and_no_reuse_after_it() -> None:
    half = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(half)  # half of the body, the rest never in time
            await writer.drain()

    pool = http1.ConnectionPool()
    async for port in serve(handler):
        with pytest.raises(TimedOut, match=r"did not answer within 0\.2 seconds"):
            await one_request(pool, port, deadline_s=0.2)
        assert not pool._idle.get(port)
    await pool.close()


async def test_unreachable() -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = http1.ConnectionPool()
    with pytest.raises(Unreachable):
        await one_request(pool, port)
    await pool.close()


async def test_large_bodies_both_ways_through_the_spool(tmp_path: Path) -> None:
    """3 MiB up (chunks, write flow control) and down, the answer spooled to a file and
    hashed; once with a length from a server, once until the close."""
    payload = bytes(random.Random(1).randbytes(3 * 1024 * 1024))
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
        writer.write(payload)
        await writer.drain()

    limits = http1.ResponseLimits(max_bytes=8 << 20, spool_threshold=1 << 20,
                                  spool_dir=tmp_path)
    pool = http1.ConnectionPool()
    upload = SpooledBody.from_bytes(payload[::-1])
    async for port in serve(handler):
        response = await one_request(pool, port, body=upload, limits=limits)
        assert not response.body.in_memory
        assert response.body.size == len(payload)
        assert hashlib.sha256(response.body.read_all()).digest() == \
            hashlib.sha256(payload).digest()
        assert response.body.digest_b64 == SpooledBody.from_bytes(payload).digest_b64
        assert received[0].endswith(payload[::-1])
        response.body.close()
    await pool.close()
    # until the close, fed in pieces faster than read: reading pauses above HIGH_WATER
    pieces = [b"HTTP/1.1 200 OK\r\n\r\n"] + [payload[i:i + 65536]
                                              for i in range(0, len(payload), 65536)]
    _, reusable, body = await run_exchange(pieces, limits=limits)
    assert (body == payload, reusable) == (True, False)

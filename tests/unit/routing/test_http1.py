from __future__ import annotations

import asyncio

import pytest

from secserver.routing.http1 import Broken, body_source, parse_head, surplus


def test_parse_head() -> None:
    status, headers, keep = parse_head(b"HTTP/1.1 201 Created\r\nContent-Type: a/b\r\n"
                                       b"X-Two:  v \r\nConnection: close")
    assert status == 201
    assert headers == [("content-type", "a/b"), ("x-two", "v"), ("connection", "close")]
    assert keep is False
    assert parse_head(b"HTTP/1.1 200 OK")[2] is True
    assert parse_head(b"HTTP/1.0 200 OK")[2] is False
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive")[2] is True


@pytest.mark.parametrize("head", [b"THIS IS NOT HTTP", b"HTTP/1.1 2000 X", b"HTTP/2 200 OK",
                                  b"HTTP/1.1 200 OK\r\nNo colon here",
                                  b"HTTP/1.1 200 OK\r\n folded: header",
                                  b"HTTP/1.1 200 OK\r\nBad Name: x",
                                  # a bare LF, CR or NUL hides a second header in a value
                                  b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 99",
                                  b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2",
                                  b"HTTP/1.1 200 OK\r\nX-A: 1\x00"])
def test_malformed_heads(head: bytes) -> None:
    with pytest.raises(Broken):
        parse_head(head)


async def read(data: bytes, headers: list[tuple[str, str]], method: str = "GET",
               status: int = 200) -> tuple[bytes, bool]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    source, ends = body_source(reader, headers, method, status)
    return b"".join([chunk async for chunk in source]), ends


async def test_framings() -> None:
    assert await read(b"hello world", [("content-length", "5")]) == (b"hello", False)
    chunked = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    assert await read(chunked, [("transfer-encoding", "chunked")]) == (b"hello world", False)
    assert await read(b"rest of it", []) == (b"rest of it", True)
    assert await read(b"ignored", [("content-length", "7")], method="HEAD") == (b"", False)
    assert await read(b"", [], status=204) == (b"", False)


@pytest.mark.parametrize("data,headers", [
    (b"abc", [("content-length", "3"), ("transfer-encoding", "chunked")]),
    (b"abc", [("content-length", "3"), ("content-length", "4")]),
    (b"abc", [("content-length", "-1")]),
    (b"abc", [("transfer-encoding", "gzip, chunked")]),
    (b"zz\r\nabc\r\n0\r\n\r\n", [("transfer-encoding", "chunked")]),
    (b"5\r\nabcdeXX0\r\n\r\n", [("transfer-encoding", "chunked")]),
    (b"ab", [("content-length", "3")]),
    (b"abc", [("content-length", "\uff13")]),  # a full-width digit three
    (b"abc", [("content-length", "+3")]),
])
async def test_bad_framings(data: bytes, headers: list[tuple[str, str]]) -> None:
    with pytest.raises((Broken, asyncio.IncompleteReadError)):
        await read(data, headers)


async def test_surplus_bytes_after_a_response() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"hello")
    source, _ = body_source(reader, [("content-length", "5")], "GET", 200)
    assert b"".join([c async for c in source]) == b"hello"
    assert not surplus(reader)
    reader.feed_data(b"HTTP/1.1 200 OK")
    assert surplus(reader)


async def test_endless_trailers_are_refused() -> None:
    trailers = b"X-T: 1\r\n" * 10000  # more than a response head may hold
    with pytest.raises(Broken, match="trailer"):
        await read(b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n",
                   [("transfer-encoding", "chunked")])

"""A test backend for the exchange's integration tests: run it as a real process.

``python tests/exchange_backend.py --port P --garbage-port G`` serves on 127.0.0.1:

* ``ANY /echo[/...]``: JSON with the method, raw path, query, headers and the body's size
  and SHA-256 (hashed while streaming, so big bodies cost no memory);
* ``GET /bytes/{n}``: ``n`` bytes (a repeating pattern), streamed;
* ``ANY /slow/{seconds}``: answers after a delay;
* ``ANY /status/{code}``: answers that status with a JSON body;
* ``POST /soap``: a SOAP response echoing the request's X-Road header; ``/soap-noecho``
  answers without the header; ``<pad xmlns="urn:test">N</pad>`` in the request adds N
  bytes to the answer;
* on port G, anything that connects gets bytes that are not HTTP, then a close; except
  ``/no-content-type``: a valid response without ``Content-Type``, delimited by the close;
  and ``/desync``: a valid response followed at once by a second, unasked-for one.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from typing import Any

from aiohttp import web
from lxml import etree

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"


async def echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(256 * 1024):
        digest.update(chunk)
        size += len(chunk)
    path, _, query = request.raw_path.partition("?")
    info: dict[str, Any] = {
        "method": request.method, "path": path, "query": query,
        "headers": {k.lower(): v for k, v in request.headers.items()},
        "body_size": size, "body_sha256": digest.hexdigest(),
    }
    return web.json_response(info, headers={"X-Backend": "echo", "X-Town": "豊野"})


async def pattern(request: web.Request) -> web.StreamResponse:
    total = int(request.match_info["n"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = total
    await response.prepare(request)
    block = bytes(range(256)) * 1024
    sent = 0
    while sent < total:
        part = block[:min(len(block), total - sent)]
        await response.write(part)
        sent += len(part)
    await response.write_eof()
    return response


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.match_info["seconds"]))
    return web.json_response({"slept": True})


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.json_response({"status": code}, status=code)


async def soap(request: web.Request) -> web.Response:
    data = await request.read()
    # the charset of Content-Type wins over the XML declaration (RFC 7303), as in X-Road
    parser = etree.XMLParser(resolve_entities=False, no_network=True,
                             encoding=request.charset)
    envelope = etree.fromstring(data, parser=parser)
    header = envelope.find(f"{{{SOAP_ENV}}}Header")
    header_xml = etree.tostring(header).decode() \
        if header is not None and request.path == "/soap" else ""
    # <pad xmlns="urn:test">N</pad> anywhere in the request: N more bytes in the answer
    pad = envelope.findtext(".//{urn:test}pad")
    padding = "p" * int(pad) if pad and pad.isdigit() else ""
    body = (f'<?xml version="1.0" encoding="UTF-8"?><SOAP-ENV:Envelope '
            f'xmlns:SOAP-ENV="{SOAP_ENV}">{header_xml}<SOAP-ENV:Body>'
            f'<echoResponse xmlns="urn:test">ok{padding}</echoResponse></SOAP-ENV:Body>'
            '</SOAP-ENV:Envelope>')
    return web.Response(body=body.encode(), content_type="text/xml", charset="utf-8")


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.read(1024)
    if head.split(b" ", 2)[1:2] == [b"/desync"]:
        # a response followed by a second one nobody asked for, on a kept-alive connection
        answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
        writer.write(answer % (5, b"first") + answer % (6, b"POISON"))
        await writer.drain()
        await reader.read(1024)  # the next request, if the client sends one
        await asyncio.sleep(1)
        writer.close()
        return
    if head.split(b" ", 2)[1:2] == [b"/no-content-type"]:
        # valid HTTP, but no Content-Type and a close-delimited body
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nplain bytes")
        await writer.drain()
        writer.close()
        return
    writer.write(b"THIS IS NOT HTTP\x00\x01\x02\r\n\r\n")
    await writer.drain()
    writer.close()


async def root(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app() -> web.Application:
    app = web.Application(client_max_size=1024 ** 3)
    app.router.add_route("*", "/echo", echo)
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    app.router.add_get("/bytes/{n:\\d+}", pattern)
    app.router.add_route("*", "/slow/{seconds}", slow)
    app.router.add_route("*", "/status/{code:\\d+}", status)
    app.router.add_post("/soap", soap)
    app.router.add_post("/soap-noecho", soap)
    app.router.add_get("/", root)
    return app


async def main(port: int, garbage_port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server = await asyncio.start_server(garbage, "127.0.0.1", garbage_port)
    async with server:
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--garbage-port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.garbage_port))

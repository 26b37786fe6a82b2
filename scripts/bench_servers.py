"""Servers for the benchmark: the backend and the two plain reverse proxies of the baseline.

Run as separate processes by ``scripts/bench.py``::

    python scripts/bench_servers.py backend --port P
    python scripts/bench_servers.py server-proxy --port P --upstream http://127.0.0.1:B \
        --cert tls.crt --key tls.key --ca ca.crt       # mutual TLS in, HTTP out
    python scripts/bench_servers.py client-proxy --port P --upstream https://127.0.0.1:S \
        --cert client.crt --key client.key --ca ca.crt # HTTP in, mutual TLS out

The baseline is what an operator would write with aiohttp alone: read the body, forward it
with a keep-alive ``ClientSession``, return the answer; no signing, checks or logging.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

MAX_BODY = 256 * 1024 * 1024
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
})
UPSTREAM_KEY = web.AppKey("upstream", str)
SESSION_KEY = web.AppKey("session", ClientSession)


async def backend_handler(request: web.Request) -> web.Response:
    """POST/PUT: echo the body. GET with ``?size=N``: N fixed bytes. Otherwise a small JSON."""
    if request.can_read_body:
        body = await request.read()
        return web.Response(body=body, content_type="application/octet-stream")
    size = request.query.get("size")
    if size is not None and size.isdigit() and int(size) <= MAX_BODY:
        return web.Response(body=b"x" * int(size), content_type="application/octet-stream")
    return web.json_response({"ok": True, "path": request.path})


def backend_app() -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", backend_handler)
    return app


async def proxy_handler(request: web.Request) -> web.Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = await request.read()
    session = request.app[SESSION_KEY]
    async with session.request(request.method, request.app[UPSTREAM_KEY] + request.path_qs,
                               headers=headers, data=body or None) as upstream:
        answer = await upstream.read()
        out_headers = {k: v for k, v in upstream.headers.items()
                       if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"}
        return web.Response(status=upstream.status, body=answer, headers=out_headers)


def proxy_app(upstream: str, client_ssl: ssl.SSLContext | None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[UPSTREAM_KEY] = upstream.rstrip("/")

    async def session_context(app: web.Application) -> AsyncIterator[None]:
        connector = TCPConnector(limit=0, ssl=client_ssl if client_ssl is not None else False)
        async with ClientSession(connector=connector, auto_decompress=False,
                                 timeout=ClientTimeout(total=60)) as session:
            app[SESSION_KEY] = session
            yield

    app.cleanup_ctx.append(session_context)
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    return app


def server_tls(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """Mutual TLS on the server side: a client certificate from our CA is required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(cert), str(key))
    return context


def client_tls(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """Mutual TLS on the client side: verify the server against our CA, present our cert."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["backend", "server-proxy", "client-proxy"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    parser.add_argument("--ca", type=Path)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args(argv)
    if args.role != "backend" and not (args.upstream and args.cert and args.key and args.ca):
        parser.error(f"{args.role} needs --upstream, --cert, --key and --ca")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    listen_ssl: ssl.SSLContext | None = None
    if args.role == "backend":
        app = backend_app()
    elif args.role == "server-proxy":
        listen_ssl = server_tls(args.cert, args.key, args.ca)
        app = proxy_app(args.upstream, None)
    else:
        app = proxy_app(args.upstream, client_tls(args.cert, args.key, args.ca))
    web.run_app(app, host="127.0.0.1", port=args.port, ssl_context=listen_ssl,
                access_log=None, print=None, backlog=1024)


if __name__ == "__main__":
    main()

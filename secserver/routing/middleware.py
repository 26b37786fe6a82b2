"""Every error becomes an X-Road coded answer (REST JSON or SOAP fault): ``coded_error``
for what a handler raises (the node's exchange ports call it), ``CodedRequestHandler`` for
HTTP-level failures.

REST: ``{"type": CODE, "message": ..., "detail": ...}`` with a fitting status and
``X-Road-Error: CODE``. SOAP (a POST to ``/``): a SOAP 1.1 fault whose ``faultcode`` is
the code, HTTP 500, and the same ``X-Road-Error`` header. Unexpected exceptions are logged
(with a reference) and answered as ``InternalError`` without any internal detail.
"""

from __future__ import annotations

import json
import re
import uuid

import structlog
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from secserver.errors import SecServerError
from secserver.routing import headers as h
from secserver.routing.errors import (
    InternalError,
    InvalidRequest,
    MessageTooLarge,
    RequestTimeout,
    Side,
    qualified_code,
)
from secserver.routing.soap import render_fault

log = structlog.get_logger("secserver.routing")

# X-Road headers known so far about a request, echoed on its error response
CONTEXT = web.RequestKey("secserver-xroad", dict[str, str])


def is_soap(request: web.BaseRequest) -> bool:
    return request.method == "POST" and request.raw_path.split("?", 1)[0] == "/"


def error_response(request: web.BaseRequest, error: SecServerError, side: Side) -> web.Response:
    code = qualified_code(error, side)
    headers: dict[str, str] = {h.X_ERROR: code}
    known = request.get(CONTEXT)
    if known is not None:
        headers.update(known)
    if is_soap(request):
        response = web.Response(status=500, body=render_fault(code, error.message, error.detail),
                                content_type="text/xml", charset="utf-8", headers=headers)
    else:
        body = json.dumps({"type": code, "message": error.message, "detail": error.detail})
        response = web.Response(status=error.http_status, text=body,
                                content_type="application/json", headers=headers)
    if isinstance(error, MessageTooLarge | RequestTimeout | InvalidRequest):
        response.force_close()  # the rest of the request may still be on the wire
    return response


def coded_error(request: web.BaseRequest, exc: Exception, side: Side) -> web.StreamResponse:
    """The coded answer to an exception a handler raised; call it in the ``except`` block.

    A ``SecServerError`` is answered with its code; an HTTP error (4xx/5xx) as
    ``InvalidRequest``; anything unexpected is logged with a reference and answered as
    ``InternalError`` without internal detail. A lost caller (``ConnectionError``) and HTTP
    exceptions below 400 are raised again."""
    if isinstance(exc, SecServerError):
        log.info("exchange refused", code=qualified_code(exc, side), reason=exc.message,
                 path=request.raw_path[:200], method=request.method)
        return error_response(request, exc, side)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        error: SecServerError = InvalidRequest(
            f"{exc.reason}: this port serves X-Road REST calls under /r1/ and SOAP "
            "envelopes posted to /", http_status=exc.status)
        return error_response(request, error, side)
    if isinstance(exc, ConnectionError):
        # the caller went away while we answered: nobody to tell, nothing internal broke
        log.info("caller disconnected", path=request.raw_path[:200], method=request.method)
        raise exc
    reference = uuid.uuid4().hex
    log.exception("internal error", reference=reference)
    failure = InternalError("an internal error occurred; the operator can find it in the "
                            "node's log", detail=f"reference {reference}")
    return error_response(request, failure, side)


async def expect_continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` as aiohttp's application router does: in HTTP/1.1
    any other expectation is refused (417); HTTP/1.0 has none, the header is ignored."""
    expect = request.headers.get(hdrs.EXPECT)
    if not expect or request.version != HttpVersion11:
        return
    if expect.lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the real answer has not started yet
        return
    raise InvalidRequest("the only expectation this port meets is 'Expect: 100-continue'",
                         detail=expect[:80], http_status=417)


_REQUEST_LINE = re.compile(rb"[A-Z]{3,10} [!-~]+ HTTP/")
_LAST_REQUEST_LINE = re.compile(rb"(?:^|\n)([A-Z]{3,10}) ([!-~]+) HTTP/[0-9.]+\r?\n")
_XML_CONTENT_TYPE = re.compile(rb"(?im)^content-type[ \t]*:[ \t]*text/xml\b")
HEAD_SNIFF_BYTES = 16384


def looks_like_soap_head(head: bytes) -> bool:
    """Whether the last request head in ``head`` (raw bytes, possibly cut off or
    malformed) is a SOAP call: ``POST /`` with a ``text/xml`` Content-Type."""
    matches = list(_LAST_REQUEST_LINE.finditer(head))
    if not matches:
        return False
    last = matches[-1]
    if last.group(1) != b"POST" or last.group(2).split(b"?", 1)[0] != b"/":
        return False
    headers = head[last.end():].split(b"\r\n\r\n", 1)[0]
    return _XML_CONTENT_TYPE.search(headers) is not None


class CodedRequestHandler(RequestHandler):
    """Answers HTTP-level failures (malformed request line or headers, header limits,
    conflicting framing), which happen before any handler runs, with a coded error:
    a SOAP fault when the request can be recognised as SOAP (``POST /`` with a
    ``text/xml`` Content-Type), else JSON.

    aiohttp no longer has the request's head when it reports such a failure, so the
    first bytes of the latest request head are kept (at most ``HEAD_SNIFF_BYTES``).

    ``peer_facts`` is where ``routing.context.peer_facts`` keeps what the connection says
    about its caller (certificate, address), learnt once per connection."""

    _head = b""
    peer_facts: object = None

    def data_received(self, data: bytes) -> None:
        if not data:  # aiohttp's nudge when a handler read the body (resume_reading)
            super().data_received(data)
            return
        if _REQUEST_LINE.match(data):  # a request head starts (clients send it first)
            self._head = data[:HEAD_SNIFF_BYTES]
        elif len(self._head) < HEAD_SNIFF_BYTES:
            self._head += data[:HEAD_SNIFF_BYTES - len(self._head)]
        super().data_received(data)

    def _is_soap(self, request: BaseRequest) -> bool:
        if request.method == "UNKNOWN":  # aiohttp's stand-in for an unparsable request
            return looks_like_soap_head(self._head)
        return is_soap(request) and request.content_type == "text/xml"

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        side: Side = getattr(self._manager, "secserver_side", "ClientProxy")
        error: SecServerError
        if status >= 500:
            reference = uuid.uuid4().hex
            log.error("internal error", reference=reference,
                      error=type(exc).__name__ if exc else None)
            error = InternalError("an internal error occurred; the operator can find it in "
                                  "the node's log", detail=f"reference {reference}")
        else:
            reason = (getattr(exc, "message", None) or message or "malformed request")
            error = InvalidRequest("the request is not acceptable HTTP/1.1 (malformed, "
                                   "ambiguous framing, or beyond the header limits)",
                                   detail=str(reason)[:200], http_status=status)
        code = qualified_code(error, side)
        if status < 500:
            log.info("exchange refused", code=code, reason=error.message, detail=error.detail)
        response: web.Response
        if self._is_soap(request):
            response = web.Response(status=500,
                                    body=render_fault(code, error.message, error.detail),
                                    content_type="text/xml", charset="utf-8",
                                    headers={h.X_ERROR: code})
        else:
            body = json.dumps({"type": code, "message": error.message,
                               "detail": error.detail})
            response = web.Response(status=error.http_status, text=body,
                                    content_type="application/json",
                                    headers={h.X_ERROR: code})
        response.force_close()
        return response


class _CodedServer(web.Server):
    secserver_side: Side = "ClientProxy"

    def __call__(self) -> RequestHandler:
        return CodedRequestHandler(self, loop=self._loop, **self._kwargs)


def use_coded_errors(server: web.Server | None, side: Side) -> None:
    """Make a runner's server answer HTTP-level failures with coded errors."""
    if server is None:
        raise RuntimeError("the runner is not set up")
    server.__class__ = _CodedServer
    assert isinstance(server, _CodedServer)
    server.secserver_side = side

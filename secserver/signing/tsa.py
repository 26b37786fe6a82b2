"""The development RFC 3161 Time-Stamp Authority (``secserver tsa serve``).

It answers ``POST`` requests of type ``application/timestamp-query`` with
``application/timestamp-reply``, signing with ``DIR/tsa/tsa.key`` (certificate
``DIR/tsa/tsa.crt`` from ``secserver pki init-dev``). Serial numbers are reserved in blocks
in ``DIR/tsa/serial`` (under a file lock, written and fsynced before any serial of a block
is used), so they never repeat across restarts or between TSA processes sharing the
directory; a restart skips the unused rest of a block. For development and tests only:
no HSM, no clock audit.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import signal
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc3161

from secserver.signing import der
from secserver.signing.cms import CmsSigner, attribute
from secserver.signing.errors import KeyUnavailable
from secserver.signing.keys import PrivateKey, load_certificate, load_private_key
from secserver.signing.timestamp import (
    ID_AA_SIGNING_CERTIFICATE_V2,
    ID_CT_TSTINFO,
    IMPRINT_HASHES,
    QUERY_TYPE,
    REPLY_TYPE,
)
from secserver.signing.trust import Purpose, check_purpose

DEV_POLICY = "2.25.338955374141899732569297194573310171554"
SERIAL_BLOCK = 1000
MAX_REQUEST = 64 * 1024
_DIGEST_SIZES = {"sha256": 32, "sha384": 48, "sha512": 64}

# PKIFailureInfo bits (RFC 3161 section 2.4.2)
BAD_ALG, BAD_REQUEST, BAD_DATA_FORMAT, UNACCEPTED_POLICY, UNACCEPTED_EXTENSION = 0, 2, 5, 15, 16


class SerialStore:
    """Serial numbers that never repeat, across restarts and concurrent processes.

    The file holds the highest serial reserved so far. A process reserves a block under an
    exclusive lock (``<file>.lock``), reading the file afresh, and fsyncs the new end before
    using any serial of it; serials grow strictly within a process.
    """

    def __init__(self, path: Path, block: int = SERIAL_BLOCK) -> None:
        self.path = path
        self.block = block
        self._lock = threading.Lock()
        self._read()  # fail at start, not at the first request
        self._next = 1
        self._limit = 0

    def _read(self) -> int:
        try:
            text = self.path.read_text(encoding="ascii").strip()
            return int(text) if text else 0
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise KeyUnavailable(f"TSA serial file {self.path} is unreadable: {exc}; it must "
                                 "hold one integer (never reset it: serials must not "
                                 "repeat)") from exc

    def _reserve(self) -> tuple[int, int]:
        lock_fd = os.open(self.path.with_name(self.path.name + ".lock"),
                          os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            reserved = self._read()
            limit = reserved + self.block
            tmp = self.path.with_name(self.path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, f"{limit}\n".encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return reserved + 1, limit
        finally:
            os.close(lock_fd)  # releases the lock

    def next(self) -> int:
        with self._lock:
            if self._next > self._limit:
                self._next, self._limit = self._reserve()
            serial = self._next
            self._next += 1
            return serial


def _bit_string(bit: int) -> bytes:
    size = bit // 8 + 1
    value = bytearray(size)
    value[bit // 8] = 0x80 >> (bit % 8)
    return der.tlv(der.BIT_STRING, bytes((7 - bit % 8,)) + bytes(value))


def rejection(failure_bit: int, text: str) -> bytes:
    """A TimeStampResp with status rejection, a failInfo bit and a text."""
    return der.sequence(der.sequence(
        der.integer(2), der.sequence(der.tlv(der.UTF8_STRING, text.encode("utf-8"))),
        _bit_string(failure_bit)))


class DevTsa:
    """Turns TimeStampReq DER into TimeStampResp DER (thread-safe)."""

    def __init__(self, key: PrivateKey, certificate: x509.Certificate, serials: SerialStore,
                 *, policy: str = DEV_POLICY) -> None:
        check_purpose(certificate, Purpose.TIMESTAMPING)
        self.certificate = certificate
        self.policy = policy
        self.serials = serials
        self._signer = CmsSigner(key, certificate)
        cert_hash = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
        # SigningCertificateV2 { certs SEQUENCE OF ESSCertIDv2 { certHash } } (SHA-256 default)
        self._ess = attribute(ID_AA_SIGNING_CERTIFICATE_V2,
                              der.sequence(der.sequence(der.sequence(der.octet_string(cert_hash)))))

    @classmethod
    def from_directory(cls, directory: Path, passphrase: bytes | None = None) -> DevTsa:
        folder = directory / "tsa"
        return cls(load_private_key(folder / "tsa.key", passphrase),
                   load_certificate(folder / "tsa.crt"), SerialStore(folder / "serial"))

    def respond(self, request_der: bytes, now: datetime) -> bytes:
        """The TimeStampResp for one request (a rejection when the request is unusable)."""
        try:
            request, rest = der_decoder.decode(request_der, asn1Spec=rfc3161.TimeStampReq())
        except PyAsn1Error:
            return rejection(BAD_DATA_FORMAT, "the request is not a DER TimeStampReq")
        if rest:
            return rejection(BAD_DATA_FORMAT, "trailing bytes after the TimeStampReq")
        if int(request["version"]) != 1:
            return rejection(BAD_REQUEST, "TimeStampReq version must be 1")
        imprint = request["messageImprint"]
        name = IMPRINT_HASHES.get(str(imprint["hashAlgorithm"]["algorithm"]))
        if name is None:
            return rejection(BAD_ALG, "message imprint hash must be SHA-256, SHA-384 or "
                             "SHA-512")
        if len(bytes(imprint["hashedMessage"])) != _DIGEST_SIZES[name]:
            return rejection(BAD_DATA_FORMAT, "message imprint has the wrong length")
        if request["reqPolicy"].isValue and str(request["reqPolicy"]) != self.policy:
            return rejection(UNACCEPTED_POLICY, f"this TSA only issues policy {self.policy}")
        if request["extensions"].isValue and len(request["extensions"]):
            return rejection(UNACCEPTED_EXTENSION, "request extensions are not supported")
        imprint_der = _raw_imprint(request_der)
        nonce = int(request["nonce"]) if request["nonce"].isValue else None
        cert_req = bool(request["certReq"]) if request["certReq"].isValue else False
        serial = self.serials.next()
        tst_info = der.sequence(
            der.integer(1), der.oid(self.policy), imprint_der, der.integer(serial),
            der.generalized_time(now), der.sequence(der.integer(1)),
            der.integer(nonce) if nonce is not None else b"",
        )
        token = self._signer.sign(tst_info, signing_time=now, detached=False,
                                  content_type=ID_CT_TSTINFO, extra_attributes=(self._ess,),
                                  certificates=cert_req)
        return der.sequence(der.sequence(der.integer(0)), token)


def _raw_imprint(request_der: bytes) -> bytes:
    start, end = der.expect(request_der, 0, der.SEQUENCE, "TimeStampReq")
    items = der.children(request_der, start, end)
    return request_der[items[1][1]:items[1][3]]


# --- HTTP ------------------------------------------------------------------------------

TSA_KEY = web.AppKey("tsa", DevTsa)


async def _timestamp(request: web.Request) -> web.Response:
    if request.content_type != QUERY_TYPE:
        return web.Response(status=415, text=f"send {QUERY_TYPE}\n")
    body = await request.read()
    tsa = request.app[TSA_KEY]
    loop = asyncio.get_running_loop()
    reply = await loop.run_in_executor(None, tsa.respond, body, datetime.now(UTC))
    return web.Response(body=reply, content_type=REPLY_TYPE)


async def _health(_request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def make_app(tsa: DevTsa) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST)
    app[TSA_KEY] = tsa
    app.router.add_get("/healthz", _health)
    app.router.add_post("/{tail:.*}", _timestamp)
    return app


async def serve(tsa: DevTsa, host: str, port: int, ready: Callable[[int], None]) -> None:
    """Serve until SIGINT or SIGTERM; ``ready(port)`` is called once listening."""
    runner = web.AppRunner(make_app(tsa), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        ready(sockets[0].getsockname()[1] if sockets else port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()

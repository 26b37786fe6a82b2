"""RFC 3161 timestamps: build requests, ask a TSA over HTTP, verify tokens fully.

``verify_timestamp`` checks everything a relying party must: the token is CMS SignedData
of content type id-ct-TSTInfo, the message imprint matches the data, the nonce and policy
(when expected), the ESS signing-certificate attribute names the signer, the TSA
certificate chains to a trusted CA at ``now`` with timeStamping as its only, critical,
extended key usage, and the CMS signature verifies. Every failure raises a
``TimestampError`` subclass; an unreachable or slow TSA raises ``TimestampUnavailable``.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyasn1.codec.der import decoder as der_decoder
from pyasn1.error import PyAsn1Error
from pyasn1_modules import rfc3161, rfc5035

from secserver.signing import der
from secserver.signing.cms import (
    ID_SHA256,
    ID_SHA384,
    ID_SHA512,
    certificate_from_der,
    parse_signed_data,
    verify_parsed,
)
from secserver.signing.errors import (
    MalformedSignature,
    TimestampError,
    TimestampRejected,
    TimestampUnavailable,
    VerificationError,
)
from secserver.signing.trust import Purpose, TrustStore

ID_CT_TSTINFO = "1.2.840.113549.1.9.16.1.4"
ID_AA_SIGNING_CERTIFICATE = "1.2.840.113549.1.9.16.2.12"
ID_AA_SIGNING_CERTIFICATE_V2 = "1.2.840.113549.1.9.16.2.47"
QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
MAX_REPLY = 256 * 1024
IMPRINT_HASHES = {ID_SHA256: "sha256", ID_SHA384: "sha384", ID_SHA512: "sha512"}
FAILURES = {0: "badAlg", 2: "badRequest", 5: "badDataFormat", 14: "timeNotAvailable",
            15: "unacceptedPolicy", 16: "unacceptedExtension", 17: "addInfoNotAvailable",
            25: "systemFailure"}
STATUS = {0: "granted", 1: "grantedWithMods", 2: "rejection", 3: "waiting",
          4: "revocationWarning", 5: "revocationNotification"}


@dataclass(frozen=True)
class TimestampInfo:
    """A verified timestamp: which TSA certificate, what time, serial, policy, nonce."""

    tsa: x509.Certificate
    time: datetime
    serial: int
    policy: str
    nonce: int | None = None


def build_request(data: bytes, nonce: int, *, policy: str | None = None,
                  cert_req: bool = True) -> bytes:
    """A DER TimeStampReq over SHA-256(``data``)."""
    return der.sequence(
        der.integer(1),
        der.sequence(der.sequence(der.oid(ID_SHA256)),
                     der.octet_string(hashlib.sha256(data).digest())),
        *( [der.oid(policy)] if policy else []),
        der.integer(nonce),
        der.boolean(True) if cert_req else b"",
    )


def new_nonce() -> int:
    return secrets.randbits(63) | 1


# --- response parsing ------------------------------------------------------------------

def parse_response(response_der: bytes) -> bytes:
    """The TimeStampToken DER of a TimeStampResp; raise if not granted."""
    try:
        start, end = der.expect(response_der, 0, der.SEQUENCE, "TimeStampResp")
        if end != len(response_der):
            raise der.DerError("trailing bytes after TimeStampResp")
        items = der.children(response_der, start, end)
        if not items or items[0][0] != der.SEQUENCE:
            raise der.DerError("TimeStampResp has no status")
        status_der = response_der[items[0][1]:items[0][3]]
        status, _ = der_decoder.decode(status_der, asn1Spec=rfc3161.PKIStatusInfo())
    except (der.DerError, PyAsn1Error) as exc:
        raise TimestampError(f"the TSA's answer is not a TimeStampResp: {exc}") from exc
    code = int(status["status"])
    if code not in (0, 1):
        texts = [str(t) for t in status["statusString"]] if status["statusString"].isValue \
            else []
        failures = []
        if status["failInfo"].isValue:
            bits = status["failInfo"]
            failures = [FAILURES.get(i, str(i)) for i in range(len(bits)) if bits[i]]
        raise TimestampRejected(
            f"the TSA refused the request: status {STATUS.get(code, code)}"
            + (f", failure {', '.join(failures)}" if failures else "")
            + (f": {'; '.join(texts)}" if texts else ""))
    if len(items) < 2:
        raise TimestampError("the TSA granted the request but sent no token")
    return response_der[items[1][1]:items[1][3]]


def _tst_info(content: bytes) -> rfc3161.TSTInfo:
    try:
        info, rest = der_decoder.decode(content, asn1Spec=rfc3161.TSTInfo())
    except PyAsn1Error as exc:
        raise TimestampError(f"the token's TSTInfo cannot be parsed: {exc}") from exc
    if rest:
        raise TimestampError("trailing bytes after TSTInfo")
    if int(info["version"]) != 1:
        raise TimestampError(f"TSTInfo version {int(info['version'])} is not 1")
    return info


def _gen_time(info: rfc3161.TSTInfo) -> datetime:
    try:
        return der.read_time(der.GENERALIZED_TIME, bytes(info["genTime"]))
    except der.DerError as exc:
        raise TimestampError(f"the token's genTime is invalid: {exc}") from exc


def _check_imprint(info: rfc3161.TSTInfo, data: bytes) -> None:
    imprint = info["messageImprint"]
    alg = str(imprint["hashAlgorithm"]["algorithm"])
    name = IMPRINT_HASHES.get(alg)
    if name is None:
        raise TimestampError(f"the token's imprint uses hash {alg}; expected SHA-256/384/512")
    if bytes(imprint["hashedMessage"]) != hashlib.new(name, data).digest():
        raise TimestampError("the token's message imprint does not match the data: it "
                             "timestamps something else")


def _check_ess(attributes: dict[str, list[bytes]], cert_der: bytes) -> None:
    if ID_AA_SIGNING_CERTIFICATE_V2 in attributes:
        value = attributes[ID_AA_SIGNING_CERTIFICATE_V2][0]
        try:
            ess, _ = der_decoder.decode(value, asn1Spec=rfc5035.SigningCertificateV2())
            first = ess["certs"][0]
            alg = (str(first["hashAlgorithm"]["algorithm"])
                   if first["hashAlgorithm"].isValue else ID_SHA256)
            wanted = bytes(first["certHash"])
        except (PyAsn1Error, IndexError) as exc:
            raise TimestampError(f"signingCertificateV2 attribute is malformed: {exc}") from exc
        name = IMPRINT_HASHES.get(alg)
        if name is None:
            raise TimestampError(f"signingCertificateV2 uses unsupported hash {alg}")
        actual = hashlib.new(name, cert_der).digest()
    elif ID_AA_SIGNING_CERTIFICATE in attributes:
        value = attributes[ID_AA_SIGNING_CERTIFICATE][0]
        try:
            ess, _ = der_decoder.decode(value, asn1Spec=rfc5035.SigningCertificate())
            wanted = bytes(ess["certs"][0]["certHash"])
        except (PyAsn1Error, IndexError) as exc:
            raise TimestampError(f"signingCertificate attribute is malformed: {exc}") from exc
        actual = hashlib.sha1(cert_der, usedforsecurity=False).digest()
    else:
        raise TimestampError("the token lacks the ESS signing-certificate attribute that "
                             "RFC 3161 requires")
    if wanted != actual:
        raise TimestampError("the token's ESS signing-certificate attribute names another "
                             "certificate than the one that signed it")


def token_info(token_der: bytes) -> tuple[rfc3161.TSTInfo, bytes]:
    """Parse (without verifying) a token: its TSTInfo and raw TSTInfo bytes."""
    try:
        parsed = parse_signed_data(token_der)
    except MalformedSignature as exc:
        raise TimestampError(f"timestamp token is not CMS SignedData: {exc.message}") from exc
    if parsed.content_type != ID_CT_TSTINFO or parsed.content is None:
        raise TimestampError("timestamp token does not carry a TSTInfo")
    return _tst_info(parsed.content), parsed.content


def verify_timestamp(token_der: bytes, data: bytes, trust: TrustStore, now: datetime,
                     nonce: int | None = None, *, policy: str | None = None) -> TimestampInfo:
    """Fully verify a TimeStampToken over ``data`` at ``now`` (see module docstring)."""
    try:
        parsed = parse_signed_data(token_der)
    except MalformedSignature as exc:
        raise TimestampError(f"timestamp token is not CMS SignedData: {exc.message}") from exc
    if parsed.content_type != ID_CT_TSTINFO or parsed.content is None:
        raise TimestampError(f"timestamp token content type {parsed.content_type} is not "
                             "id-ct-TSTInfo, or the TSTInfo is missing")
    info = _tst_info(parsed.content)
    _check_imprint(info, data)
    token_nonce = int(info["nonce"]) if info["nonce"].isValue else None
    if nonce is not None and token_nonce != nonce:
        raise TimestampError(f"the token's nonce {token_nonce} is not the request's {nonce}: "
                             "the answer belongs to another request")
    token_policy = str(info["policy"])
    if policy is not None and token_policy != policy:
        raise TimestampError(f"the token's policy {token_policy} is not the expected {policy}")
    if parsed.signed_attrs is None:
        raise TimestampError("the token has no signed attributes")
    if not parsed.certificates:
        raise TimestampError("the token carries no TSA certificate; request it with certReq")
    try:
        cert, _signing_time = verify_parsed(parsed, parsed.content, trust, now,
                                            purpose=Purpose.TIMESTAMPING)
    except VerificationError as exc:
        raise type(exc)(f"timestamp token: {exc.message}") from exc
    _check_ess(parsed.attributes, cert.public_bytes(serialization.Encoding.DER))
    return TimestampInfo(tsa=cert, time=_gen_time(info), serial=int(info["serialNumber"]),
                         policy=token_policy, nonce=token_nonce)


def check_token_matches(token_der: bytes, data: bytes, nonce: int) -> None:
    """The checks that need no trust store: imprint and nonce."""
    info, _ = token_info(token_der)
    _check_imprint(info, data)
    if not info["nonce"].isValue or int(info["nonce"]) != nonce:
        raise TimestampError("the token's nonce is not the request's: the answer belongs to "
                             "another request")


# --- HTTP client -----------------------------------------------------------------------

async def request_timestamp(url: str, data: bytes, *, timeout: float,  # noqa: ASYNC109
                            session: aiohttp.ClientSession | None = None,
                            trust: TrustStore | None = None,
                            now: datetime | None = None) -> bytes:
    """Ask the TSA at ``url`` to timestamp ``data``; return the TimeStampToken DER.

    Always checks status, imprint and nonce; with ``trust`` also the whole token
    (``verify_timestamp`` at ``now``, default the current time).
    """
    nonce = new_nonce()
    request = build_request(data, nonce)
    own = session is None
    client = session or aiohttp.ClientSession()
    try:
        async with asyncio.timeout(timeout):
            async with client.post(url, data=request,
                                   headers={"Content-Type": QUERY_TYPE}) as response:
                if response.status != 200:
                    raise TimestampUnavailable(f"TSA {url} answered HTTP {response.status}")
                ctype = response.headers.get("Content-Type", "").split(";")[0].strip()
                if ctype != REPLY_TYPE:
                    raise TimestampUnavailable(f"TSA {url} answered {ctype or 'no type'}, not "
                                               f"{REPLY_TYPE}")
                body = await response.content.read(MAX_REPLY + 1)
                if len(body) > MAX_REPLY:
                    raise TimestampUnavailable(f"TSA {url} answer is larger than {MAX_REPLY} "
                                               "bytes")
    except TimeoutError as exc:
        raise TimestampUnavailable(f"TSA {url} did not answer within {timeout:g} s") from exc
    except aiohttp.ClientError as exc:
        raise TimestampUnavailable(f"TSA {url} is unreachable: {exc}") from exc
    finally:
        if own:
            await client.close()
    token = parse_response(body)
    if trust is not None:
        verify_timestamp(token, data, trust, now or datetime.now(UTC), nonce)
    else:
        check_token_matches(token, data, nonce)
    return token


def tsa_certificate(token_der: bytes) -> x509.Certificate | None:
    """The first certificate a token carries (for display), if any."""
    parsed = parse_signed_data(token_der)
    return certificate_from_der(parsed.certificates[0]) if parsed.certificates else None



class TimestampClient:
    """Asks one TSA for tokens over a single kept-alive HTTP session (``request_timestamp``
    without a session opens and closes one per call: a new connection each time).

    Create and use it inside the running event loop; call ``close()`` on shutdown.
    """

    def __init__(self, url: str, *, timeout: float,
                 trust: TrustStore | None = None) -> None:
        self.url = url
        self.timeout = timeout
        self.trust = trust
        self._session: aiohttp.ClientSession | None = None

    async def stamp(self, data: bytes, now: datetime | None = None) -> bytes:
        """A verified TimeStampToken DER over ``data`` (as ``request_timestamp``)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return await request_timestamp(self.url, data, timeout=self.timeout,
                                       session=self._session, trust=self.trust, now=now)

    async def close(self) -> None:
        """Close the session (a later ``stamp`` opens a new one)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

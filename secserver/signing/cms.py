"""CMS SignedData (RFC 5652): sign and verify, detached or encapsulated, DER.

What secserver writes (docs/protocol.md, "Signature"):

* ``ContentInfo`` of type signedData, ``SignedData`` version 1 (3 when the content type is
  not id-data), one ``SignerInfo`` version 1 identified by issuer and serial number,
  the signer certificate (and any chain certificates given) in ``certificates``;
* signed attributes contentType, signingTime, messageDigest (plus any extra, e.g. the ESS
  signingCertificateV2 of a timestamp token);
* digest SHA-256; signature ECDSA P-256 with SHA-256 (``ecdsa-with-SHA256``), RSA PKCS#1
  v1.5 (``rsaEncryption``) or RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32).

The verifier accepts the same with SHA-256/384/512, with or without signed attributes, and
signer identification by issuer/serial or subject key identifier, so signatures made by
``openssl cms -sign`` verify too. It returns who signed or raises a specific error
(``secserver.signing.errors``).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from secserver.identifiers import ClientId
from secserver.signing import der
from secserver.signing.errors import (
    DigestMismatch,
    InvalidSignature,
    KeyUnavailable,
    MalformedSignature,
    SignerMismatch,
    VerificationError,
)
from secserver.signing.keys import PrivateKey, public_key_matches
from secserver.signing.pki import member_id_from_certificate
from secserver.signing.trust import Purpose, TrustStore

RsaPadding = Literal["pkcs1v15", "pss"]

ID_DATA = "1.2.840.113549.1.7.1"
ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"
ID_SHA256 = "2.16.840.1.101.3.4.2.1"
ID_SHA384 = "2.16.840.1.101.3.4.2.2"
ID_SHA512 = "2.16.840.1.101.3.4.2.3"
ID_RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
ID_MGF1 = "1.2.840.113549.1.1.8"
ID_RSASSA_PSS = "1.2.840.113549.1.1.10"
ID_SHA256_WITH_RSA = "1.2.840.113549.1.1.11"
ID_SHA384_WITH_RSA = "1.2.840.113549.1.1.12"
ID_SHA512_WITH_RSA = "1.2.840.113549.1.1.13"
ID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"
ID_ECDSA_SHA384 = "1.2.840.10045.4.3.3"
ID_ECDSA_SHA512 = "1.2.840.10045.4.3.4"

_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    ID_SHA256: hashes.SHA256, ID_SHA384: hashes.SHA384, ID_SHA512: hashes.SHA512,
}
_HASHLIB = {ID_SHA256: hashlib.sha256, ID_SHA384: hashlib.sha384, ID_SHA512: hashlib.sha512}
_HASH_OBJECTS: dict[str, hashes.HashAlgorithm] = {oid: cls() for oid, cls in _HASHES.items()}
_ECDSA_OBJECTS = {oid: ec.ECDSA(alg) for oid, alg in _HASH_OBJECTS.items()}
_PKCS1V15 = padding.PKCS1v15()
_RSA_SIG_HASH = {ID_SHA256_WITH_RSA: ID_SHA256, ID_SHA384_WITH_RSA: ID_SHA384,
                 ID_SHA512_WITH_RSA: ID_SHA512}
_ECDSA_SIG_HASH = {ID_ECDSA_SHA256: ID_SHA256, ID_ECDSA_SHA384: ID_SHA384,
                   ID_ECDSA_SHA512: ID_SHA512}

_SHA256_ALG = der.sequence(der.oid(ID_SHA256))
_CONTENT_TYPE_OID = der.oid(ID_CONTENT_TYPE)
_MESSAGE_DIGEST_OID = der.oid(ID_MESSAGE_DIGEST)
_SIGNING_TIME_OID = der.oid(ID_SIGNING_TIME)
_SIGNED_DATA_OID = der.oid(ID_SIGNED_DATA)
_SHA256_ALG_SET = der.tlv(der.SET, _SHA256_ALG)
_DETACHED_DATA_HEAD = b"\x02\x01\x01" + _SHA256_ALG_SET + der.sequence(der.oid(ID_DATA))
_DATA_CONTENT_TYPE_ATTR = der.sequence(_CONTENT_TYPE_OID, der.tlv(der.SET, der.oid(ID_DATA)))
# SEQUENCE { messageDigest, SET { OCTET STRING (32 bytes) } } up to the digest itself
_DIGEST_ATTR_PREFIX = der.sequence(
    _MESSAGE_DIGEST_OID, der.tlv(der.SET, der.octet_string(bytes(32))))[:-32]


@dataclass(frozen=True)
class VerifiedSignature:
    """Who signed (the member bound into the certificate, if any), with what, and when."""

    member: ClientId | None
    certificate: x509.Certificate
    signing_time: datetime | None


# --- certificate helpers ---------------------------------------------------------------

_cert_cache: OrderedDict[bytes, x509.Certificate] = OrderedDict()
_cert_lock = threading.Lock()


def certificate_from_der(data: bytes) -> x509.Certificate:
    """Parse a DER certificate, reusing the parsed object for bytes seen before."""
    with _cert_lock:
        cert = _cert_cache.get(data)
        if cert is not None:
            _cert_cache.move_to_end(data)
            return cert
    try:
        cert = x509.load_der_x509_certificate(data)
    except Exception as exc:  # ValueError, InvalidVersion, ...
        raise MalformedSignature(f"a certificate in the signature cannot be parsed: "
                                 f"{type(exc).__name__} {exc}") from exc
    with _cert_lock:
        _cert_cache[data] = cert
        while len(_cert_cache) > 512:
            _cert_cache.popitem(last=False)
    return cert


@dataclass(frozen=True)
class _SignerCert:
    """What verification needs from a certificate, computed once per certificate."""

    cert: x509.Certificate
    issuer_serial: bytes
    public_key: CertificatePublicKeyTypes | None
    key_error: str
    member: ClientId | None
    member_error: SignerMismatch | None


_signer_cache: OrderedDict[bytes, _SignerCert] = OrderedDict()


def _signer_cert(data: bytes) -> _SignerCert:
    with _cert_lock:
        hit = _signer_cache.get(data)
    if hit is not None:
        return hit
    cert = certificate_from_der(data)
    try:
        issuer_serial = _issuer_and_serial(data)
    except der.DerError as exc:
        raise MalformedSignature(f"a certificate in the signature is malformed: {exc}") from exc
    public_key: CertificatePublicKeyTypes | None = None
    key_error = ""
    try:
        public_key = cert.public_key()
    except Exception as exc:  # UnsupportedAlgorithm, ValueError, ...
        key_error = f"{type(exc).__name__} {exc}"
    member: ClientId | None = None
    member_error: SignerMismatch | None = None
    try:
        member = member_id_from_certificate(cert)
    except SignerMismatch as exc:
        member_error = exc
    except Exception as exc:  # cryptography parses names lazily and may raise anything
        raise MalformedSignature(f"a certificate in the signature is malformed: "
                                 f"{type(exc).__name__} {exc}") from exc
    info = _SignerCert(cert, issuer_serial, public_key, key_error, member, member_error)
    with _cert_lock:
        _signer_cache[data] = info
        while len(_signer_cache) > 512:
            _signer_cache.popitem(last=False)
    return info


def _issuer_and_serial(cert_der: bytes) -> bytes:
    """The raw issuer Name and serial INTEGER TLVs of a certificate (its CMS signer id)."""
    cert_start, _cert_end = der.expect(cert_der, 0, der.SEQUENCE, "certificate")
    tbs_start, tbs_end = der.expect(cert_der, cert_start, der.SEQUENCE, "tbsCertificate")
    items = der.children(cert_der, tbs_start, tbs_end)
    if items and items[0][0] == 0xA0:  # [0] version
        items = items[1:]
    if len(items) < 3:
        raise der.DerError("tbsCertificate is too short")
    serial, issuer = items[0], items[2]
    return cert_der[issuer[1]:issuer[3]] + cert_der[serial[1]:serial[3]]


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    return ext.value.digest


# --- signing ---------------------------------------------------------------------------

def attribute(type_oid: str, *values: bytes) -> bytes:
    """One DER ``Attribute`` (type and SET OF values)."""
    return der.sequence(der.oid(type_oid), der.set_of(*values))


@functools.lru_cache(maxsize=64)
def _time_attr_for_second(second: datetime) -> bytes:
    return _DATA_CONTENT_TYPE_ATTR + der.tlv(
        der.SEQUENCE, _SIGNING_TIME_OID + der.tlv(der.SET, der.time(second)))


def _time_attr_prefix(signing_time: datetime) -> bytes:
    """contentType and signingTime attributes (DER), cached per second."""
    if signing_time.tzinfo is not UTC:
        signing_time = signing_time.astimezone(UTC)
    return _time_attr_for_second(signing_time.replace(microsecond=0))


@functools.lru_cache(maxsize=16)
def _set_header(size: int) -> bytes:
    return der.tlv(der.SET, bytes(size))[:-size]


def _ec_sign(key: ec.EllipticCurvePrivateKey, algorithm: ec.ECDSA, data: bytes) -> bytes:
    return key.sign(data, algorithm)


def _rsa_sign(key: rsa.RSAPrivateKey, pad: padding.AsymmetricPadding,
              algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    return key.sign(data, pad, algorithm)


class CmsSigner:
    """Makes CMS SignedData with one key; the constant parts are encoded once."""

    def __init__(self, key: PrivateKey, certificate: x509.Certificate, *,
                 rsa_padding: RsaPadding = "pkcs1v15",
                 chain: Sequence[x509.Certificate] = ()) -> None:
        if not public_key_matches(key, certificate):
            raise KeyUnavailable(
                f"the private key does not belong to certificate "
                f"'{certificate.subject.rfc4514_string()}'")
        self.key = key
        self.certificate = certificate
        self.rsa_padding = rsa_padding
        cert_der = certificate.public_bytes(serialization.Encoding.DER)
        self._certs_field = der.context(0, cert_der + b"".join(
            c.public_bytes(serialization.Encoding.DER) for c in chain))
        self._sid = der.sequence(_issuer_and_serial(cert_der))
        self._signer_info_head = b"\x02\x01\x01" + self._sid + _SHA256_ALG
        self._layouts: dict[tuple[int, int], tuple[bytes, bytes]] = {}
        self._raw_sign: Callable[[bytes], bytes]
        if isinstance(key, ec.EllipticCurvePrivateKey):
            self._sig_alg = der.sequence(der.oid(ID_ECDSA_SHA256))
            self._raw_sign = functools.partial(_ec_sign, key, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPrivateKey):
            if rsa_padding == "pss":
                self._sig_alg = der.sequence(der.oid(ID_RSASSA_PSS), der.sequence(
                    der.context(0, _SHA256_ALG),
                    der.context(1, der.sequence(der.oid(ID_MGF1), _SHA256_ALG)),
                    der.context(2, der.integer(32)),
                ))
                self._padding: padding.AsymmetricPadding = padding.PSS(
                    mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            elif rsa_padding == "pkcs1v15":
                self._sig_alg = der.sequence(der.oid(ID_RSA_ENCRYPTION), der.null())
                self._padding = padding.PKCS1v15()
            else:
                raise KeyUnavailable(f"unknown RSA padding {rsa_padding!r}; use pkcs1v15 or pss")
            self._raw_sign = functools.partial(_rsa_sign, key, self._padding, hashes.SHA256())
        else:  # pragma: no cover - load_private_key only returns EC or RSA
            raise KeyUnavailable(f"unsupported key type {type(key).__name__}")

    def signed_attributes(self, content: bytes, signing_time: datetime, *,
                          content_type: str = ID_DATA,
                          extra: Sequence[bytes] = ()) -> bytes:
        """The DER ``SET OF Attribute`` that is signed (tag 0x31)."""
        digest = hashlib.sha256(content).digest()
        if content_type == ID_DATA and not extra:
            # The common case, laid out directly: contentType < signingTime < messageDigest
            # in DER order (their encodings differ in length: 0x18, 0x1c/0x1e, 0x2f).
            stime = der.time(signing_time)
            body = b"".join((_DATA_CONTENT_TYPE_ATTR,
                             der.tlv(der.SEQUENCE, _SIGNING_TIME_OID + der.tlv(der.SET, stime)),
                             _DIGEST_ATTR_PREFIX, digest))
            return der.tlv(der.SET, body)
        return der.set_of(
            der.sequence(_CONTENT_TYPE_OID, der.tlv(der.SET, der.oid(content_type))),
            der.sequence(_SIGNING_TIME_OID, der.tlv(der.SET, der.time(signing_time))),
            der.sequence(_MESSAGE_DIGEST_OID, der.tlv(der.SET, der.octet_string(digest))),
            *extra,
        )

    def raw_sign(self, data: bytes) -> bytes:
        """The bare signature over ``data`` (the signed attributes)."""
        return self._raw_sign(data)

    def assemble(self, signed_attrs: bytes, signature: bytes, *, content_type: str = ID_DATA,
                 content: bytes | None = None, certificates: bool = True) -> bytes:
        """Wrap signed attributes and signature into a ContentInfo (``content``: encapsulate;
        ``certificates=False``: leave the signer certificate out)."""
        tlv = der.tlv
        signer_info = tlv(der.SEQUENCE, b"".join((
            self._signer_info_head,
            b"\xa0" + signed_attrs[1:],  # [0] IMPLICIT SET OF Attribute
            self._sig_alg, tlv(der.OCTET_STRING, signature),
        )))
        if content_type == ID_DATA and content is None:
            head = _DETACHED_DATA_HEAD
        else:
            encap = der.oid(content_type)
            if content is not None:
                encap += der.context(0, der.octet_string(content))
            head = (b"\x02\x01\x01" if content_type == ID_DATA else b"\x02\x01\x03") + \
                _SHA256_ALG_SET + der.sequence(encap)
        signed_data = tlv(der.SEQUENCE, b"".join((
            head, self._certs_field if certificates else b"", tlv(der.SET, signer_info))))
        return tlv(der.SEQUENCE, _SIGNED_DATA_OID + tlv(0xA0, signed_data))

    def sign(self, content: bytes, *, signing_time: datetime, detached: bool = True,
             content_type: str = ID_DATA, extra_attributes: Sequence[bytes] = (),
             certificates: bool = True) -> bytes:
        """A CMS SignedData DER over ``content`` (detached unless ``detached=False``)."""
        if detached and content_type == ID_DATA and not extra_attributes and certificates:
            return self.sign_detached_data(content, signing_time)
        attrs = self.signed_attributes(content, signing_time, content_type=content_type,
                                       extra=extra_attributes)
        return self.assemble(attrs, self.raw_sign(attrs), content_type=content_type,
                             content=None if detached else content, certificates=certificates)

    def sign_detached_data(self, content: bytes, signing_time: datetime) -> bytes:
        """The common case of ``sign``, with the DER headers taken from a per-length cache;
        byte for byte what ``assemble(signed_attributes(...), ...)`` gives."""
        body = b"".join((_time_attr_prefix(signing_time), _DIGEST_ATTR_PREFIX,
                         hashlib.sha256(content).digest()))
        head = _set_header(len(body))
        signature = self._raw_sign(head + body)
        key = (len(body), len(signature))
        layout = self._layouts.get(key)
        if layout is None:
            probe = self.assemble(head + body, bytes(len(signature)))
            cut = probe.index(b"\xa0" + head[1:] + body)
            layout = (probe[:cut + len(head)], probe[cut + len(head) + len(body):
                                                     len(probe) - len(signature)])
            self._layouts[key] = layout
        return b"".join((layout[0], body, layout[1], signature))


def sign_detached(content: bytes, key: PrivateKey, certificate: x509.Certificate, *,
                  signing_time: datetime | None = None,
                  rsa_padding: RsaPadding = "pkcs1v15") -> bytes:
    """One-off detached signature (signing time: now unless given); for many, keep a
    ``CmsSigner``."""
    return CmsSigner(key, certificate, rsa_padding=rsa_padding).sign(
        content, signing_time=signing_time or utc_now())


# --- parsing ---------------------------------------------------------------------------

class ParsedSignedData(NamedTuple):
    """The parts of a one-signer SignedData that verification needs (raw DER slices)."""

    content_type: str
    content: bytes | None
    certificates: tuple[bytes, ...]
    signer_issuer_serial: bytes | None
    signer_key_id: bytes | None
    digest_oid: str
    signed_attrs: bytes | None  # re-tagged as SET (0x31), ready to verify
    attributes: dict[str, list[bytes]]  # attribute type -> value TLVs (one SET)
    signature_alg: str
    signature_params: bytes  # raw TLV of the parameters, or b""
    signature: bytes


def parse_signed_data(data: bytes) -> ParsedSignedData:
    """Parse a ContentInfo holding SignedData with exactly one signer."""
    try:
        return _parse_common(data) or _parse(data)
    except der.DerError as exc:
        raise MalformedSignature(f"signature is not valid DER CMS SignedData: {exc}") from exc


_COMMON_HEAD = (b"\x02\x01\x01" + _SHA256_ALG_SET + der.sequence(der.oid(ID_DATA)))
_COMMON_SIGNER_HEAD = b"\x02\x01\x01\x30"
_SIGNING_TIME_ATTR_HEAD = der.tlv(der.SEQUENCE, _SIGNING_TIME_OID + b"\x31\x0f\x17\x0d" +
                                  bytes(13))[:-13]
_COMMON_ATTRS_LEN = len(_DATA_CONTENT_TYPE_ATTR) + len(_SIGNING_TIME_ATTR_HEAD) + 13 + \
    len(_DIGEST_ATTR_PREFIX) + 32
_ECDSA_SHA256_ALG = der.sequence(der.oid(ID_ECDSA_SHA256))
_RSA_ALG = der.sequence(der.oid(ID_RSA_ENCRYPTION), der.null())
_SHA256_ALG_ATTRS = _SHA256_ALG + b"\xa0"
_ID_DATA_OID = der.oid(ID_DATA)


def _parse_common(data: bytes) -> ParsedSignedData | None:
    """The layout secserver (and most signers) write for a detached id-data signature with
    SHA-256, the three usual signed attributes and ECDSA or RSA PKCS#1 v1.5, matched by
    comparing bytes; ``None`` for anything else (then the general parser runs). The result
    equals what the general parser returns."""
    layout = _common_layout(data)
    return None if layout is None else layout[0]


def _common_layout(data: bytes) -> tuple[ParsedSignedData, int, int] | None:
    """``_parse_common`` with where the variable parts sit: the offsets of the signed
    attributes' [0] tag and of the signingTime value (13 bytes of UTCTime content)."""
    read = der.read
    try:
        tag, start, end = read(data)
        if tag != der.SEQUENCE or end != len(data) or \
                not data.startswith(_SIGNED_DATA_OID, start):
            return None
        tag, c_start, c_end = read(data, start + len(_SIGNED_DATA_OID), end)
        if tag != 0xA0 or c_end != end:
            return None
        tag, sd_start, sd_end = read(data, c_start, end)
        if tag != der.SEQUENCE or sd_end != end or not data.startswith(_COMMON_HEAD, sd_start):
            return None
        tag, f_start, f_end = read(data, sd_start + len(_COMMON_HEAD), end)
        if tag != 0xA0:
            return None
        certificates: list[bytes] = []
        item = f_start
        while item < f_end:
            c_tag, _cs, c_stop = read(data, item, f_end)
            if c_tag != der.SEQUENCE:
                return None
            certificates.append(data[item:c_stop])
            item = c_stop
        tag, set_start, set_end = read(data, f_end, end)
        if tag != der.SET or set_end != end:
            return None
        tag, si_start, si_end = read(data, set_start, end)
        if tag != der.SEQUENCE or si_end != end or \
                not data.startswith(_COMMON_SIGNER_HEAD, si_start):
            return None
        tag, sid_start, sid_end = read(data, si_start + 3, end)
        if not data.startswith(_SHA256_ALG_ATTRS, sid_end):
            return None
        attrs_at = sid_end + len(_SHA256_ALG)
        tag, a_start, a_end = read(data, attrs_at, end)
        if a_end - a_start != _COMMON_ATTRS_LEN or \
                not data.startswith(_DATA_CONTENT_TYPE_ATTR, a_start):
            return None
        pos = a_start + len(_DATA_CONTENT_TYPE_ATTR)
        if not data.startswith(_SIGNING_TIME_ATTR_HEAD, pos):
            return None
        time_at = pos = pos + len(_SIGNING_TIME_ATTR_HEAD)
        time_value = b"\x17\x0d" + data[pos:pos + 13]
        pos += 13
        if not data.startswith(_DIGEST_ATTR_PREFIX, pos):
            return None
        pos += len(_DIGEST_ATTR_PREFIX)
        digest_value = b"\x04\x20" + data[pos:pos + 32]
        pos += 32
        if data.startswith(_ECDSA_SHA256_ALG, pos):
            alg_der, alg_oid, params = _ECDSA_SHA256_ALG, ID_ECDSA_SHA256, b""
        elif data.startswith(_RSA_ALG, pos):
            alg_der, alg_oid, params = _RSA_ALG, ID_RSA_ENCRYPTION, b"\x05\x00"
        else:
            return None
        tag, g_start, g_end = read(data, pos + len(alg_der), end)
        if tag != der.OCTET_STRING or g_end != end:
            return None
    except der.DerError:
        return None
    return ParsedSignedData(
        content_type=ID_DATA, content=None, certificates=tuple(certificates),
        signer_issuer_serial=data[sid_start:sid_end], signer_key_id=None, digest_oid=ID_SHA256,
        signed_attrs=b"\x31" + data[attrs_at + 1:a_end],
        attributes={ID_CONTENT_TYPE: [_ID_DATA_OID], ID_SIGNING_TIME: [time_value],
                    ID_MESSAGE_DIGEST: [digest_value]},
        signature_alg=alg_oid, signature_params=params,
        signature=data[g_start:g_end]), attrs_at, time_at


def _parse(data: bytes) -> ParsedSignedData:
    read, oid_text = der.read, der.read_oid
    tag, start, end = read(data)
    if tag != der.SEQUENCE or end != len(data):
        raise der.DerError("ContentInfo is not one SEQUENCE")
    tag, o_start, o_end = read(data, start, end)
    if tag != der.OID or data[o_start:o_end] != _SIGNED_DATA_OID[2:]:
        raise der.DerError("content type is not signedData")
    tag, c_start, c_end = read(data, o_end, end)
    if tag != 0xA0 or c_end != end:
        raise der.DerError("ContentInfo content is not [0]")
    tag, sd_start, sd_end = read(data, c_start, c_end)
    if tag != der.SEQUENCE or sd_end != c_end:
        raise der.DerError("SignedData is not a SEQUENCE")
    tag, _s, pos = read(data, sd_start, sd_end)  # version
    if tag != der.INTEGER:
        raise der.DerError("SignedData version is missing")
    tag, _s, pos = read(data, pos, sd_end)  # digestAlgorithms
    if tag != der.SET:
        raise der.DerError("SignedData digestAlgorithms is missing")
    tag, e_start, e_end = read(data, pos, sd_end)  # encapContentInfo
    if tag != der.SEQUENCE:
        raise der.DerError("encapContentInfo is missing")
    tag, t_start, t_end = read(data, e_start, e_end)
    if tag != der.OID:
        raise der.DerError("encapContentInfo has no content type")
    content_type = oid_text(data[t_start:t_end])
    content: bytes | None = None
    if t_end < e_end:
        tag, x_start, x_end = read(data, t_end, e_end)
        if tag != 0xA0 or x_end != e_end:
            raise der.DerError("encapContentInfo content is not [0]")
        o_start, o_end = der.expect(data, x_start, der.OCTET_STRING, "eContent", x_end)
        if o_end != x_end:
            raise der.DerError("trailing bytes after eContent")
        content = data[o_start:o_end]
    pos = e_end
    tag, f_start, f_end = read(data, pos, sd_end)
    certificates: list[bytes] = []
    if tag == 0xA0:
        item = f_start
        while item < f_end:
            c_tag, _cs, c_stop = read(data, item, f_end)
            if c_tag == der.SEQUENCE:
                certificates.append(data[item:c_stop])
            item = c_stop
        tag, f_start, f_end = read(data, f_end, sd_end)
    if tag == 0xA1:  # crls: not used
        tag, f_start, f_end = read(data, f_end, sd_end)
    if tag != der.SET or f_end != sd_end:
        raise der.DerError("signerInfos is missing or not last")
    tag, si_start, si_end = read(data, f_start, f_end)
    if tag != der.SEQUENCE:
        raise der.DerError("SignerInfo is not a SEQUENCE")
    if si_end != f_end:
        raise der.DerError("expected exactly one SignerInfo, found several")
    tag, _s, pos = read(data, si_start, si_end)  # version
    if tag != der.INTEGER:
        raise der.DerError("SignerInfo version is missing")
    tag, sid_start, sid_end = read(data, pos, si_end)
    issuer_serial = key_id = None
    if tag == der.SEQUENCE:
        issuer_serial = data[sid_start:sid_end]
    elif tag == 0x80:
        key_id = data[sid_start:sid_end]
    else:
        raise der.DerError("SignerIdentifier is neither issuerAndSerialNumber nor [0] keyId")
    tag, a_start, a_end = read(data, sid_end, si_end)
    digest_oid = _alg_oid(data, (tag, sid_end, a_start, a_end))
    tag, n_start, n_end = read(data, a_end, si_end)
    signed_attrs: bytes | None = None
    attributes: dict[str, list[bytes]] = {}
    if tag == 0xA0:
        signed_attrs = b"\x31" + data[a_end + 1:n_end]
        item = n_start
        while item < n_end:
            at_tag, at_start, at_end = read(data, item, n_end)
            if at_tag != der.SEQUENCE:
                raise der.DerError("malformed signed attribute")
            ot_tag, ot_start, ot_end = read(data, at_start, at_end)
            vs_tag, vs_start, vs_end = read(data, ot_end, at_end)
            if ot_tag != der.OID or vs_tag != der.SET or vs_end != at_end:
                raise der.DerError("malformed signed attribute")
            attr_oid = oid_text(data[ot_start:ot_end])
            if attr_oid in attributes:
                raise der.DerError(f"signed attribute {attr_oid} appears twice")
            values = []
            value = vs_start
            while value < vs_end:
                _v, _vs, v_end = read(data, value, vs_end)
                values.append(data[value:v_end])
                value = v_end
            attributes[attr_oid] = values
            item = at_end
        tag, n_start, n_end = read(data, n_end, si_end)
    if tag != der.SEQUENCE:
        raise der.DerError("signatureAlgorithm is not an AlgorithmIdentifier")
    tag, g_start, g_end = read(data, n_start, n_end)
    if tag != der.OID:
        raise der.DerError("signatureAlgorithm has no OID")
    signature_alg = oid_text(data[g_start:g_end])
    params = data[g_end:n_end]
    tag, g_start, g_end = read(data, n_end, si_end)
    if tag != der.OCTET_STRING:
        raise der.DerError("signature is not an OCTET STRING")
    if g_end != si_end:
        _tag, _s, u_end = read(data, g_end, si_end)
        if _tag != 0xA1 or u_end != si_end:
            raise der.DerError("unexpected fields after the signature")
    return ParsedSignedData(
        content_type=content_type, content=content, certificates=tuple(certificates),
        signer_issuer_serial=issuer_serial, signer_key_id=key_id, digest_oid=digest_oid,
        signed_attrs=signed_attrs, attributes=attributes, signature_alg=signature_alg,
        signature_params=params, signature=data[g_start:g_end])


def _alg_oid(data: bytes, item: tuple[int, int, int, int]) -> str:
    if item[0] != der.SEQUENCE:
        raise der.DerError("AlgorithmIdentifier is not a SEQUENCE")
    parts = der.children(data, item[2], item[3])
    if not parts or parts[0][0] != der.OID:
        raise der.DerError("AlgorithmIdentifier has no OID")
    if len(parts) > 1 and data[parts[1][1]:parts[1][3]] != b"\x05\x00":
        raise der.DerError("digest AlgorithmIdentifier has parameters other than NULL")
    return der.read_oid(data[parts[0][2]:parts[0][3]])


@functools.lru_cache(maxsize=256)
def _time_value(value: bytes) -> datetime:
    """A signingTime attribute value (UTCTime or GeneralizedTime TLV); cached, since
    signatures made in the same second carry the same bytes."""
    tag, start, end = der.read(value)
    if end != len(value):
        raise der.DerError("trailing bytes after signingTime")
    return der.read_time(tag, value[start:end])


def _single(parsed: ParsedSignedData, attr_oid: str, name: str) -> bytes | None:
    values = parsed.attributes.get(attr_oid)
    if values is None:
        return None
    if len(values) != 1:
        raise MalformedSignature(f"signed attribute {name} must have exactly one value")
    return values[0]


# --- verification ----------------------------------------------------------------------

def _pss_padding(params: bytes, digest_oid: str) -> padding.PSS:
    try:
        start, end = der.expect(params, 0, der.SEQUENCE, "RSASSA-PSS-params")
        hash_oid = mgf_hash = None
        salt = 20
        for tag, _tlv, c_start, c_end in der.children(params, start, end):
            if tag == 0xA0:
                hash_oid = _alg_oid(params, der.children(params, c_start, c_end)[0])
            elif tag == 0xA1:
                mgf = der.children(params, c_start, c_end)[0]
                mgf_parts = der.children(params, mgf[2], mgf[3])
                if der.read_oid(params[mgf_parts[0][2]:mgf_parts[0][3]]) != ID_MGF1:
                    raise MalformedSignature("RSASSA-PSS mask generation is not MGF1")
                mgf_hash = _alg_oid(params, mgf_parts[1])
            elif tag == 0xA2:
                i_start, i_end = der.expect(params, c_start, der.INTEGER, "saltLength", c_end)
                salt = der.read_integer(params[i_start:i_end])
            elif tag == 0xA3:
                i_start, i_end = der.expect(params, c_start, der.INTEGER, "trailerField", c_end)
                if der.read_integer(params[i_start:i_end]) != 1:
                    raise MalformedSignature("RSASSA-PSS trailerField must be 1")
    except (der.DerError, IndexError) as exc:
        raise MalformedSignature(f"RSASSA-PSS parameters are malformed: {exc}") from exc
    if hash_oid != digest_oid or mgf_hash != digest_oid:
        raise MalformedSignature("RSASSA-PSS must use the digest algorithm of the signer for "
                                 "both the hash and MGF1 (SHA-1 defaults are not accepted)")
    return padding.PSS(mgf=padding.MGF1(_HASHES[digest_oid]()), salt_length=salt)


def _check_signature_value(parsed: ParsedSignedData, public_key: CertificatePublicKeyTypes,
                           signed: bytes) -> None:
    digest_oid = parsed.digest_oid
    hash_alg = _HASH_OBJECTS[digest_oid]
    alg = parsed.signature_alg
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            if _ECDSA_SIG_HASH.get(alg, digest_oid) != digest_oid or \
                    (alg not in _ECDSA_SIG_HASH and alg != "1.2.840.10045.2.1"):
                raise MalformedSignature(f"signature algorithm {alg} does not fit an EC key "
                                         "with the signer's digest algorithm")
            public_key.verify(parsed.signature, signed, _ECDSA_OBJECTS[digest_oid])
        elif isinstance(public_key, rsa.RSAPublicKey):
            if alg == ID_RSASSA_PSS:
                public_key.verify(parsed.signature, signed,
                                  _pss_padding(parsed.signature_params, digest_oid), hash_alg)
            elif alg == ID_RSA_ENCRYPTION or _RSA_SIG_HASH.get(alg) == digest_oid:
                public_key.verify(parsed.signature, signed, _PKCS1V15, hash_alg)
            else:
                raise MalformedSignature(f"signature algorithm {alg} does not fit an RSA key "
                                         "with the signer's digest algorithm")
        else:
            raise MalformedSignature(
                f"signer key type {type(public_key).__name__} is not supported")
    except CryptoInvalidSignature as exc:
        raise InvalidSignature("the signature value does not verify with the signer "
                               "certificate's public key (signature or content altered)") from exc


def verify_parsed(parsed: ParsedSignedData, content: bytes, trust: TrustStore, now: datetime,
                  *, purpose: Purpose = Purpose.SIGNING
                  ) -> tuple[x509.Certificate, datetime | None]:
    """Check digest, signature value and signer chain; return the signer and signing time."""
    signer, signing_time = _verify_parsed(parsed, content, trust, now, purpose)
    return signer.cert, signing_time


def _verify_parsed(parsed: ParsedSignedData, content: bytes, trust: TrustStore, now: datetime,
                   purpose: Purpose) -> tuple[_SignerCert, datetime | None]:
    if parsed.digest_oid not in _HASHES:
        raise MalformedSignature(f"digest algorithm {parsed.digest_oid} is not supported; "
                                 "use SHA-256, SHA-384 or SHA-512")
    signing_time: datetime | None = None
    if parsed.signed_attrs is not None:
        ctype = _single(parsed, ID_CONTENT_TYPE, "contentType")
        digest_value = _single(parsed, ID_MESSAGE_DIGEST, "messageDigest")
        if ctype is None or digest_value is None:
            raise MalformedSignature("signed attributes lack contentType or messageDigest")
        try:
            if ctype[0] != der.OID or der.read_oid(ctype[2:]) != parsed.content_type:
                raise MalformedSignature("signed contentType differs from the content type")
            d_start, d_end = der.expect(digest_value, 0, der.OCTET_STRING, "messageDigest")
            stime = _single(parsed, ID_SIGNING_TIME, "signingTime")
            if stime is not None:
                signing_time = _time_value(stime)
        except der.DerError as exc:
            raise MalformedSignature(f"signed attribute is malformed: {exc}") from exc
        actual = _HASHLIB[parsed.digest_oid](content).digest()
        if digest_value[d_start:d_end] != actual:
            raise DigestMismatch("the signed message digest does not match the content: the "
                                 "signed document or body was altered, or is not the one signed")
        signed = parsed.signed_attrs
    else:
        signed = content
    certs = parsed.certificates
    signer_der: bytes | None = None
    signer: _SignerCert | None = None
    if parsed.signer_issuer_serial is not None:
        for cert_der in certs:
            info = _signer_cert(cert_der)
            if info.issuer_serial == parsed.signer_issuer_serial:
                signer_der, signer = cert_der, info
                break
    else:
        for cert_der in certs:
            info = _signer_cert(cert_der)
            try:
                key_id = _subject_key_id(info.cert)
            except Exception as exc:  # a malformed extension, found when first read
                raise MalformedSignature(f"a certificate in the signature is malformed: {exc}") \
                    from exc
            if key_id == parsed.signer_key_id:
                signer_der, signer = cert_der, info
                break
    if signer_der is None or signer is None:
        raise MalformedSignature("the signer certificate is not included in the signature")
    if signer.public_key is None:
        raise MalformedSignature(f"the signer certificate's public key is unusable: "
                                 f"{signer.key_error}")
    _check_signature_value(parsed, signer.public_key, signed)
    others = [_signer_cert(c).cert for c in certs if c is not signer_der] if len(certs) > 1 \
        else []
    try:
        trust.verify_der(signer_der, signer.cert, now=now, purpose=purpose, intermediates=others)
    except VerificationError:
        raise
    except Exception as exc:  # a malformed extension or name, found when first read
        raise MalformedSignature(f"a certificate in the signature is malformed: "
                                 f"{type(exc).__name__} {exc}") from exc
    return signer, signing_time


# --- the fast path for a signer seen before ------------------------------------------
#
# Once a common-layout signature (``_common_layout``) has verified completely, its bytes
# minus the variable parts (signingTime, message digest and signature value) become a
# template. A later signature of the same length that equals the template everywhere else
# has, byte for byte, the same structure, certificates, signer identifier and algorithms,
# so the general parser would return the same result with only those parts different.
# The checks themselves all run again on every message: signing time decoded, digest
# compared, signature verified, certificate path validated at ``now`` by the trust store
# (its cache reuses a validated chain only while ``now`` lies within every certificate's
# validity), member bound by the caller.

_TEMPLATE_KEY = 160  # bytes of a signature's beginning that name its template (with the
# length of the header, they reach into the signer certificate's serial number)
_TEMPLATE_CACHE_SIZE = 1024
_UTC_TIME_HEAD = b"\x17\x0d"


@dataclass(slots=True)
class _Template:
    size: int            # total length of the signature DER
    prefix: bytes        # everything before the signingTime value
    time_at: int
    digest_at: int
    middle: bytes        # from after the digest to the signature value: algorithm, header
    middle_at: int
    sig_at: int
    attrs_at: int        # the signed attributes' [0] tag
    attrs_end: int
    signer: _SignerCert
    signer_der: bytes
    intermediates: tuple[x509.Certificate, ...]
    verify: Callable[[bytes, bytes], None]  # (signature, signed attributes) -> None or raise
    # the last certificate path validation: trust store, purpose, and the window in which
    # every certificate of the path is valid (reused only for that store and purpose, and
    # only while ``now`` lies inside the window)
    validated: tuple[TrustStore, Purpose, datetime, datetime] | None = None


_templates: dict[bytes, _Template] = {}


def _signature_check(public_key: CertificatePublicKeyTypes, signature_alg: str
                     ) -> Callable[[bytes, bytes], None] | None:
    if signature_alg == ID_ECDSA_SHA256 and isinstance(public_key, ec.EllipticCurvePublicKey):
        ec_key, ecdsa = public_key, _ECDSA_OBJECTS[ID_SHA256]

        def check_ec(signature: bytes, data: bytes) -> None:
            ec_key.verify(signature, data, ecdsa)
        return check_ec
    if signature_alg == ID_RSA_ENCRYPTION and isinstance(public_key, rsa.RSAPublicKey):
        rsa_key, sha256 = public_key, _HASH_OBJECTS[ID_SHA256]

        def check_rsa(signature: bytes, data: bytes) -> None:
            rsa_key.verify(signature, data, _PKCS1V15, sha256)
        return check_rsa
    return None


def _remember_template(data: bytes, layout: tuple[ParsedSignedData, int, int],
                       signer: _SignerCert, signer_der: bytes) -> None:
    """Keep the layout of a signature that verified completely (see above)."""
    parsed, attrs_at, time_at = layout
    if signer.public_key is None or len(data) < _TEMPLATE_KEY:
        return
    check = _signature_check(signer.public_key, parsed.signature_alg)
    if check is None:
        return
    digest_at = time_at + 13 + len(_DIGEST_ATTR_PREFIX)
    sig_at = len(data) - len(parsed.signature)
    intermediates = tuple(_signer_cert(c).cert for c in parsed.certificates
                          if c is not signer_der)
    template = _Template(
        size=len(data), prefix=data[:time_at], time_at=time_at, digest_at=digest_at,
        middle=data[digest_at + 32:sig_at], middle_at=digest_at + 32, sig_at=sig_at,
        attrs_at=attrs_at, attrs_end=digest_at + 32, signer=signer, signer_der=signer_der,
        intermediates=intermediates, verify=check)
    if len(_templates) >= _TEMPLATE_CACHE_SIZE:
        _templates.clear()
    _templates[data[:_TEMPLATE_KEY]] = template  # dict writes are atomic: no lock needed


@functools.lru_cache(maxsize=256)
def _utc_time(content: bytes) -> datetime:
    return der.read_time(der.UTC_TIME, content)


def _verify_known(data: bytes, content: bytes, trust: TrustStore, now: datetime,
                  purpose: Purpose) -> tuple[_SignerCert, datetime] | None:
    """Verify a detached signature laid out like one verified before (a template), with
    every check of ``_verify_parsed`` in the same order; ``None`` when no template fits."""
    template = _known_template(data)
    if template is None:
        return None
    return _verify_with(template, data, content, trust, now, purpose)


def _known_template(data: bytes) -> _Template | None:
    """The template ``data`` fits byte for byte outside its variable parts, if any."""
    template = _templates.get(data[:_TEMPLATE_KEY])
    if template is None or len(data) != template.size or \
            not data.startswith(template.prefix) or \
            not data.startswith(_DIGEST_ATTR_PREFIX, template.time_at + 13) or \
            not data.startswith(template.middle, template.middle_at):
        return None
    return template


def _verify_with(template: _Template, data: bytes, content: bytes, trust: TrustStore,
                 now: datetime, purpose: Purpose) -> tuple[_SignerCert, datetime]:
    """``_verify_known`` once ``_known_template(data)`` returned ``template``."""
    time_at, digest_at = template.time_at, template.digest_at
    try:
        signing_time = _utc_time(data[time_at:time_at + 13])
    except der.DerError as exc:
        raise MalformedSignature(f"signed attribute is malformed: {exc}") from exc
    if data[digest_at:digest_at + 32] != hashlib.sha256(content).digest():
        raise DigestMismatch("the signed message digest does not match the content: the "
                             "signed document or body was altered, or is not the one signed")
    try:
        template.verify(data[template.sig_at:],
                        b"\x31" + data[template.attrs_at + 1:template.attrs_end])
    except CryptoInvalidSignature as exc:
        raise InvalidSignature("the signature value does not verify with the signer "
                               "certificate's public key (signature or content altered)") from exc
    signer = template.signer
    memo = template.validated
    if memo is None or memo[0] is not trust or memo[1] is not purpose or \
            not memo[2] <= now <= memo[3]:
        try:
            chain = trust.verify_der(template.signer_der, signer.cert, now=now,
                                     purpose=purpose, intermediates=template.intermediates)
        except VerificationError:
            raise
        except Exception as exc:  # a malformed extension or name, found when first read
            raise MalformedSignature(f"a certificate in the signature is malformed: "
                                     f"{type(exc).__name__} {exc}") from exc
        template.validated = (trust, purpose, max(c.not_valid_before_utc for c in chain),
                              min(c.not_valid_after_utc for c in chain))
    return signer, signing_time


def _bind(info: _SignerCert, expected: ClientId | None) -> ClientId | None:
    member = info.member
    if expected is None:
        return member
    if info.member_error is not None:
        raise info.member_error
    if member is None or (member.instance, member.member_class, member.member_code) != (
            expected.instance, expected.member_class, expected.member_code):
        raise SignerMismatch(f"the message claims member {expected.member} but is "
                             f"signed with the certificate of {member}")
    return member


def bind_member(cert: x509.Certificate, expected_member: ClientId | None) -> ClientId | None:
    """The member bound into ``cert``; raise ``SignerMismatch`` if it is not ``expected``."""
    return _bind(_signer_cert(cert.public_bytes(serialization.Encoding.DER)), expected_member)


@dataclass(frozen=True)
class _Verified:
    signer: _SignerCert
    signer_der: bytes
    intermediates: tuple[x509.Certificate, ...]
    signing_time: datetime | None
    purpose: Purpose


# Batch signatures verified over their batch root document: one entry per batch, so a
# receiver verifies each batch's CMS once however many of its messages arrive. A peer has
# at most as many batches in flight as calls in flight (each call is in one batch); the
# bound leaves room for many busy peers and costs ~1 KB an entry (the CMS DER, the root
# document and references to cached certificates). Least recently used goes first.
_VERIFIED_CACHE_SIZE = 1024
_verified_cache: OrderedDict[tuple[bytes, bytes], _Verified] = OrderedDict()


def verify_detached(signature: bytes, content: bytes, trust: TrustStore, now: datetime, *,
                    expected_member: ClientId | None = None,
                    purpose: Purpose = Purpose.SIGNING,
                    reuse: bool = False) -> VerifiedSignature:
    """Verify a detached CMS signature over ``content`` at time ``now``.

    ``expected_member``: the client (member or subsystem) that claims to have signed; the
    certificate must be bound to its member. ``reuse=True`` remembers that this exact
    signature verified over this exact content (for batch signatures, which many messages
    share); a repeat then only re-checks the certificate path at ``now`` with ``trust``
    (for ``purpose``) and the member binding: no parsing, no digest, no signature check.
    The caller checks what differs per message (``verify_message``: the audit path from
    the document to the root that ``content`` names).
    """
    if not reuse:
        known = _verify_known(signature, content, trust, now, purpose)
        signer, signing_time = known or _verify_new(signature, content, trust, now, purpose)
        return VerifiedSignature(_bind(signer, expected_member), signer.cert, signing_time)
    key = (signature, content)
    with _cert_lock:
        hit = _verified_cache.get(key)
        if hit is not None:
            _verified_cache.move_to_end(key)
    if hit is not None and hit.purpose is purpose:
        try:
            trust.verify_der(hit.signer_der, hit.signer.cert, now=now, purpose=purpose,
                             intermediates=hit.intermediates)
        except VerificationError:
            raise
        except Exception as exc:  # a malformed extension or name, found when first read
            raise MalformedSignature(f"a certificate in the signature is malformed: "
                                     f"{type(exc).__name__} {exc}") from exc
        return VerifiedSignature(_bind(hit.signer, expected_member), hit.signer.cert,
                                 hit.signing_time)
    template = _known_template(signature)
    if template is not None:
        known_signer, known_time = _verify_with(template, signature, content, trust, now,
                                                purpose)
        entry = _Verified(known_signer, template.signer_der, template.intermediates,
                          known_time, purpose)
    else:
        signer, signing_time = _verify_new(signature, content, trust, now, purpose)
        parsed = parse_signed_data(signature)
        signer_der = next(c for c in parsed.certificates if _signer_cert(c) is signer)
        others = tuple(_signer_cert(c).cert for c in parsed.certificates if c is not signer_der)
        entry = _Verified(signer, signer_der, others, signing_time, purpose)
    with _cert_lock:
        _verified_cache[key] = entry
        while len(_verified_cache) > _VERIFIED_CACHE_SIZE:
            _verified_cache.popitem(last=False)
    return VerifiedSignature(_bind(entry.signer, expected_member), entry.signer.cert,
                             entry.signing_time)


def _verify_new(signature: bytes, content: bytes, trust: TrustStore, now: datetime,
                purpose: Purpose) -> tuple[_SignerCert, datetime | None]:
    """Parse and verify a detached signature; remember its layout when it is the common
    one and everything verified."""
    layout = _common_layout(signature)
    if layout is not None:
        parsed = layout[0]
    else:
        parsed = parse_signed_data(signature)
        if parsed.content is not None:
            raise MalformedSignature("the signature encapsulates its content; a detached "
                                     "signature is expected")
        if parsed.content_type != ID_DATA:
            raise MalformedSignature(f"content type {parsed.content_type} is not id-data")
    signer, signing_time = _verify_parsed(parsed, content, trust, now, purpose)
    if layout is not None:
        signer_der = next(c for c in parsed.certificates if _signer_cert(c) is signer)
        _remember_template(signature, layout, signer, signer_der)
    return signer, signing_time


def verify_single(signature: bytes, content: bytes, trust: TrustStore, now: datetime,
                  expected_member: ClientId | None
                  ) -> tuple[ClientId | None, x509.Certificate, datetime | None]:
    """``verify_detached`` for signing (not a batch), returning member, certificate and
    signing time as a tuple (for ``signer.verify_message``, which wraps them itself)."""
    signer, signing_time = _verify_known(signature, content, trust, now, Purpose.SIGNING) or \
        _verify_new(signature, content, trust, now, Purpose.SIGNING)
    return _bind(signer, expected_member), signer.cert, signing_time


def verify_encapsulated(signature: bytes, trust: TrustStore, now: datetime, *,
                        content_type: str, purpose: Purpose = Purpose.SIGNING
                        ) -> tuple[VerifiedSignature, bytes]:
    """Verify a SignedData that carries its content; return the signer and the content."""
    parsed = parse_signed_data(signature)
    if parsed.content is None:
        raise MalformedSignature("the signature carries no content")
    if parsed.content_type != content_type:
        raise MalformedSignature(f"content type {parsed.content_type} is not {content_type}")
    signer, signing_time = _verify_parsed(parsed, parsed.content, trust, now, purpose)
    return VerifiedSignature(_bind(signer, None), signer.cert, signing_time), parsed.content


def utc_now() -> datetime:
    """The current time, for the outermost layer only."""
    return datetime.now(UTC)

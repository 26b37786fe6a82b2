"""Trusted CAs and certificate path validation at a given time, for a given purpose.

The trust store builds a path from the end-entity certificate through any intermediates
the sender supplied to one of the configured CAs, checks every signature, the CA flags
(basicConstraints, keyCertSign, path length), the validity of every certificate at
``now``, and the end entity's key usage for the purpose. Chains already validated are
cached (keyed by the end-entity DER and purpose); a cache hit still checks ``now`` against
the chain's joint validity window. Revocation (CRL/OCSP) is not checked.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from secserver.signing.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    UntrustedCertificate,
    WrongKeyUsage,
)
from secserver.signing.keys import load_certificates

MAX_DEPTH = 6
CACHE_SIZE = 4096


class Purpose(enum.Enum):
    """What an end-entity certificate is checked for."""

    SIGNING = "signing"            # digitalSignature or nonRepudiation; no TLS/TSA-only EKU
    TLS_SERVER = "tls-server"      # EKU serverAuth (if EKU present), digitalSignature
    TLS_CLIENT = "tls-client"      # EKU clientAuth (if EKU present), digitalSignature
    TIMESTAMPING = "timestamping"  # EKU exactly timeStamping and critical (RFC 3161 2.3)


_TLS_ONLY = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
             ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.OCSP_SIGNING}


def describe(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}' (serial {cert.serial_number:x})"


def _ext(cert: x509.Certificate,
         cls: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType] | None:
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def check_purpose(cert: x509.Certificate, purpose: Purpose) -> None:
    """Raise ``WrongKeyUsage`` unless the end-entity certificate fits ``purpose``."""
    ku_ext = _ext(cert, x509.KeyUsage)
    eku_ext = _ext(cert, x509.ExtendedKeyUsage)
    ku = ku_ext.value if ku_ext is not None else None
    eku = set(eku_ext.value) if eku_ext is not None else None  # type: ignore[call-overload]
    bc = _ext(cert, x509.BasicConstraints)
    if bc is not None and bc.value.ca:  # type: ignore[attr-defined]
        raise WrongKeyUsage(f"certificate {describe(cert)} is a CA certificate; it cannot be "
                            f"used for {purpose.value}")
    if purpose is Purpose.SIGNING:
        if ku is not None and not (ku.digital_signature or ku.content_commitment):  # type: ignore[attr-defined]
            raise WrongKeyUsage(f"certificate {describe(cert)} has neither digitalSignature nor "
                                "nonRepudiation key usage; it cannot sign documents")
        if eku is not None and eku <= _TLS_ONLY:
            names = ", ".join(sorted(o._name for o in eku))
            raise WrongKeyUsage(f"certificate {describe(cert)} is restricted to {names}; it "
                                "cannot sign documents")
        return
    if purpose in (Purpose.TLS_SERVER, Purpose.TLS_CLIENT):
        wanted = (ExtendedKeyUsageOID.SERVER_AUTH if purpose is Purpose.TLS_SERVER
                  else ExtendedKeyUsageOID.CLIENT_AUTH)
        if eku is not None and wanted not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE \
                not in eku:
            raise WrongKeyUsage(f"certificate {describe(cert)} lacks extended key usage "
                                f"{wanted._name}")
        if ku is not None and not ku.digital_signature:  # type: ignore[attr-defined]
            raise WrongKeyUsage(f"certificate {describe(cert)} lacks digitalSignature key usage")
        return
    # TIMESTAMPING
    if eku_ext is None or eku != {ExtendedKeyUsageOID.TIME_STAMPING}:
        raise WrongKeyUsage(f"certificate {describe(cert)} does not have extended key usage "
                            "timeStamping as its only purpose; it is not a TSA certificate")
    if not eku_ext.critical:
        raise WrongKeyUsage(f"certificate {describe(cert)} has a non-critical timeStamping "
                            "extended key usage; RFC 3161 requires it to be critical")
    if ku is not None and not (ku.digital_signature or ku.content_commitment):  # type: ignore[attr-defined]
        raise WrongKeyUsage(f"certificate {describe(cert)} cannot sign timestamps (key usage)")


def _check_time(cert: x509.Certificate, now: datetime, role: str) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateNotYetValid(
            f"{role} {describe(cert)} is not valid before "
            f"{cert.not_valid_before_utc.isoformat()}; it is {now.isoformat()}")
    if now > cert.not_valid_after_utc:
        raise CertificateExpired(
            f"{role} {describe(cert)} expired at {cert.not_valid_after_utc.isoformat()}; it is "
            f"{now.isoformat()}")


def _check_ca(cert: x509.Certificate, below: int) -> None:
    bc_ext = _ext(cert, x509.BasicConstraints)
    if bc_ext is None or not bc_ext.value.ca:  # type: ignore[attr-defined]
        raise UntrustedCertificate(f"issuer {describe(cert)} is not a CA (basicConstraints)")
    path_length = bc_ext.value.path_length  # type: ignore[attr-defined]
    if path_length is not None and below > path_length:
        raise UntrustedCertificate(f"CA {describe(cert)} allows {path_length} intermediate CAs "
                                   f"below it; the chain has {below}")
    ku_ext = _ext(cert, x509.KeyUsage)
    if ku_ext is not None and not ku_ext.value.key_cert_sign:  # type: ignore[attr-defined]
        raise UntrustedCertificate(f"issuer {describe(cert)} may not sign certificates")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (CryptoInvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class _Validated:
    chain: tuple[x509.Certificate, ...]
    not_before: datetime
    not_after: datetime


class TrustStore:
    """The CAs a node trusts, with a cache of validated chains (cleared when full).
    Thread-safe."""

    def __init__(self, cas: Iterable[x509.Certificate]) -> None:
        self.cas: tuple[x509.Certificate, ...] = tuple(cas)
        if not self.cas:
            raise UntrustedCertificate("the trust store is empty; configure [trust] ca_files")
        self._anchor_der = {c.public_bytes(serialization.Encoding.DER) for c in self.cas}
        self._cache: dict[Purpose, dict[bytes, _Validated]] = {p: {} for p in Purpose}

    @classmethod
    def from_files(cls, paths: Iterable[Path | str]) -> TrustStore:
        cas: list[x509.Certificate] = []
        for path in paths:
            cas.extend(load_certificates(path))
        return cls(cas)

    def verify(self, cert: x509.Certificate, *, now: datetime,
               purpose: Purpose = Purpose.SIGNING,
               intermediates: Sequence[x509.Certificate] = ()) -> tuple[x509.Certificate, ...]:
        """Validate ``cert`` at ``now`` for ``purpose``; return the chain, leaf first.

        Raises ``UntrustedCertificate``, ``CertificateExpired``, ``CertificateNotYetValid``
        or ``WrongKeyUsage``.
        """
        der = cert.public_bytes(serialization.Encoding.DER)
        return self.verify_der(der, cert, now=now, purpose=purpose, intermediates=intermediates)

    def verify_der(self, der: bytes, cert: x509.Certificate, *, now: datetime,
                   purpose: Purpose,
                   intermediates: Sequence[x509.Certificate] = ()) -> tuple[x509.Certificate, ...]:
        """As ``verify``, when the caller already has the DER bytes of ``cert``."""
        cache = self._cache[purpose]
        hit = cache.get(der)  # dict reads and writes are atomic: no lock needed
        if hit is not None and hit.not_before <= now <= hit.not_after:
            return hit.chain
        validated = self._validate(cert, der, now, purpose, intermediates)
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[der] = validated
        return validated.chain

    def _validate(self, cert: x509.Certificate, der: bytes, now: datetime, purpose: Purpose,
                  intermediates: Sequence[x509.Certificate]) -> _Validated:
        check_purpose(cert, purpose)
        chain = [cert]
        current, current_der = cert, der
        while current_der not in self._anchor_der:
            if len(chain) > MAX_DEPTH:
                raise UntrustedCertificate(f"certificate {describe(cert)}: chain longer than "
                                           f"{MAX_DEPTH}")
            anchor = next((ca for ca in self.cas if _issued_by(current, ca)), None)
            if anchor is not None:
                chain.append(anchor)
                break
            nxt = next((c for c in intermediates if c not in chain and _issued_by(current, c)),
                       None)
            if nxt is None:
                raise UntrustedCertificate(
                    f"certificate {describe(cert)} does not chain to a trusted CA (no trusted "
                    f"issuer '{current.issuer.rfc4514_string()}')")
            chain.append(nxt)
            current, current_der = nxt, nxt.public_bytes(serialization.Encoding.DER)
        for depth, ca in enumerate(chain[1:]):
            _check_ca(ca, depth)
        for index, item in enumerate(chain):
            _check_time(item, now, "certificate" if index == 0 else "CA certificate")
        return _Validated(tuple(chain), max(c.not_valid_before_utc for c in chain),
                          min(c.not_valid_after_utc for c in chain))

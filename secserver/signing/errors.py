"""Errors of the signing package: keys, certificates, signatures and timestamps.

Verification failures share the base ``VerificationError`` so a proxy can catch them all;
each subclass has its own code. Codes are bare: the proxy prefixes the side
(``Server.ServerProxy.`` / ``Server.ClientProxy.``) it happened on.
"""

from __future__ import annotations

from secserver.errors import SecServerError


class KeyUnavailable(SecServerError):
    """A private key or certificate file cannot be read, decrypted or used."""

    code = "KeyUnavailable"
    http_status = 500


class VerificationError(SecServerError):
    """Base of every failed check of a signature, certificate or timestamp."""

    code = "InvalidSignature"
    http_status = 400


class MalformedSignature(VerificationError):
    """The signature is not a CMS SignedData (or batch signature) this server understands."""

    code = "MalformedSignature"


class InvalidSignature(VerificationError):
    """The signature value does not verify with the signer's public key."""

    code = "InvalidSignatureValue"


class DigestMismatch(VerificationError):
    """The signed digest does not match the content (the document or body changed)."""

    code = "DigestMismatch"


class UntrustedCertificate(VerificationError):
    """The certificate does not chain to a trusted CA."""

    code = "UntrustedCertificate"


class CertificateExpired(VerificationError):
    """A certificate of the chain is past its notAfter at the time of the check."""

    code = "CertificateExpired"


class CertificateNotYetValid(VerificationError):
    """A certificate of the chain is before its notBefore at the time of the check."""

    code = "CertificateNotYetValid"


class SignerMismatch(VerificationError):
    """The signer certificate is not bound to the member that claims to have signed."""

    code = "SignerMismatch"
    http_status = 403


class WrongKeyUsage(VerificationError):
    """The certificate is not meant for this purpose (key usage or extended key usage)."""

    code = "WrongKeyUsage"


class TimestampError(VerificationError):
    """A timestamp token or response fails a check."""

    code = "InvalidTimestamp"


class TimestampRejected(TimestampError):
    """The TSA answered with a status other than granted."""

    code = "TimestampRejected"


class TimestampUnavailable(SecServerError):
    """The TSA cannot be reached, times out or answers with an HTTP error."""

    code = "TimestampUnavailable"
    http_status = 503

"""Private keys and certificates on disk: PKCS#8 PEM keys (optionally encrypted), PEM/DER
certificates. Errors name the file and what to do; passphrases are never logged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from secserver.signing.errors import KeyUnavailable

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_PEM_CERT = b"-----BEGIN CERTIFICATE-----"


def _read(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise KeyUnavailable(f"{what} file {path} does not exist") from exc
    except OSError as exc:
        raise KeyUnavailable(f"cannot read {what} file {path}: {exc.strerror}") from exc


def load_private_key(path: Path | str, passphrase: bytes | None = None) -> PrivateKey:
    """Load a PEM (PKCS#8 or traditional) or DER private key: EC P-256/P-384 or RSA >= 2048."""
    data = _read(path, "private key")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, passphrase)
        else:
            key = serialization.load_der_private_key(data, passphrase)
    except TypeError as exc:
        if passphrase is None:
            raise KeyUnavailable(
                f"private key {path} is encrypted; give its passphrase "
                "(key_passphrase_file, or --passphrase-env/--passphrase-file)") from exc
        raise KeyUnavailable(f"private key {path} is not encrypted; remove the passphrase "
                             "setting") from exc
    except ValueError as exc:
        hint = "wrong passphrase or " if passphrase is not None else ""
        raise KeyUnavailable(f"cannot load private key {path}: {hint}not a valid key "
                             f"({exc})") from exc
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm and others
        raise KeyUnavailable(f"cannot load private key {path}: {exc}") from exc
    return check_key_type(key, str(path))


def check_key_type(key: object, where: str) -> PrivateKey:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1):
            raise KeyUnavailable(f"key {where} uses curve {key.curve.name}; "
                                 "use P-256 (or P-384/P-521)")
        return key
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 2048:
            raise KeyUnavailable(f"RSA key {where} has {key.key_size} bits; at least 2048")
        return key
    raise KeyUnavailable(f"key {where} is a {type(key).__name__}; use EC P-256 or RSA")


def load_certificates(path: Path | str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, or the single certificate of a DER file."""
    data = _read(path, "certificate")
    try:
        if _PEM_CERT in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise KeyUnavailable(f"{path} does not hold a valid X.509 certificate ({exc})") from exc
    if not certs:
        raise KeyUnavailable(f"{path} holds no certificate")
    return certs


def load_certificate(path: Path | str) -> x509.Certificate:
    """The first certificate of a PEM or DER file."""
    return load_certificates(path)[0]


def private_key_pem(key: PrivateKey, passphrase: bytes | None) -> bytes:
    """PKCS#8 PEM, encrypted (AES-256-CBC, PBKDF2) when a passphrase is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def write_private_key(path: Path, key: PrivateKey, passphrase: bytes | None) -> None:
    """Write a key as PKCS#8 PEM with mode 0600 from the start (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = private_key_pem(key, passphrase)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def public_key_matches(key: PrivateKey, cert: x509.Certificate) -> bool:
    """Whether ``cert`` certifies the public half of ``key``."""
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(key.public_key().public_bytes(serialization.Encoding.DER, fmt)
                == cert.public_key().public_bytes(serialization.Encoding.DER, fmt))

"""Identities in certificates, and the development PKI (``secserver pki init-dev``).

How an identifier is bound into a certificate (docs/protocol.md, "Certificates"): the
subject carries exactly one ``serialNumber`` attribute (OID 2.5.4.5) whose value is the
identifier's text form: ``INSTANCE/CLASS/MEMBER`` in a member signing certificate,
``INSTANCE/CLASS/MEMBER/SERVER`` in a security server's TLS and log certificates. Other
subject attributes (``O`` = instance, ``OU`` = member class, ``CN``) are for people only.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from secserver.errors import InvalidIdentifier, SecServerError
from secserver.identifiers import ClientId, ServerId
from secserver.signing.errors import SignerMismatch
from secserver.signing.keys import PrivateKey, PublicKey, write_certificate, write_private_key

KeyType = Literal["ec-p256", "rsa2048", "rsa3072"]
KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "rsa2048", "rsa3072")
Profile = Literal["ca", "sign", "tls", "log", "tsa", "operator"]

DEV_INSTANCE = "JP-DEV"
DEV_MEMBERS: tuple[tuple[ClientId, str], ...] = (
    (ClientId(DEV_INSTANCE, "GOV", "TOYONO"), "ELDERCARE"),
    (ClientId(DEV_INSTANCE, "COM", "OTTA"), "TAGS"),
)
DEV_SERVERS: tuple[ServerId, ...] = (
    ServerId(ClientId(DEV_INSTANCE, "GOV", "TOYONO"), "SS1"),
    ServerId(ClientId(DEV_INSTANCE, "COM", "OTTA"), "SS1"),
)
CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=730)
BACKDATE = timedelta(minutes=5)


class PkiError(SecServerError):
    """The development PKI cannot be created where asked."""

    code = "PkiError"
    http_status = 500


# --- identities --------------------------------------------------------------------------

def _id_text(cert: x509.Certificate) -> str:
    values = cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    if len(values) != 1:
        raise SignerMismatch(
            f"certificate '{cert.subject.rfc4514_string()}' carries "
            f"{'no' if not values else len(values)} serialNumber subject attribute(s); a "
            "secserver identity certificate carries exactly one with the member or server id")
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def member_id_from_certificate(cert: x509.Certificate) -> ClientId:
    """The member (``INSTANCE/CLASS/MEMBER``) a signing certificate is bound to."""
    text = _id_text(cert)
    try:
        client = ClientId.parse(text)
    except InvalidIdentifier as exc:
        raise SignerMismatch(f"certificate serialNumber {text!r} is not a member id: "
                             f"{exc.message}") from exc
    if client.is_subsystem:
        raise SignerMismatch(f"certificate serialNumber {text!r} names a subsystem or server; "
                             "a signing certificate names a member INSTANCE/CLASS/MEMBER")
    return client


def server_id_from_certificate(cert: x509.Certificate) -> ServerId:
    """The security server (``INSTANCE/CLASS/MEMBER/SERVER``) a TLS or log certificate names."""
    text = _id_text(cert)
    try:
        return ServerId.parse(text)
    except InvalidIdentifier as exc:
        raise SignerMismatch(f"certificate serialNumber {text!r} is not a security server id: "
                             f"{exc.message}") from exc


def _id_attribute(text: str) -> x509.NameAttribute[str]:
    printable = all(c.isascii() and (c.isalnum() or c in " '()+,-./:=?") for c in text)
    kind = x509.name._ASN1Type.PrintableString if printable else x509.name._ASN1Type.UTF8String
    return x509.NameAttribute(NameOID.SERIAL_NUMBER, text, _type=kind)


def member_subject(member: ClientId) -> x509.Name:
    if member.is_subsystem:
        raise InvalidIdentifier(f"signing certificates belong to members, not to {member}")
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, member.instance),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, member.member_class),
        x509.NameAttribute(NameOID.COMMON_NAME, member.member_code),
        _id_attribute(str(member)),
    ])


def server_subject(server: ServerId, *, role: str = "") -> x509.Name:
    common = f"{server.owner.member_code} {server.code}" + (f" {role}" if role else "")
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, server.owner.instance),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, server.owner.member_class),
        x509.NameAttribute(NameOID.COMMON_NAME, common),
        _id_attribute(str(server)),
    ])


def plain_subject(instance: str, common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, instance),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


# --- issuing -----------------------------------------------------------------------------

def generate_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type in ("rsa2048", "rsa3072"):
        return rsa.generate_private_key(65537, 2048 if key_type == "rsa2048" else 3072)
    raise PkiError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")


def _key_usage(*, signature: bool = False, commitment: bool = False, encipher: bool = False,
               cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=signature, content_commitment=commitment, key_encipherment=encipher,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def issue_certificate(
    *, subject: x509.Name, public_key: PublicKey, issuer_key: PrivateKey,
    issuer: x509.Certificate | None, profile: Profile, not_before: datetime,
    not_after: datetime, dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = (),
    path_length: int | None = 0,
) -> x509.Certificate:
    """Issue one certificate of a secserver profile (``issuer=None``: self-signed CA).

    Profiles: ``ca`` (keyCertSign, cRLSign), ``sign``/``log``/``operator``
    (digitalSignature + nonRepudiation), ``tls`` (digitalSignature [+ keyEncipherment for
    RSA], EKU serverAuth + clientAuth, SAN), ``tsa`` (as sign, plus EKU timeStamping,
    critical, as RFC 3161 requires).
    """
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    if profile == "ca":
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length),
                                        critical=True)
        builder = builder.add_extension(_key_usage(cert_sign=True), critical=True)
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                        critical=True)
    if profile in ("sign", "log", "operator", "tsa"):
        builder = builder.add_extension(_key_usage(signature=True, commitment=True),
                                        critical=True)
    if profile == "tsa":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    if profile == "tls":
        builder = builder.add_extension(
            _key_usage(signature=True, encipher=isinstance(public_key, rsa.RSAPublicKey)),
            critical=True)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                   ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@dataclasses.dataclass(frozen=True)
class DevPki:
    """Paths of a development PKI created by ``init_dev_pki``."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    tsa_cert: Path
    tsa_key: Path
    operator_cert: Path
    operator_key: Path

    def member_dir(self, member: ClientId) -> Path:
        return self.directory / "members" / f"{member.member_class}.{member.member_code}"

    def server_dir(self, server: ServerId) -> Path:
        owner = server.owner
        name = f"{owner.member_class}.{owner.member_code}.{server.code}"
        return self.directory / "servers" / name

    @classmethod
    def at(cls, directory: Path) -> DevPki:
        return cls(directory, directory / "ca/ca.crt", directory / "ca/ca.key",
                   directory / "tsa/tsa.crt", directory / "tsa/tsa.key",
                   directory / "directory/operator.crt", directory / "directory/operator.key")


def init_dev_pki(directory: Path, *, key_type: KeyType = "ec-p256",
                 passphrase: bytes | None = None, now: datetime | None = None,
                 force: bool = False) -> DevPki:
    """Create the development PKI of instance JP-DEV in ``directory`` (layout: docs)."""
    if key_type not in KEY_TYPES:
        raise PkiError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")
    pki = DevPki.at(directory)
    if pki.ca_cert.exists() and not force:
        raise PkiError(f"{pki.ca_cert} already exists; use an empty directory, or --force to "
                       "replace the whole development PKI")
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    start = now - BACKDATE
    directory.mkdir(parents=True, exist_ok=True)

    ca_key = generate_key(key_type)
    ca = issue_certificate(subject=plain_subject(DEV_INSTANCE, f"{DEV_INSTANCE} development CA"),
                           public_key=ca_key.public_key(), issuer_key=ca_key, issuer=None,
                           profile="ca", not_before=start, not_after=start + CA_VALIDITY)
    write_private_key(pki.ca_key, ca_key, passphrase)
    write_certificate(pki.ca_cert, ca)

    def leaf(cert_path: Path, key_path: Path, subject: x509.Name, profile: Profile,
             dns_names: Sequence[str] = (), ip_addresses: Sequence[str] = ()) -> None:
        key = generate_key(key_type)
        cert = issue_certificate(subject=subject, public_key=key.public_key(), issuer_key=ca_key,
                                 issuer=ca, profile=profile, not_before=start,
                                 not_after=start + LEAF_VALIDITY, dns_names=dns_names,
                                 ip_addresses=ip_addresses)
        write_private_key(key_path, key, passphrase)
        write_certificate(cert_path, cert)

    for member, _subsystem in DEV_MEMBERS:
        folder = pki.member_dir(member)
        leaf(folder / "sign.crt", folder / "sign.key", member_subject(member), "sign")
    for server in DEV_SERVERS:
        folder = pki.server_dir(server)
        leaf(folder / "tls.crt", folder / "tls.key", server_subject(server), "tls",
             dns_names=("localhost",), ip_addresses=("127.0.0.1",))
        leaf(folder / "log.crt", folder / "log.key", server_subject(server, role="log"), "log")
    leaf(pki.tsa_cert, pki.tsa_key,
         plain_subject(DEV_INSTANCE, f"{DEV_INSTANCE} development TSA"), "tsa")
    leaf(pki.operator_cert, pki.operator_key,
         plain_subject(DEV_INSTANCE, f"{DEV_INSTANCE} directory operator"), "operator")
    return pki

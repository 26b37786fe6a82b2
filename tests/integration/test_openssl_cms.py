"""Cross-checks with OpenSSL, both directions: CMS signatures and the development PKI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pki_fixtures import dev_pki, dev_pki_rsa  # noqa: F401

from secserver.identifiers import ClientId
from secserver.signing.cms import RsaPadding, verify_detached
from secserver.signing.errors import (
    DigestMismatch,
    InvalidSignature,
    MalformedSignature,
    SignerMismatch,
    UntrustedCertificate,
)
from secserver.signing.keys import load_certificate, load_private_key
from secserver.signing.merkle import root_from_path
from secserver.signing.pki import DEV_MEMBERS, DevPki, init_dev_pki
from secserver.signing.signer import SignatureBlob, Signer, batch_root_document, verify_message
from secserver.signing.trust import TrustStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]
TOYONO, OTTA = DEV_MEMBERS[0][0], DEV_MEMBERS[1][0]
DOCUMENT = (Path(__file__).parents[1] / "assets" / "signing" / "request.sdoc").read_bytes()


def openssl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True,
                            timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed: {result.stderr}")
    return result


def openssl_verifies(pki: DevPki, signature: bytes, content: bytes, tmp: Path) -> bool:
    (tmp / "sig.der").write_bytes(signature)
    (tmp / "content").write_bytes(content)
    result = openssl("cms", "-verify", "-binary", "-content", tmp / "content", "-inform", "DER",
                     "-in", tmp / "sig.der", "-CAfile", pki.ca_cert, "-out", "/dev/null",
                     check=False)
    return result.returncode == 0


def member_files(pki: DevPki, member: ClientId = TOYONO) -> tuple[Path, Path]:
    folder = pki.member_dir(member)
    return folder / "sign.crt", folder / "sign.key"


@pytest.fixture(params=["ec", "rsa", "rsa-pss"])
def setup(request: pytest.FixtureRequest) -> tuple[DevPki, str]:
    pki: DevPki = request.getfixturevalue("dev_pki" if request.param == "ec" else "dev_pki_rsa")
    return pki, request.param


def test_every_certificate_passes_openssl_verify(dev_pki: DevPki,  # noqa: F811
                                                 dev_pki_rsa: DevPki) -> None:  # noqa: F811
    for pki in (dev_pki, dev_pki_rsa):
        certificates = sorted(pki.directory.rglob("*.crt"))
        assert len(certificates) == 9
        for cert in certificates:
            assert openssl("verify", "-CAfile", pki.ca_cert, cert).stdout.strip() == \
                f"{cert}: OK"
        tsa = openssl("verify", "-CAfile", pki.ca_cert, "-purpose", "timestampsign",
                      pki.tsa_cert, check=False)
        assert tsa.returncode == 0, tsa.stderr
        for server in pki.directory.glob("servers/*/tls.crt"):
            for purpose in ("sslserver", "sslclient"):
                openssl("verify", "-CAfile", pki.ca_cert, "-purpose", purpose, server)


def test_secserver_signatures_pass_openssl(setup: tuple[DevPki, str], tmp_path: Path) -> None:
    pki, kind = setup
    cert_file, key_file = member_files(pki)
    signer = Signer(load_private_key(key_file), load_certificate(cert_file),
                    rsa_padding="pss" if kind == "rsa-pss" else "pkcs1v15")
    signature = signer.sign_now(DOCUMENT)
    assert openssl_verifies(pki, signature, DOCUMENT, tmp_path)
    if kind == "rsa-pss":
        parsed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", tmp_path / "sig.der")
        assert "rsassaPss" in parsed.stdout
    # Tampered content, signature value, certificate: OpenSSL rejects all of them.
    assert not openssl_verifies(pki, signature, DOCUMENT + b" ", tmp_path)
    flipped = signature[:-3] + bytes([signature[-3] ^ 0x01]) + signature[-2:]
    assert not openssl_verifies(pki, flipped, DOCUMENT, tmp_path)
    cert_der = load_certificate(cert_file).public_bytes(serialization.Encoding.DER)
    pos = signature.index(cert_der) + len(cert_der) - 20  # inside the CA's signature
    broken = signature[:pos] + bytes([signature[pos] ^ 0x01]) + signature[pos + 1:]
    assert not openssl_verifies(pki, broken, DOCUMENT, tmp_path)
    trust = TrustStore.from_files([pki.ca_cert])
    now = datetime.now(UTC)
    with pytest.raises((UntrustedCertificate, MalformedSignature, InvalidSignature)):
        verify_detached(broken, DOCUMENT, trust, now)


@pytest.mark.parametrize("options", [
    (), ("-md", "sha512"), ("-keyid",), ("-noattr",), ("-nosmimecap", "-md", "sha384"),
])
def test_openssl_signatures_pass_secserver(setup: tuple[DevPki, str], tmp_path: Path,
                                           options: tuple[str, ...]) -> None:
    pki, kind = setup
    cert_file, key_file = member_files(pki)
    (tmp_path / "doc").write_bytes(DOCUMENT)
    extra = ["-keyopt", "rsa_padding_mode:pss"] if kind == "rsa-pss" else []
    openssl("cms", "-sign", "-binary", "-in", tmp_path / "doc", "-signer", cert_file,
            "-inkey", key_file, "-outform", "DER", "-out", tmp_path / "sig.der", *extra, *options)
    signature = (tmp_path / "sig.der").read_bytes()
    trust = TrustStore.from_files([pki.ca_cert])
    now = datetime.now(UTC)
    client = ClientId("JP-DEV", "GOV", "TOYONO", "ELDERCARE")
    result = verify_detached(signature, DOCUMENT, trust, now, expected_member=client)
    assert result.member == TOYONO
    assert (result.signing_time is None) == ("-noattr" in options)
    # The same file through the message API (a single signature is plain CMS).
    assert verify_message(DOCUMENT, signature, trust, now, client).batch is None
    with pytest.raises(SignerMismatch):
        verify_detached(signature, DOCUMENT, trust, now, expected_member=OTTA)
    wanted = InvalidSignature if "-noattr" in options else DigestMismatch
    with pytest.raises(wanted):
        verify_detached(signature, DOCUMENT + b" ", trust, now)
    flipped = signature[:-3] + bytes([signature[-3] ^ 0x01]) + signature[-2:]
    with pytest.raises((InvalidSignature, MalformedSignature)):
        verify_detached(flipped, DOCUMENT, trust, now)
    # OpenSSL agrees on the tampered cases.
    assert openssl_verifies(pki, signature, DOCUMENT, tmp_path)
    assert not openssl_verifies(pki, signature, DOCUMENT + b" ", tmp_path)
    assert not openssl_verifies(pki, flipped, DOCUMENT, tmp_path)


def test_openssl_signature_with_other_key_is_rejected(dev_pki: DevPki,  # noqa: F811
                                                      tmp_path: Path) -> None:
    """A certificate signed by another CA but with the right member subject."""
    other = init_dev_pki(tmp_path / "other")
    cert_file, key_file = member_files(other)
    (tmp_path / "doc").write_bytes(DOCUMENT)
    openssl("cms", "-sign", "-binary", "-in", tmp_path / "doc", "-signer", cert_file,
            "-inkey", key_file, "-outform", "DER", "-out", tmp_path / "sig.der")
    signature = (tmp_path / "sig.der").read_bytes()
    with pytest.raises(UntrustedCertificate):
        verify_detached(signature, DOCUMENT, TrustStore.from_files([dev_pki.ca_cert]),
                        datetime.now(UTC))
    assert not openssl_verifies(dev_pki, signature, DOCUMENT, tmp_path)


def test_batch_signature_checks_with_openssl(dev_pki_rsa: DevPki,  # noqa: F811
                                             tmp_path: Path) -> None:
    """The hand procedure of docs/protocol.md: root from the path, then openssl cms."""
    cert_file, key_file = member_files(dev_pki_rsa)
    signer = Signer(load_private_key(key_file), load_certificate(cert_file))
    documents = [DOCUMENT + str(i).encode() for i in range(5)]
    blobs = signer.sign_many(documents)
    trust = TrustStore.from_files([dev_pki_rsa.ca_cert])
    for doc, blob in zip(documents, blobs, strict=True):
        verify_message(doc, blob, trust, datetime.now(UTC), TOYONO)
        parsed = SignatureBlob.from_bytes(blob)
        assert parsed.batch is not None
        root = root_from_path(doc, parsed.batch.index, parsed.batch.size, parsed.batch.path)
        assert openssl_verifies(dev_pki_rsa, parsed.cms, batch_root_document(root, 5), tmp_path)
        assert not openssl_verifies(dev_pki_rsa, parsed.cms, batch_root_document(root, 4),
                                    tmp_path)


def test_encrypted_keys_interoperate(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "pki", passphrase=b"correct horse")
    cert_file, key_file = member_files(pki)
    openssl("pkey", "-in", key_file, "-passin", "pass:correct horse", "-noout")
    assert openssl("pkey", "-in", key_file, "-passin", "pass:wrong", "-noout",
                   check=False).returncode != 0
    (tmp_path / "doc").write_bytes(DOCUMENT)
    openssl("cms", "-sign", "-binary", "-in", tmp_path / "doc", "-signer", cert_file,
            "-inkey", key_file, "-passin", "pass:correct horse", "-outform", "DER",
            "-out", tmp_path / "sig.der")
    verify_detached((tmp_path / "sig.der").read_bytes(), DOCUMENT,
                    TrustStore.from_files([pki.ca_cert]), datetime.now(UTC))


@pytest.mark.slow
def test_rsa3072(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path / "pki", key_type="rsa3072")
    for cert in sorted(pki.directory.rglob("*.crt")):
        openssl("verify", "-CAfile", pki.ca_cert, cert)
    cert_file, key_file = member_files(pki)
    key = load_private_key(key_file)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    paddings: tuple[RsaPadding, ...] = ("pkcs1v15", "pss")
    for padding in paddings:
        signature = Signer(key, load_certificate(cert_file), rsa_padding=padding).sign_now(
            DOCUMENT)
        assert openssl_verifies(pki, signature, DOCUMENT, tmp_path)
        assert not openssl_verifies(pki, signature, DOCUMENT[:-1], tmp_path)


def test_cli_signature_passes_openssl(dev_pki: DevPki, tmp_path: Path) -> None:  # noqa: F811
    """`secserver sign` as a real process, checked by `openssl cms -verify`, and
    `secserver verify` on an OpenSSL signature."""
    cert_file, key_file = member_files(dev_pki)
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nserver_id = "JP-DEV/GOV/TOYONO/SS1"\n'
                      f'[trust]\nca_files = ["{dev_pki.ca_cert}"]\n'
                      f'[signing]\ncert_file = "{cert_file}"\nkey_file = "{key_file}"\n')
    (tmp_path / "doc").write_bytes(DOCUMENT)
    with (tmp_path / "out.p7s").open("wb") as out:
        subprocess.run([sys.executable, "-m", "secserver", "sign", "--config", str(config),
                        str(tmp_path / "doc")], stdout=out, check=True, timeout=60)
    assert openssl_verifies(dev_pki, (tmp_path / "out.p7s").read_bytes(), DOCUMENT, tmp_path)
    openssl("cms", "-sign", "-binary", "-in", tmp_path / "doc", "-signer", cert_file,
            "-inkey", key_file, "-outform", "DER", "-out", tmp_path / "openssl.p7s")
    result = subprocess.run([sys.executable, "-m", "secserver", "verify", "--config",
                             str(config), str(tmp_path / "doc"), str(tmp_path / "openssl.p7s"),
                             "--member", "JP-DEV/GOV/TOYONO"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: signed by JP-DEV/GOV/TOYONO")
    (tmp_path / "doc").write_bytes(DOCUMENT + b"!")
    result = subprocess.run([sys.executable, "-m", "secserver", "verify", "--config",
                             str(config), str(tmp_path / "doc"), str(tmp_path / "openssl.p7s")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "does not match" in result.stderr

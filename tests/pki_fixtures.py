"""Development PKI and development TSA for tests. Import the fixtures you use:

    from pki_fixtures import dev_pki, dev_tsa  # noqa: F401

``dev_pki`` (session): an EC P-256 development PKI (``secserver pki init-dev`` layout).
``dev_pki_rsa`` (session): the same with RSA-2048 keys.
``dev_tsa`` (session): URL of a ``secserver tsa serve`` process on 127.0.0.1 using ``dev_pki``.
``start_tsa(directory)``: context manager running a TSA process; yields ``TsaProcess``.
``make_ca`` / ``make_leaf``: certificates with chosen validity and profile (negative tests).
``ca_fixture`` gives ``ca`` (module): a fresh ``make_ca()``; ``trust_fixture`` gives ``trust``
(module): a trust store anchored at ``ca``.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from secserver.signing.keys import PrivateKey
from secserver.signing.pki import (
    DevPki,
    KeyType,
    Profile,
    generate_key,
    init_dev_pki,
    issue_certificate,
    plain_subject,
)
from secserver.signing.trust import TrustStore

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
FAR = datetime(2040, 1, 1, tzinfo=UTC)


@dataclass
class TsaProcess:
    url: str
    port: int
    process: subprocess.Popen[str]


@contextlib.contextmanager
def start_tsa(directory: Path, *, port: int = 0, passphrase_file: Path | None = None,
              timeout: float = 30.0) -> Iterator[TsaProcess]:
    """Run ``python -m secserver tsa serve --dir DIRECTORY`` on 127.0.0.1; stop it after."""
    command = [sys.executable, "-m", "secserver", "tsa", "serve", "--dir", str(directory),
               "--host", "127.0.0.1", "--port", str(port)]
    if passphrase_file is not None:
        command += ["--passphrase-file", str(passphrase_file)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + timeout
        line = ""
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("listening ") or process.poll() is not None:
                break
        if not line.startswith("listening "):
            process.kill()
            _out, err = process.communicate(timeout=10)
            raise RuntimeError(f"dev TSA did not start (exit {process.returncode}): {err}")
        url = line.split()[1]
        bound = int(url.rstrip("/").rsplit(":", 1)[1])
        yield TsaProcess(url, bound, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("dev-pki"))


@pytest.fixture(scope="session")
def dev_pki_rsa(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("dev-pki-rsa"), key_type="rsa2048")


@pytest.fixture(scope="session")
def dev_trust(dev_pki: DevPki) -> TrustStore:
    return TrustStore.from_files([dev_pki.ca_cert])


@pytest.fixture(scope="session")
def dev_tsa(dev_pki: DevPki) -> Iterator[str]:
    """URL of a development TSA process (serving ``dev_pki``'s TSA key)."""
    with start_tsa(dev_pki.directory) as tsa:
        yield tsa.url


# --- custom certificates for negative tests --------------------------------------------

@dataclass(frozen=True)
class Issued:
    key: PrivateKey
    cert: x509.Certificate


def make_ca(name: str = "Test CA", *, not_before: datetime = EPOCH,
            not_after: datetime = FAR, key_type: KeyType = "ec-p256",
            issuer: Issued | None = None, path_length: int | None = 0) -> Issued:
    """A CA (self-signed, or an intermediate when ``issuer`` is given)."""
    key = generate_key(key_type)
    cert = issue_certificate(subject=plain_subject("JP-DEV", name), public_key=key.public_key(),
                             issuer_key=issuer.key if issuer else key,
                             issuer=issuer.cert if issuer else None, profile="ca",
                             not_before=not_before, not_after=not_after,
                             path_length=path_length)
    return Issued(key, cert)


def make_leaf(ca: Issued, subject: x509.Name, profile: Profile = "sign", *,
              not_before: datetime = EPOCH, not_after: datetime = FAR,
              key_type: KeyType = "ec-p256") -> Issued:
    key = generate_key(key_type)
    cert = issue_certificate(subject=subject, public_key=key.public_key(), issuer_key=ca.key,
                             issuer=ca.cert, profile=profile, not_before=not_before,
                             not_after=not_after)
    return Issued(key, cert)


# Imported as ``ca_fixture``/``trust_fixture`` and requested as ``ca``/``trust``, so a test's
# ``ca`` argument does not shadow an import.

@pytest.fixture(scope="module", name="ca")
def ca_fixture() -> Issued:
    """A fresh test CA (``make_ca()``) per test module."""
    return make_ca()


@pytest.fixture(scope="module", name="trust")
def trust_fixture(ca: Issued) -> TrustStore:
    """A trust store anchored at ``ca`` only."""
    return TrustStore([ca.cert])

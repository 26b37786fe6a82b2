"""RFC 3161 cross-checks with OpenSSL, both directions."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pki_fixtures import dev_pki, dev_pki_rsa  # noqa: F401
from pyasn1.codec.der import decoder
from pyasn1_modules import rfc3161

from secserver.signing.errors import TimestampError, UntrustedCertificate
from secserver.signing.pki import DevPki, init_dev_pki
from secserver.signing.timestamp import build_request, parse_response, verify_timestamp
from secserver.signing.trust import TrustStore
from secserver.signing.tsa import DevTsa

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed"),
]
DATA = b"checkpoint: batch 42, root 9f86d081884c7d65..., head 2c26b46b68ffc68f...\n"
OPENSSL_POLICY = "1.2.3.4.1"


def openssl(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed: "
                             f"{result.stderr.decode(errors='replace')}")
    return result


@pytest.fixture(params=["ec", "rsa"])
def pki(request: pytest.FixtureRequest) -> DevPki:
    return request.getfixturevalue("dev_pki" if request.param == "ec" else "dev_pki_rsa")  # type: ignore[no-any-return]


def openssl_ts_verifies(pki: DevPki, token: bytes, data: bytes, tmp: Path, *,
                        token_in: bool = True) -> bool:
    (tmp / "data").write_bytes(data)
    (tmp / "token").write_bytes(token)
    result = openssl("ts", "-verify", "-data", tmp / "data", "-in", tmp / "token",
                     *(["-token_in"] if token_in else []), "-CAfile", pki.ca_cert,
                     "-untrusted", pki.tsa_cert, check=False)
    return result.returncode == 0 and b"Verification: OK" in result.stdout


def test_secserver_tokens_pass_openssl(pki: DevPki, tmp_path: Path) -> None:
    copy = tmp_path / "pki"
    shutil.copytree(pki.directory, copy)
    tsa = DevTsa.from_directory(copy)
    response = tsa.respond(build_request(DATA, 777), datetime.now(UTC))
    token = parse_response(response)
    assert openssl_ts_verifies(pki, token, DATA, tmp_path)
    assert openssl_ts_verifies(pki, response, DATA, tmp_path, token_in=False)
    assert not openssl_ts_verifies(pki, token, DATA + b"x", tmp_path)
    flipped = token[:-3] + bytes([token[-3] ^ 1]) + token[-2:]
    assert not openssl_ts_verifies(pki, flipped, DATA, tmp_path)
    # The nonce check of OpenSSL agrees too.
    (tmp_path / "query").write_bytes(build_request(DATA, 778))
    (tmp_path / "token").write_bytes(token)
    mismatch = openssl("ts", "-verify", "-queryfile", tmp_path / "query", "-in",
                       tmp_path / "token", "-token_in", "-CAfile", pki.ca_cert,
                       "-untrusted", pki.tsa_cert, check=False)
    assert mismatch.returncode != 0 and b"nonce mismatch" in mismatch.stderr
    (tmp_path / "query").write_bytes(build_request(DATA, 777))
    openssl("ts", "-verify", "-queryfile", tmp_path / "query", "-in", tmp_path / "token",
            "-token_in", "-CAfile", pki.ca_cert, "-untrusted", pki.tsa_cert)
    # The text form OpenSSL prints names our policy and a serial.
    printed = openssl("ts", "-reply", "-in", tmp_path / "token", "-token_in", "-text").stdout
    assert b"Policy OID: 2.25.338955374141899732569297194573310171554" in printed


def _openssl_tsa_config(pki: DevPki, tmp: Path, ess_alg: str) -> Path:
    config = tmp / "tsa.cnf"
    config.write_text(f"""
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {tmp}
serial = {tmp}/tsaserial
crypto_device = builtin
signer_cert = {pki.tsa_cert}
signer_key = {pki.tsa_key}
signer_digest = sha256
default_policy = {OPENSSL_POLICY}
other_policies = 1.2.3.4.5
digests = sha256, sha384, sha512
accuracy = secs:1, millisecs:500, microsecs:100
clock_precision_digits = 3
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = {ess_alg}
""", encoding="ascii")
    (tmp / "tsaserial").write_text("01\n", encoding="ascii")
    return config


@pytest.mark.parametrize("ess_alg", ["sha256", "sha1"])
@pytest.mark.parametrize("query_by", ["openssl", "secserver"])
def test_openssl_tokens_pass_secserver(pki: DevPki, tmp_path: Path, ess_alg: str,
                                       query_by: str) -> None:
    config = _openssl_tsa_config(pki, tmp_path, ess_alg)
    (tmp_path / "data").write_bytes(DATA)
    if query_by == "openssl":
        openssl("ts", "-query", "-data", tmp_path / "data", "-sha256", "-cert",
                "-out", tmp_path / "query")
    else:
        (tmp_path / "query").write_bytes(build_request(DATA, 4242))
    query, _ = decoder.decode((tmp_path / "query").read_bytes(),
                              asn1Spec=rfc3161.TimeStampReq())
    nonce = int(query["nonce"])
    openssl("ts", "-reply", "-config", config, "-queryfile", tmp_path / "query",
            "-out", tmp_path / "reply")
    token = parse_response((tmp_path / "reply").read_bytes())
    trust = TrustStore.from_files([pki.ca_cert])
    now = datetime.now(UTC)
    info = verify_timestamp(token, DATA, trust, now, nonce, policy=OPENSSL_POLICY)
    printed = openssl("ts", "-reply", "-in", tmp_path / "reply", "-text").stdout.decode()
    serial_line = next(line for line in printed.splitlines() if line.startswith("Serial number"))
    assert info.serial == int(serial_line.split(":")[1].strip(), 16)
    assert info.nonce == nonce and info.policy == OPENSSL_POLICY
    assert abs((info.time - now).total_seconds()) < 300
    with pytest.raises(TimestampError, match="imprint"):
        verify_timestamp(token, DATA + b"x", trust, now, nonce)
    with pytest.raises(TimestampError, match="nonce"):
        verify_timestamp(token, DATA, trust, now, nonce + 1)
    with pytest.raises(UntrustedCertificate):
        verify_timestamp(token, DATA, TrustStore.from_files([init_dev_pki(
            tmp_path / "other").ca_cert]), now, nonce)


def test_openssl_rejection_is_understood(pki: DevPki, tmp_path: Path) -> None:
    config = _openssl_tsa_config(pki, tmp_path, "sha256")
    (tmp_path / "query").write_bytes(build_request(DATA, 5, policy="1.9.9.9"))
    openssl("ts", "-reply", "-config", config, "-queryfile", tmp_path / "query",
            "-out", tmp_path / "reply")
    with pytest.raises(TimestampError, match="unacceptedPolicy"):
        parse_response((tmp_path / "reply").read_bytes())

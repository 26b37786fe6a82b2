from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from secserver.errors import ConfigError
from secserver.identifiers import ClientId, ServerId
from secserver.routing.directory import certificate_sha256, load_directory, parse_directory
from secserver.signing.pki import generate_key, issue_certificate, plain_subject


def pem(tmp_path: Path, name: str, *, ca: bool = False) -> Path:
    key = generate_key("ec-p256")
    now = datetime.now(UTC)
    cert = issue_certificate(subject=plain_subject("JP-DEV", name), public_key=key.public_key(),
                             issuer_key=key, issuer=None, profile="ca" if ca else "tls",
                             not_before=now - timedelta(days=1), not_after=now + timedelta(days=9))
    path = tmp_path / f"{name}.crt"
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return path


GOOD = """
[trust]
ca_files = ["ca.crt"]

[[members]]
id = "JP-DEV/GOV/TOYONO"
name = "Toyono"

[[members]]
id = "JP-DEV/COM/OTTA"

[[servers]]
id = "JP-DEV/GOV/TOYONO/SS1"
address = "127.0.0.1:8443"
tls_cert_file = "a.crt"

[[servers]]
id = "JP-DEV/COM/OTTA/SS1"
address = "[::1]:9443"
tls_cert_file = "b.crt"
members = ["JP-DEV/COM/OTTA", "JP-DEV/GOV/TOYONO"]
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    pem(tmp_path, "ca", ca=True)
    pem(tmp_path, "a")
    pem(tmp_path, "b")
    return tmp_path


def test_loads_members_servers_and_cas(folder: Path) -> None:
    (folder / "directory.toml").write_text(GOOD)
    directory = load_directory(folder / "directory.toml")
    toyono = ClientId.parse("JP-DEV/GOV/TOYONO")
    assert directory.member(ClientId.parse("JP-DEV/GOV/TOYONO/ELDERCARE")) is not None
    servers = directory.servers_for(ClientId.parse("JP-DEV/GOV/TOYONO/ELDERCARE"))
    assert [str(s.server_id) for s in servers] == ["JP-DEV/GOV/TOYONO/SS1", "JP-DEV/COM/OTTA/SS1"]
    otta = directory.server(ServerId.parse("JP-DEV/COM/OTTA/SS1"))
    assert otta is not None and otta.host == "::1" and otta.port == 9443
    assert otta.address == "[::1]:9443"
    assert toyono in otta.members
    assert directory.server_by_cert_sha256(otta.tls_cert_sha256.upper()) == otta
    assert certificate_sha256(otta.tls_certificate) == otta.tls_cert_sha256
    assert len(directory.ca_certificates) == 1


@pytest.mark.parametrize("change,expected", [
    (('address = "127.0.0.1:8443"', 'address = "nowhere"'), "servers[0] address"),
    (('tls_cert_file = "a.crt"', 'tls_cert_file = "missing.crt"'), "servers[0] tls_cert_file"),
    (('id = "JP-DEV/COM/OTTA"\n', 'id = "JP-DEV/COM"\n'), "members[1] id"),
    (('members = ["JP-DEV/COM/OTTA", ', 'members = ["JP-DEV/COM/NOBODY", '),
     "servers[1] members[0]"),
    (('ca_files = ["ca.crt"]', 'ca_files = []'), "[trust]"),
    (('tls_cert_file = "b.crt"', 'tls_cert_file = "a.crt"'), "share one TLS certificate"),
    (('[[members]]\nid = "JP-DEV/GOV/TOYONO"', '[[members]]\nid = "JP-DEV/GOV/TOYONO"\nx = 1\n'
      '[[members]]\nid = "JP-DEV/GOV/TOYONO"'), "listed twice"),
])
def test_problems_name_the_key(folder: Path, change: tuple[str, str], expected: str) -> None:
    assert change[0] in GOOD
    (folder / "directory.toml").write_text(GOOD.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError) as caught:
        load_directory(folder / "directory.toml")
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_directory(tmp_path / "none.toml")
    (tmp_path / "bad.toml").write_text("[[servers]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_directory(tmp_path / "bad.toml")


@pytest.mark.parametrize("raw,expected", [
    ({"members": {"id": "JP-DEV/GOV/X"}}, "members: expected [[members]] tables"),
    ({"servers": "s"}, "servers: expected [[servers]] tables"),
    ({"members": ["JP-DEV/GOV/X"]}, "members[0]: expected a table"),
    ({"servers": [1]}, "servers[0]: expected a table"),
])
def test_tables_of_the_wrong_shape(tmp_path: Path, raw: dict[str, object],
                                   expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_directory(raw, "d", tmp_path)
    assert f"d: {expected}" in caught.value.problems, caught.value.problems


def test_indexed_lookups_agree_with_a_scan_in_file_order(folder: Path) -> None:
    from cryptography import x509

    from secserver.routing.directory import Directory, ServerEntry
    certificate = x509.load_pem_x509_certificate((folder / "a.crt").read_bytes())
    members = [ClientId("JP-DEV", "COM", f"M{i}") for i in range(7)]
    servers = {}
    for i in range(40):  # some servers share a certificate, some serve several members
        server_id = ServerId(members[i % 5], f"SS{i}")
        served = (members[i % 5], members[(i * 3) % 7], members[i % 5])
        servers[server_id] = ServerEntry(server_id, "127.0.0.1", 8000 + i, certificate,
                                         f"{i % 13:064x}", served)
    directory = Directory({}, servers, ())
    for member in [*members, ClientId("JP-DEV", "COM", "NOBODY")]:
        for client in (member, ClientId(member.instance, member.member_class,
                                        member.member_code, "SUB")):
            assert directory.servers_for(client) == tuple(
                s for s in servers.values() if client.member in s.members)
    for n in range(15):
        fingerprint = f"{n:064x}"
        expected = next((s for s in servers.values() if s.tls_cert_sha256 == fingerprint),
                        None)
        assert directory.server_by_cert_sha256(fingerprint.upper()) == expected
        assert directory.server_by_cert_sha256(fingerprint) is expected

"""Body encryption: AES-256-GCM bound to its message."""

from __future__ import annotations

import base64

import pytest

from secserver.audit.body import associated_data, decrypt_body, encrypt_body, parse_body_key
from secserver.audit.errors import AuditError
from secserver.errors import ConfigError

KEY = bytes(range(32))


def test_round_trip_and_binding() -> None:
    aad = associated_data("JP-DEV/GOV/TOYONO/SS1", "m-1", "request", "consumer")
    stored = encrypt_body(KEY, b"personal data", aad)
    assert b"personal data" not in stored and stored[:1] == b"\x01"
    assert decrypt_body(KEY, stored, aad) == b"personal data"
    other = associated_data("JP-DEV/GOV/TOYONO/SS1", "m-2", "request", "consumer")
    with pytest.raises(AuditError, match="wrong key or the body was altered"):
        decrypt_body(KEY, stored, other)
    with pytest.raises(AuditError):
        decrypt_body(KEY, stored[:-1] + bytes([stored[-1] ^ 1]), aad)
    assert encrypt_body(KEY, b"x", aad) != encrypt_body(KEY, b"x", aad)  # fresh nonces


def test_key_formats() -> None:
    assert parse_body_key(KEY.hex().encode() + b"\n") == KEY
    assert parse_body_key(base64.b64encode(KEY)) == KEY
    with pytest.raises(ConfigError, match="openssl rand -hex 32"):
        parse_body_key(b"too short")

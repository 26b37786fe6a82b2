"""Message bodies in the log: AES-256-GCM encryption under ``[log] body_key_file``. Pure.

Stored form of an encrypted body: ``0x01 || nonce (12 bytes) || ciphertext || tag (16)``.
The associated data binds the ciphertext to its message, so a body cannot be moved to
another record: ``node \\n message-id \\n direction \\n side`` (UTF-8).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secserver.audit.errors import AuditError
from secserver.errors import ConfigError

VERSION = b"\x01"
KEY_SIZE = 32


def parse_body_key(raw: bytes, where: str = "[log] body_key_file") -> bytes:
    """A 256-bit key written as 64 hex digits or base64 (``openssl rand -hex 32``)."""
    text = raw.strip()
    try:
        key = bytes.fromhex(text.decode("ascii")) if len(text) == 2 * KEY_SIZE \
            else base64.b64decode(text, validate=True)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        key = b""
    if len(key) != KEY_SIZE:
        raise ConfigError([f"{where}: expected a 256-bit key as 64 hex digits or base64 "
                           "(create one with: openssl rand -hex 32)"])
    return key


def associated_data(node: str, message_id: str, direction: str, side: str) -> bytes:
    return f"{node}\n{message_id}\n{direction}\n{side}".encode()


def encrypt_body(key: bytes, body: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return VERSION + nonce + AESGCM(key).encrypt(nonce, body, aad)


def decrypt_body(key: bytes, stored: bytes, aad: bytes) -> bytes:
    if stored[:1] != VERSION or len(stored) < 1 + 12 + 16:
        raise AuditError("stored body is not in the encrypted-body format")
    try:
        return AESGCM(key).decrypt(stored[1:13], stored[13:], aad)
    except InvalidTag as exc:
        raise AuditError("stored body does not decrypt with [log] body_key_file: wrong key "
                         "or the body was altered") from exc

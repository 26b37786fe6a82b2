"""The hash chain: ``hash = SHA-256(prev_hash || canonical record bytes)``. Pure."""

from __future__ import annotations

import hashlib

GENESIS = bytes(32)
"""The ``prev_hash`` of a node's first record: 32 zero bytes."""


def chain_hash(prev_hash: bytes, content: bytes) -> bytes:
    return hashlib.sha256(prev_hash + content).digest()

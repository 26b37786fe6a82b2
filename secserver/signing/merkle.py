"""RFC 6962 (Certificate Transparency) Merkle tree hashing. Pure.

* ``leaf_hash(d)  = SHA-256(0x00 || d)``
* ``node_hash(l, r) = SHA-256(0x01 || l || r)``
* ``MTH({})`` = ``SHA-256("")`` (the empty tree), ``MTH({d0}) = leaf_hash(d0)``, and for
  ``n > 1``, with ``k`` the largest power of two smaller than ``n``:
  ``MTH(D[n]) = node_hash(MTH(D[0:k]), MTH(D[k:n]))``.

The functions take leaf *data* (for the log: record hashes; for batch signing: signed
documents) and hash them as leaves themselves. The RFC's recursive split is computed
level by level (pair neighbours; an unpaired last node moves up unchanged), which gives the
same tree and runs in O(n) hash calls without recursion.

An audit path lists sibling hashes from the leaf upwards, exactly as RFC 6962
``PATH(m, D[n])`` (and RFC 9162 section 2.1.3) define it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from secserver.signing.errors import VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


class InclusionProofError(VerificationError):
    """A Merkle audit path does not lead from the leaf to the expected root."""

    code = "InvalidInclusionProof"
    http_status = 400


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def _levels(leaf_hashes: list[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first, root level (one hash) last."""
    levels = [leaf_hashes]
    level = leaf_hashes
    sha = _sha256
    while len(level) > 1:
        size = len(level)
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, size - 1, 2)]
        if size & 1:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def _leaf_hashes(leaves: Sequence[bytes]) -> list[bytes]:
    sha = _sha256
    return [sha(b"\x00" + d).digest() for d in leaves]


def merkle_root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """The tree head when the leaf hashes are already computed."""
    if not hashes:
        return EMPTY_ROOT
    return _levels(list(hashes))[-1][0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 ``MTH`` of the leaf data; the empty tree is ``SHA-256(b"")``."""
    if not leaves:
        return EMPTY_ROOT
    return _levels(_leaf_hashes(leaves))[-1][0]


def _path_from_levels(levels: list[list[bytes]], index: int) -> list[bytes]:
    path: list[bytes] = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index >>= 1
    return path


def audit_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 6962 ``PATH(index, D[n])`` for the leaf data ``leaves``."""
    if not 0 <= index < len(leaves):
        raise ValueError(f"leaf index {index} is outside a tree of {len(leaves)} leaves")
    return _path_from_levels(_levels(_leaf_hashes(leaves)), index)


def audit_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root and the audit path of every leaf, building the tree only once."""
    if not leaves:
        return EMPTY_ROOT, []
    levels = _levels(_leaf_hashes(leaves))
    return levels[-1][0], [_path_from_levels(levels, i) for i in range(len(leaves))]


def root_from_leaf_hash(leaf_hash_value: bytes, index: int, size: int,
                        path: Sequence[bytes]) -> bytes:
    """The root an audit path leads to from a leaf *hash* (RFC 9162 section 2.1.3.2).

    Raises ``InclusionProofError`` when the path length does not fit ``index``/``size``.
    """
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn = index, size - 1
    result = leaf_hash_value
    sha = _sha256
    for sibling in path:
        if len(sibling) != HASH_SIZE:
            raise InclusionProofError(
                f"audit path entry has {len(sibling)} bytes; expected {HASH_SIZE}")
        if sn == 0:
            raise InclusionProofError(
                f"audit path is too long for leaf {index} of a tree of {size}")
        if fn & 1 or fn == sn:
            result = sha(b"\x01" + sibling + result).digest()  # node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = sha(b"\x01" + result + sibling).digest()  # node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InclusionProofError(
            f"audit path is too short for leaf {index} of a tree of {size}")
    return result


def root_from_path(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an audit path leads to from the leaf *data* ``leaf``."""
    return root_from_leaf_hash(_sha256(b"\x00" + leaf).digest(), index, size, path)


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                     root: bytes) -> None:
    """Return if ``leaf`` (data) is leaf ``index`` of the tree of ``size`` with ``root``.

    Raises ``InclusionProofError`` otherwise.
    """
    computed = root_from_path(leaf, index, size, path)
    if computed != root:
        raise InclusionProofError(
            f"audit path for leaf {index} of {size} leads to root {computed.hex()}, "
            f"not {root.hex()}")

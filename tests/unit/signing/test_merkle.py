"""RFC 6962 hashing against the Certificate Transparency reference vectors, plus properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secserver.signing.merkle import (
    EMPTY_ROOT,
    InclusionProofError,
    audit_path,
    audit_paths,
    leaf_hash,
    merkle_root,
    merkle_root_of_hashes,
    node_hash,
    root_from_leaf_hash,
    root_from_path,
    verify_inclusion,
)

# Certificate Transparency reference leaves (merkle_tree_test.cc / transparency-dev testonly).
CT_LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    (0, 8): ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
             "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
             "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"],
    (5, 8): ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
             "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
             "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"],
}


def reference_mth(leaves: list[bytes]) -> bytes:
    """The RFC 6962 definition, recursively, as the oracle."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:k]) + reference_mth(leaves[k:])).digest()


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*reference_path(m, leaves[:k]), reference_mth(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), reference_mth(leaves[:k])]


def test_reference_roots() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    for size in range(len(CT_LEAVES) + 1):
        assert merkle_root(CT_LEAVES[:size]).hex() == CT_ROOTS[size], size
        assert merkle_root_of_hashes([leaf_hash(x) for x in CT_LEAVES[:size]]).hex() \
            == CT_ROOTS[size]


def test_prefixes() -> None:
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


@pytest.mark.parametrize(("index", "size"), sorted(CT_PATHS))
def test_reference_paths(index: int, size: int) -> None:
    expected = [bytes.fromhex(h) for h in CT_PATHS[(index, size)]]
    assert audit_path(CT_LEAVES[:size], index) == expected
    root = bytes.fromhex(CT_ROOTS[size])
    verify_inclusion(CT_LEAVES[index], index, size, expected, root)


def test_every_leaf_of_every_small_tree() -> None:
    leaves = [bytes([i, i * 7 % 256]) for i in range(37)]
    for n in range(1, len(leaves) + 1):
        tree = leaves[:n]
        root, paths = audit_paths(tree)
        assert root == reference_mth(tree)
        for i in range(n):
            assert paths[i] == reference_path(i, tree) == audit_path(tree, i)
            verify_inclusion(tree[i], i, n, paths[i], root)
            assert root_from_leaf_hash(leaf_hash(tree[i]), i, n, paths[i]) == root
            # Wrong index, wrong leaf, tampered path, wrong size: all rejected.
            if n > 1:
                with pytest.raises(InclusionProofError):
                    verify_inclusion(tree[i], (i + 1) % n, n, paths[i], root)
                with pytest.raises(InclusionProofError):
                    verify_inclusion(tree[i] + b"x", i, n, paths[i], root)
                bad = list(paths[i])
                bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
                with pytest.raises(InclusionProofError):
                    verify_inclusion(tree[i], i, n, bad, root)
            # A size whose tree shape needs a path of another length is rejected (the
            # size itself is bound by whoever signs the root).
            if len(reference_path(i, [*tree, b"x"])) != len(paths[i]):
                with pytest.raises(InclusionProofError):
                    verify_inclusion(tree[i], i, n + 1, paths[i], root)


def test_path_length_errors() -> None:
    leaves = [b"a", b"b", b"c"]
    _root, paths = audit_paths(leaves)
    with pytest.raises(InclusionProofError, match="too long"):
        root_from_path(b"a", 0, 3, [*paths[0], paths[0][0]])
    with pytest.raises(InclusionProofError, match="too short"):
        root_from_path(b"a", 0, 3, paths[0][:1])
    with pytest.raises(InclusionProofError, match="outside"):
        root_from_path(b"a", 3, 3, paths[0])
    with pytest.raises(InclusionProofError, match="bytes"):
        root_from_path(b"a", 0, 3, [b"short", paths[0][1]])
    with pytest.raises(ValueError, match="outside"):
        audit_path(leaves, 5)
    assert audit_paths([]) == (EMPTY_ROOT, [])
    verify_inclusion(b"only", 0, 1, [], leaf_hash(b"only"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=12), min_size=1, max_size=70), st.data())
def test_property_against_recursive_definition(leaves: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(leaves) - 1))
    root = merkle_root(leaves)
    assert root == reference_mth(leaves)
    path = audit_path(leaves, index)
    assert path == reference_path(index, leaves)
    assert root_from_path(leaves[index], index, len(leaves), path) == root


def test_large_tree() -> None:
    leaves = [i.to_bytes(8, "big") for i in range(100_000)]
    root, paths = audit_paths(leaves)
    assert root == merkle_root(leaves)
    for i in (0, 65_535, 65_536, 99_999):
        verify_inclusion(leaves[i], i, len(leaves), paths[i], root)
        assert len(paths[i]) <= 17

"""The small DER encoder/reader, cross-checked with pyasn1."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyasn1.codec.der import decoder, encoder
from pyasn1.type import univ

from secserver.signing import der


@given(st.integers(min_value=-(2**200), max_value=2**200))
def test_integer_matches_pyasn1(value: int) -> None:
    encoded = der.integer(value)
    assert encoded == encoder.encode(univ.Integer(value))
    tag, start, end = der.read(encoded)
    assert tag == der.INTEGER and der.read_integer(encoded[start:end]) == value


@given(st.lists(st.integers(min_value=0, max_value=2**70), min_size=1, max_size=8),
       st.integers(min_value=0, max_value=2), st.integers(min_value=0, max_value=39))
def test_oid_matches_pyasn1(tail: list[int], first: int, second: int) -> None:
    dotted = ".".join(str(a) for a in [first, second, *tail])
    encoded = der.oid(dotted)
    assert encoded == encoder.encode(univ.ObjectIdentifier(dotted))
    assert der.read_oid(encoded[2:]) == dotted


@given(st.binary(max_size=70000))
def test_lengths_match_pyasn1(payload: bytes) -> None:
    encoded = der.octet_string(payload)
    assert encoded == encoder.encode(univ.OctetString(payload))
    value, rest = decoder.decode(encoded)
    assert bytes(value) == payload and rest == b""


def test_set_of_sorts() -> None:
    assert der.set_of(b"\x02\x01\x05", b"\x02\x01\x01") == b"\x31\x06\x02\x01\x01\x02\x01\x05"


def test_times() -> None:
    assert der.time(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == \
        b"\x17\x0d" + b"260102030405Z"
    assert der.time(datetime(2051, 1, 1, tzinfo=UTC))[:1] == b"\x18"
    assert der.read_time(der.UTC_TIME, b"500101000000Z").year == 1950
    assert der.read_time(der.UTC_TIME, b"491231235959Z").year == 2049
    stamp = datetime(2026, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    encoded = der.generalized_time(stamp)
    assert encoded[2:] == b"20260102030405.25Z"
    assert der.read_time(der.GENERALIZED_TIME, encoded[2:]) == stamp
    for bad in (b"20260102030405", b"20260102030405.250Z", b"2026010203Z", b"2026x102030405Z"):
        with pytest.raises(der.DerError):
            der.read_time(der.GENERALIZED_TIME, bad)


@pytest.mark.parametrize("blob", [
    b"", b"\x30", b"\x30\x80\x00\x00", b"\x30\x81\x01\x00", b"\x30\x05\x00",
    b"\x04\x82\x00\x05hello", b"\x1f\x01\x00",
])
def test_reader_rejects_non_der(blob: bytes) -> None:
    with pytest.raises(der.DerError):
        der.read(blob)


def test_reader_rejects_non_minimal_values() -> None:
    with pytest.raises(der.DerError):
        der.read_integer(b"\x00\x01")
    with pytest.raises(der.DerError):
        der.read_oid(b"\x2a\x80\x01")
    with pytest.raises(der.DerError):
        der.read_oid(b"\x2a\x86")

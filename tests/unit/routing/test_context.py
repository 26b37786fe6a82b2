"""Trace.record: the log record of one side of an exchange."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from secserver.routing.body import SpooledBody
from secserver.routing.context import Trace
from secserver.routing.errors import AccessDenied

AT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)
CONSUMER = Trace("consumer", "m1", "JP-DEV/GOV/TOYONO/X", "JP-DEV/COM/OTTA/TAGS/echo",
                 "POST", "/a?b=1", 0.0)
PROVIDER = Trace("provider", "m1", "JP-DEV/GOV/TOYONO/X", "JP-DEV/COM/OTTA/TAGS/echo",
                 "POST", "/a?b=1", 0.0, "JP-DEV/GOV/TOYONO/SS1")
BODY = SpooledBody.from_bytes(b"{}")


def test_request_record_carries_the_body_digest_and_signature_but_not_the_body() -> None:
    record = CONSUMER.record("request", at=AT, body=BODY, signed_document=b"d",
                             signature=b"s")
    assert (record.message_id, record.direction, record.side, record.at) == \
        ("m1", "request", "consumer", AT)
    assert (record.body_size, record.body_digest) == (2, BODY.digest_b64)
    assert (record.body, record.body_policy) == (None, "digest")
    assert (record.signed_document, record.signature, record.duration_ms) == (b"d", b"s", None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.status = 1  # type: ignore[misc]


@pytest.mark.parametrize("policy", ["store", "encrypt"])
def test_a_service_that_keeps_bodies_gets_the_body_in_the_record(policy: str) -> None:
    record = PROVIDER.record("response", at=AT, body=BODY, status=200, body_policy=policy)
    assert (record.body, record.body_policy, record.status) == (b"{}", policy, 200)
    assert record.peer == "JP-DEV/GOV/TOYONO/SS1"
    assert record.duration_ms is not None and record.duration_ms >= 0


def test_an_error_is_logged_with_its_side_qualified_code_and_message() -> None:
    consumer = CONSUMER.record("response", at=AT, status=403,
                               error=AccessDenied("access denied: no right"))
    provider = PROVIDER.record("response", at=AT, error=AccessDenied("no"), reason="r")
    assert consumer.error_code is not None and consumer.error_code.startswith("Server.Client")
    assert provider.error_code is not None and provider.error_code.startswith("Server.Server")
    assert consumer.reason == "access denied: no right"
    assert provider.reason == "r"  # an explicit reason wins
    assert consumer.body_size == 0 and consumer.body_digest == ""

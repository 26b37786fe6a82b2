"""Trace.record: the log record it builds, against MessageRecord's own constructor."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from secserver.audit.records import MessageRecord
from secserver.routing import context
from secserver.routing.body import SpooledBody
from secserver.routing.context import Trace
from secserver.routing.errors import AccessDenied

AT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def _cases() -> list[tuple[Trace, dict[str, Any]]]:
    consumer = Trace("consumer", "m1", "JP-DEV/GOV/TOYONO/X", "JP-DEV/COM/OTTA/TAGS/echo",
                     "POST", "/a?b=1", 0.0)
    provider = Trace("provider", "m1", "JP-DEV/GOV/TOYONO/X", "JP-DEV/COM/OTTA/TAGS/echo",
                     "POST", "/a?b=1", 0.0, "JP-DEV/GOV/TOYONO/SS1")
    body = SpooledBody.from_bytes(b"{}")
    return [
        (consumer, dict(direction="request", body=body, signed_document=b"d", signature=b"s")),
        (provider, dict(direction="request", body=body, reason="allowed by right 7",
                        signed_document=b"d", signature=b"s", body_policy="store")),
        (provider, dict(direction="response", body=body, status=200, body_policy="encrypt")),
        (consumer, dict(direction="response", status=403,
                        error=AccessDenied("access denied: no right"))),
        (provider, dict(direction="response", error=AccessDenied("no"), reason="r")),
        (consumer, dict(direction="request")),
    ]


def _comparable(record: MessageRecord) -> dict[str, Any]:
    values = dataclasses.asdict(record)
    if values["duration_ms"] is not None:  # time passes between the two calls
        values["duration_ms"] = "set"
    return values


@pytest.mark.parametrize("case", range(len(_cases())))
def test_record_equals_the_constructor_built_record(case: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert context._PLAIN_RECORD  # the fast path is the one in use
    trace, kwargs = _cases()[case]
    direction = kwargs.pop("direction")
    fast = trace.record(direction, at=AT, **kwargs)
    monkeypatch.setattr(context, "_PLAIN_RECORD", False)
    built = trace.record(direction, at=AT, **kwargs)
    assert type(fast) is MessageRecord
    assert _comparable(fast) == _comparable(built)
    assert vars(fast).keys() == vars(built).keys()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.status = 1  # type: ignore[misc]
    if fast.duration_ms is None:
        assert fast == built and hash(fast) == hash(built)

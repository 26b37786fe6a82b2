"""The demo's registry entries give exactly the decisions the scenario expects."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from secserver.acl import registry
from secserver.acl.decision import decide
from secserver.acl.snapshot import RegistrySnapshot, load_snapshot
from secserver.db.engine import make_engine, session_factory
from secserver.db.migrate import upgrade
from secserver.demo.layout import OTTA_TAGS, RESIDENT_REGISTRY, TAG_LOCATIONS, TOYONO_ELDERCARE
from secserver.demo.registration import (
    ACTOR,
    record_consent,
    register_otta,
    register_toyono,
)

KEY = b"k" * 32
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


@pytest.fixture
def session(tmp_path: object) -> Iterator[Session]:
    url = f"sqlite:///{tmp_path}/node.db"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


def snapshot(session: Session) -> RegistrySnapshot:
    return load_snapshot(session, subject_key=KEY)


def test_toyono_serves_the_registry_to_otta_only(session: Session) -> None:
    register_toyono(session, "http://127.0.0.1:9/")
    snap = snapshot(session)
    assert snap.local_subsystem(TOYONO_ELDERCARE) is not None
    assert snap.local_subsystem(OTTA_TAGS) is None
    assert decide(snap, OTTA_TAGS, RESIDENT_REGISTRY, "POST", "", None, NOW).allowed
    assert not decide(snap, TOYONO_ELDERCARE, RESIDENT_REGISTRY, "POST", "", None,
                      NOW).allowed
    events = registry.list_admin_events(session)
    assert events and all(e["actor"] == ACTOR for e in events)


def test_otta_grants_reading_with_consent_but_not_alerts(session: Session) -> None:
    register_otta(session, "http://127.0.0.1:9/")
    described = record_consent(session, KEY, "R-1001", NOW - timedelta(minutes=1))
    assert "R-1001" in described and "tag-locations" in described
    snap = snapshot(session)
    assert snap.local_subsystem(OTTA_TAGS) is not None

    def check(method: str, path: str, subject: str | None) -> tuple[bool, str]:
        decision = decide(snap, TOYONO_ELDERCARE, TAG_LOCATIONS, method, path, subject, NOW)
        return decision.allowed, decision.reason

    # Step 1: a consented resident's positions.
    assert check("GET", "/residents/R-1001/locations", "R-1001")[0]
    # Step 3: no right to raise alerts.
    allowed, reason = check("POST", "/tags/TAG-0001/alerts", "R-1001")
    assert not allowed and "no access right" in reason
    # Step 4: no consent of R-1002 yet; no data subject at all is refused too.
    allowed, reason = check("GET", "/residents/R-1002/locations", "R-1002")
    assert not allowed and "consent" in reason
    assert not check("GET", "/tags/TAG-0001/status", None)[0]
    # Step 5: after R-1002's consent.
    record_consent(session, KEY, "R-1002", NOW - timedelta(minutes=1))
    snap = snapshot(session)
    assert decide(snap, TOYONO_ELDERCARE, TAG_LOCATIONS, "GET", "/residents/R-1002/locations",
                  "R-1002", NOW).allowed
    # Path tricks do not reach the alerts endpoint.
    assert not decide(snap, TOYONO_ELDERCARE, TAG_LOCATIONS, "POST",
                      "/residents/R-1002/locations/../../tags/TAG-0001/alerts", "R-1002",
                      NOW).allowed

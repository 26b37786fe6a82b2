"""Loading snapshots from real databases, and the watcher that refreshes them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from registry_db import CONSUMER, PROVIDER, SERVICE, registry_session  # noqa: F401
from sqlalchemy.orm import Session

from secserver.acl import registry as r
from secserver.acl.decision import decide
from secserver.acl.snapshot import RegistryWatcher, load_snapshot
from secserver.db.engine import make_async_engine, make_engine, session_factory
from secserver.identifiers import ClientId, ServiceId

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def populate(s: Session) -> None:
    r.add_member(s, "t", "JP-DEV/GOV/TOYONO")
    r.add_member(s, "t", "JP-DEV/COM/OTTA")
    r.add_subsystem(s, "t", PROVIDER, local=True, auth="tls", tls_cert_sha256="ab" * 32)
    r.add_subsystem(s, "t", CONSUMER)
    r.add_service(s, "t", SERVICE, backend_url="http://127.0.0.1:9/", timeout=2.5,
                  requires_consent=True, log_body="encrypt")
    r.add_service(s, "t", f"{SERVICE}/v2", backend_url="http://127.0.0.1:9/v2")
    r.add_endpoint(s, "t", f"{SERVICE}/v2", "GET", "/people/**")


def test_load_snapshot(session: Session) -> None:
    populate(session)
    r.add_group(session, "t", "g")
    r.add_group_member(session, "t", "g", CONSUMER)
    r.grant(session, "t", "g", f"{SERVICE}/v2", method="GET", path="/people/**")
    r.record_consent(session, "t", b"key", "citizen", "JP-DEV/COM/OTTA", SERVICE, "care",
                     valid_from=NOW)
    snapshot = load_snapshot(session, subject_key=b"key")
    assert snapshot.version == r.registry_version(session)
    service = snapshot.service(ServiceId.parse(SERVICE))
    assert service is not None
    assert (service.backend_url, service.timeout, service.requires_consent, service.log_body) \
        == ("http://127.0.0.1:9/", 2.5, True, "encrypt")
    v2 = snapshot.service(ServiceId.parse(f"{SERVICE}/v2"))
    assert v2 is not None and [str(e) for e in v2.endpoints] == ["GET /people/**"]
    local = snapshot.local_subsystem(ClientId.parse(PROVIDER))
    assert local is not None and local.auth == "tls" and local.tls_cert_sha256 == "ab" * 32
    assert snapshot.local_subsystem(ClientId.parse(CONSUMER)) is None
    assert [str(s.id) for s in snapshot.subsystems()] == [CONSUMER, PROVIDER]
    consents = list(snapshot.consents_by_subject.values())
    assert len(consents) == 1 and consents[0][0].valid_from == NOW
    assert consents[0][0].client == ClientId.parse("JP-DEV/COM/OTTA")
    decision = decide(snapshot, ClientId.parse(CONSUMER), ServiceId.parse(f"{SERVICE}/v2"),
                      "GET", "/people/a/b", None, NOW)
    assert decision.allowed and "group g" in decision.reason


def test_load_empty_registry(session: Session) -> None:
    snapshot = load_snapshot(session)
    assert snapshot.version == 0 and snapshot.services() == ()


async def test_watcher_picks_up_changes(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    async_engine = make_async_engine(migrated_url)
    watcher = RegistryWatcher(async_engine, 0.05, subject_key=b"k")
    try:
        first = await watcher.start()
        assert first.version == 0 and first.subject_key == b"k"
        assert [t for t in asyncio.all_tasks() if t.get_name() == RegistryWatcher.TASK_NAME]
        with session_factory(engine)() as s:
            populate(s)
            r.grant(s, "t", CONSUMER, SERVICE)
            expected = r.registry_version(s)
        for _ in range(200):  # bounded: at most ~10 s even on a loaded machine
            if watcher.current.version == expected:
                break
            await asyncio.sleep(0.05)
        current = watcher.current
        assert current.version == expected
        assert current.service(ServiceId.parse(SERVICE)) is not None
        assert current.rights_count == 1
        assert not await watcher.refresh()  # unchanged: nothing reloaded
        assert watcher.current is current
    finally:
        await watcher.stop()
        await async_engine.dispose()
        engine.dispose()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == RegistryWatcher.TASK_NAME]


async def test_watcher_keeps_last_snapshot_when_the_database_fails(tmp_path: object) -> None:
    from secserver.db import migrate

    url = f"sqlite:///{tmp_path}/w.db"
    migrate.upgrade(url)
    async_engine = make_async_engine(url)
    watcher = RegistryWatcher(async_engine, 0.05)
    try:
        await watcher.start()
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TABLE registry_version")
        engine.dispose()
        with pytest.raises(Exception, match="registry_version"):
            await watcher.refresh()
        await asyncio.sleep(0.2)  # the polling task logs and keeps going
        assert watcher.current.version == 0
    finally:
        await watcher.stop()
        await async_engine.dispose()


async def test_watcher_requires_start_and_a_positive_interval() -> None:
    engine = make_async_engine("sqlite:///:memory:")
    with pytest.raises(RuntimeError, match="start"):
        _ = RegistryWatcher(engine, 1.0).current
    with pytest.raises(ValueError, match="interval"):
        RegistryWatcher(engine, 0)
    await engine.dispose()

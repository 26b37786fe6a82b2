"""The registry functions against real databases (SQLite and PostgreSQL, migrated)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from registry_db import CONSUMER, PROVIDER, SERVICE, registry_session  # noqa: F401
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl import registry as r
from secserver.acl.decision import decide
from secserver.acl.snapshot import load_snapshot, subject_hash
from secserver.db.base import Base
from secserver.db.engine import make_engine, session_factory
from secserver.identifiers import ClientId, ServiceId

KEY = b"test-subject-key-0123456789abcdef"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def populate(s: Session) -> None:
    r.add_member(s, "alice", "JP-DEV/GOV/TOYONO", "Toyono city")
    r.add_member(s, "alice", "JP-DEV/COM/OTTA", "Otta Inc.")
    r.add_subsystem(s, "alice", PROVIDER, local=True, auth="allowlist",
                    allowlist=["127.0.0.1", "10.0.0.0/8"])
    r.add_subsystem(s, "alice", CONSUMER)
    r.add_service(s, "alice", SERVICE, backend_url="http://127.0.0.1:9000/", timeout=5)
    r.add_endpoint(s, "alice", SERVICE, "get", "/people/*")


def events(s: Session) -> list[m.AdminEvent]:
    return list(s.execute(select(m.AdminEvent).order_by(m.AdminEvent.id)).scalars())


def test_every_change_writes_an_event_and_bumps_the_version(session: Session) -> None:
    assert r.registry_version(session) == 0
    populate(session)
    recorded = events(session)
    assert [e.action for e in recorded] == ["member.add", "member.add", "subsystem.add",
                                            "subsystem.add", "service.add", "endpoint.add"]
    assert r.registry_version(session) == 6
    assert recorded[0].actor == "alice" and recorded[0].before is None
    assert json.loads(recorded[0].after or "") == {"id": "JP-DEV/GOV/TOYONO",
                                                   "name": "Toyono city"}
    assert [e.id for e in recorded] == sorted(e.id for e in recorded)


def test_lists_and_shows(session: Session) -> None:
    populate(session)
    assert [x["id"] for x in r.list_members(session)] == ["JP-DEV/COM/OTTA", "JP-DEV/GOV/TOYONO"]
    assert [x["id"] for x in r.list_subsystems(session, local_only=True)] == [PROVIDER]
    sub = r.show_subsystem(session, PROVIDER)
    assert sub["allowlist"] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert [s["id"] for s in sub["services"]] == [SERVICE]
    svc = r.show_service(session, SERVICE)
    assert svc["timeout"] == 5.0 and svc["log_body"] == "digest"
    assert svc["endpoints"] == [{"service": SERVICE, "method": "GET", "path": "/people/*"}]
    assert r.show_member(session, "JP-DEV/GOV/TOYONO")["subsystems"][0]["id"] == PROVIDER


def test_grant_is_idempotent_and_revoke_records_before(session: Session) -> None:
    populate(session)
    right, created = r.grant(session, "bob", CONSUMER, SERVICE, now=T0)
    assert created and right["subject_kind"] == "subsystem" and right["granted_by"] == "bob"
    version = r.registry_version(session)
    again, created = r.grant(session, "bob", CONSUMER, SERVICE)
    assert not created and again["id"] == right["id"]
    assert r.registry_version(session) == version  # nothing changed, no event
    r.grant(session, "bob", CONSUMER, SERVICE, method="GET", path="/people/*")
    assert len(r.list_rights(session, subject=CONSUMER)) == 2
    before = r.revoke(session, "carol", CONSUMER, SERVICE)
    assert before["id"] == right["id"]
    last = events(session)[-1]
    assert last.action == "right.revoke" and last.actor == "carol" and last.after is None
    assert json.loads(last.before or "")["service"] == SERVICE
    with pytest.raises(r.RegistryError, match="holds no right on the whole service") as info:
        r.revoke(session, "carol", CONSUMER, SERVICE)
    assert "GET /people/*" in info.value.message  # says what the subject does hold


def test_unknown_objects_name_what_exists(session: Session) -> None:
    populate(session)
    with pytest.raises(r.RegistryError) as info:
        r.grant(session, "bob", CONSUMER, f"{PROVIDER}/nosuch")
    assert info.value.code == "UnknownObject"
    assert "nosuch" in info.value.message and SERVICE in info.value.message
    with pytest.raises(r.RegistryError, match="registered members: JP-DEV/COM/OTTA"):
        r.add_subsystem(session, "bob", "JP-DEV/GOV/NOWHERE/X")
    with pytest.raises(r.RegistryError, match=r"endpoints of this service: GET /people/\*"):
        r.grant(session, "bob", CONSUMER, SERVICE, method="POST", path="/people/*")
    with pytest.raises(r.RegistryError, match="no groups are registered"):
        r.grant(session, "bob", "friends", SERVICE)
    with pytest.raises(r.RegistryError, match="already registered"):
        r.add_member(session, "bob", "JP-DEV/GOV/TOYONO")


def test_choices_list_ids_in_numeric_order() -> None:
    from secserver.acl.registry.changes import choices

    assert choices([2, 10, 1], "right ids") == "registered right ids: 1, 2, 10"
    assert choices(["b", "a"], "groups", limit=1) == "registered groups: a and 1 more"
    assert choices([], "groups") == "no groups are registered"


def test_invalid_values_are_refused(session: Session) -> None:
    populate(session)
    with pytest.raises(r.RegistryError, match="auth 'tls' needs tls_cert_sha256"):
        r.add_subsystem(session, "a", "JP-DEV/GOV/TOYONO/X", local=True, auth="tls")
    with pytest.raises(r.RegistryError, match="not an IP address"):
        r.add_subsystem(session, "a", "JP-DEV/GOV/TOYONO/X", local=True, auth="allowlist",
                        allowlist=["example.org"])
    with pytest.raises(r.RegistryError, match="only to local subsystems"):
        r.add_subsystem(session, "a", "JP-DEV/GOV/TOYONO/X", auth="allowlist",
                        allowlist=["127.0.0.1"])
    with pytest.raises(r.RegistryError, match="not an http"):
        r.add_service(session, "a", f"{PROVIDER}/x", backend_url="ftp://x")
    with pytest.raises(r.RegistryError, match="log_body"):
        r.add_service(session, "a", f"{PROVIDER}/x", backend_url="http://x", log_body="all")
    with pytest.raises(r.RegistryError, match="dot segment"):
        r.add_endpoint(session, "a", SERVICE, "GET", "/people/../admin")
    with pytest.raises(r.RegistryError, match="whole segment"):
        r.add_endpoint(session, "a", SERVICE, "GET", "/people/x**")
    assert r.registry_version(session) == 6  # nothing of the above was recorded


def test_tls_subsystem_fingerprint_is_normalised(session: Session) -> None:
    populate(session)
    fingerprint = ":".join(["AB"] * 32)
    made = r.add_subsystem(session, "a", "JP-DEV/GOV/TOYONO/TLS", local=True, auth="tls",
                           tls_cert_sha256=fingerprint)
    assert made["tls_cert_sha256"] == "ab" * 32
    changed = r.update_subsystem(session, "a", "JP-DEV/GOV/TOYONO/TLS", auth="allowlist",
                                 allowlist=["::1"])
    assert changed["auth"] == "allowlist" and changed["allowlist"] == ["::1/128"]
    assert events(session)[-1].action == "subsystem.update"


def test_removal_refuses_while_in_use(session: Session) -> None:
    populate(session)
    r.grant(session, "a", CONSUMER, SERVICE, method="GET", path="/people/*")
    with pytest.raises(r.RegistryError, match="still has 1 right") as info:
        r.remove_endpoint(session, "a", SERVICE, "GET", "/people/*")
    assert info.value.code == "InUse"
    with pytest.raises(r.RegistryError, match="still has 1 service"):
        r.remove_subsystem(session, "a", PROVIDER)
    with pytest.raises(r.RegistryError, match="still has subsystems"):
        r.remove_member(session, "a", "JP-DEV/COM/OTTA")
    r.revoke(session, "a", CONSUMER, SERVICE, method="GET", path="/people/*")
    removed = r.remove_service(session, "a", SERVICE)
    assert removed["endpoints"] == [{"service": SERVICE, "method": "GET", "path": "/people/*"}]
    r.remove_subsystem(session, "a", CONSUMER)
    r.remove_member(session, "a", "JP-DEV/COM/OTTA")
    assert [x["id"] for x in r.list_members(session)] == ["JP-DEV/GOV/TOYONO"]


def test_groups_and_member_rights(session: Session) -> None:
    populate(session)
    r.add_group(session, "a", "partners", "trusted partners")
    r.add_group_member(session, "a", "partners", CONSUMER)
    r.add_group_member(session, "a", "partners", CONSUMER)  # idempotent
    assert r.show_group(session, "partners")["members"] == [CONSUMER]
    r.grant(session, "a", "partners", SERVICE)
    r.grant(session, "a", "JP-DEV/COM/OTTA", SERVICE, method="GET", path="/people/*")
    kinds = sorted(x["subject_kind"] for x in r.list_rights(session, service=SERVICE))
    assert kinds == ["group", "member"]
    with pytest.raises(r.RegistryError, match="still holds 1 right"):
        r.remove_group(session, "a", "partners")
    snapshot = load_snapshot(session, subject_key=KEY)
    allowed = decide(snapshot, ClientId.parse(CONSUMER), ServiceId.parse(SERVICE), "POST",
                     "/anything", None, T0)
    assert allowed.allowed and "group partners" in (allowed.matched_rule or "")
    r.revoke(session, "a", "partners", SERVICE)
    r.remove_group_member(session, "a", "partners", CONSUMER)
    r.remove_group(session, "a", "partners")
    snapshot = load_snapshot(session, subject_key=KEY)
    denied = decide(snapshot, ClientId.parse(CONSUMER), ServiceId.parse(SERVICE), "POST",
                    "/anything", None, T0)
    assert not denied.allowed
    allowed = decide(snapshot, ClientId.parse(CONSUMER), ServiceId.parse(SERVICE), "GET",
                     "/people/42", None, T0)
    assert allowed.allowed and "member JP-DEV/COM/OTTA" in (allowed.matched_rule or "")


def test_consents_store_only_the_keyed_hash(session: Session) -> None:
    populate(session)
    r.update_service(session, "a", SERVICE, requires_consent=True)
    r.grant(session, "a", CONSUMER, SERVICE)
    citizen = "JP-CITIZEN-0042"
    made = r.record_consent(session, "a", KEY, citizen, CONSUMER, SERVICE, "care planning",
                            valid_from=T0, valid_until=T0 + timedelta(days=30), now=T0)
    assert made["subject_hash"] == subject_hash(KEY, citizen)
    stored = json.dumps(r.export_registry(session)) + "".join(
        (e.before or "") + (e.after or "") for e in events(session))
    assert citizen not in stored
    assert len(r.list_consents(session, subject_key=KEY, data_subject=citizen)) == 1
    assert r.list_consents(session, subject_key=KEY, data_subject="someone else") == []
    assert len(r.list_consents(session, active_at=T0 + timedelta(days=1))) == 1
    assert r.list_consents(session, active_at=T0 + timedelta(days=31)) == []

    snapshot = load_snapshot(session, subject_key=KEY)
    client, service = ClientId.parse(CONSUMER), ServiceId.parse(SERVICE)
    assert decide(snapshot, client, service, "GET", "/", citizen, T0 + timedelta(days=1)).allowed
    r.revoke_consent(session, "a", made["id"], now=T0 + timedelta(days=2))
    snapshot = load_snapshot(session, subject_key=KEY)
    late = decide(snapshot, client, service, "GET", "/", citizen, T0 + timedelta(days=3))
    assert not late.allowed and "revoked" in late.reason
    with pytest.raises(r.RegistryError, match="already revoked"):
        r.revoke_consent(session, "a", made["id"])
    with pytest.raises(r.RegistryError, match="not after valid_from"):
        r.record_consent(session, "a", KEY, citizen, CONSUMER, SERVICE, "x", valid_from=T0,
                         valid_until=T0)


def test_consents_on_record_keep_their_client_and_service(session: Session) -> None:
    populate(session)
    r.add_member(session, "a", "JP-DEV/COM/SOLO")  # a member without subsystems
    for client in (CONSUMER, "JP-DEV/COM/SOLO"):
        made = r.record_consent(session, "a", KEY, "citizen", client, SERVICE, "care", now=T0)
        r.revoke_consent(session, "a", made["id"], now=T0 + timedelta(days=1))
    version = r.registry_version(session)
    for remove, what, count in [(r.remove_service, SERVICE, 2),
                                (r.remove_subsystem, CONSUMER, 1),
                                (r.remove_member, "JP-DEV/COM/SOLO", 1)]:
        with pytest.raises(r.RegistryError, match=rf"has {count} consent\(s\) \(0 unrevoked\), "
                                                  "and consents stay on record") as info:
            remove(session, "a", what)
        assert info.value.code == "InUse"
    assert r.registry_version(session) == version
    assert len(r.list_consents(session)) == 2


def test_revoke_consents_of_a_subject(session: Session) -> None:
    populate(session)
    r.add_member(session, "a", "JP-DEV/COM/OTTA2")
    for purpose in ("one", "two"):
        r.record_consent(session, "a", KEY, "citizen", CONSUMER, SERVICE, purpose)
    r.record_consent(session, "a", KEY, "citizen", "JP-DEV/COM/OTTA", SERVICE, "member-wide")
    revoked = r.revoke_consents(session, "a", KEY, "citizen", client=CONSUMER)
    assert sorted(c["purpose"] for c in revoked) == ["one", "two"]
    assert len(r.list_consents(session, subject_key=KEY, data_subject="citizen",
                               active_at=datetime.now(UTC))) == 1


def test_export_import_round_trip(session: Session, migrated_url: str, tmp_path: object) -> None:
    populate(session)
    r.add_group(session, "a", "partners")
    r.add_group_member(session, "a", "partners", CONSUMER)
    r.grant(session, "a", "partners", SERVICE, method="GET", path="/people/*")
    r.grant(session, "a", "JP-DEV/COM/OTTA", SERVICE)
    r.record_consent(session, "a", KEY, "citizen", CONSUMER, SERVICE, "care", valid_from=T0)
    document = r.export_registry(session)
    assert document["format"] == r.DOCUMENT_FORMAT

    # Importing into the same registry changes nothing.
    version = r.registry_version(session)
    summary = r.import_registry(session, "importer", document)
    assert summary["added"] == 0 and summary["unchanged"] > 0
    assert r.registry_version(session) == version

    # Into an empty registry: everything comes back and decides the same way.
    other_url = f"sqlite:///{tmp_path}/other.db"
    from secserver.db import migrate

    migrate.upgrade(other_url)
    engine = make_engine(other_url)
    with session_factory(engine)() as other:
        summary = r.import_registry(other, "importer", json.loads(json.dumps(document)))
        assert summary["unchanged"] == 0
        exported = r.export_registry(other)
        assert exported == document
        assert {e.actor for e in events(other)} == {"importer"}  # granted_by kept, actor is new
    engine.dispose()


def test_import_is_atomic_and_names_the_bad_item(session: Session) -> None:
    populate(session)
    document = r.export_registry(session)
    document["members"].append({"id": "JP-DEV/GOV/NEW", "name": ""})
    document["rights"] = [{"subject": CONSUMER, "service": f"{PROVIDER}/missing"}]
    version = r.registry_version(session)
    with pytest.raises(r.RegistryError, match=r"rights\[0\]: service .*missing is not registered"):
        r.import_registry(session, "importer", document)
    assert r.registry_version(session) == version
    assert "JP-DEV/GOV/NEW" not in [x["id"] for x in r.list_members(session)]
    conflicting = r.export_registry(session)
    conflicting["services"][0]["timeout"] = 99.0
    with pytest.raises(r.RegistryError, match=r"services\[0\]: already registered with "
                                              r"different settings \(timeout=5.0\)"):
        r.import_registry(session, "importer", conflicting)
    with pytest.raises(r.RegistryError, match="document format"):
        r.import_registry(session, "importer", {"format": "other"})


def test_the_database_holds_one_row_per_right(session: Session) -> None:
    populate(session)
    right, _ = r.grant(session, "a", CONSUMER, SERVICE, now=T0)
    original = session.get(m.Right, right["id"])
    assert original is not None and original.identity_key == \
        f"subsystem:{original.subject_subsystem_id}>{original.service_id}:*"
    # What two racing grants used to leave behind: the unique identity key refuses it,
    # although endpoint_id (and two of the subject columns) are NULL.
    session.add(m.Right(subject_kind="subsystem",
                        subject_subsystem_id=original.subject_subsystem_id,
                        service_id=original.service_id, granted_at=T0, granted_by="racer"))
    with pytest.raises(IntegrityError, match="identity_key"):
        session.commit()
    session.rollback()
    # A key that does not spell the row's subject and object is refused too.
    session.add(m.Right(subject_kind="subsystem",
                        subject_subsystem_id=original.subject_subsystem_id,
                        service_id=original.service_id, granted_at=T0, granted_by="forger",
                        identity_key="subsystem:0>0:*"))
    with pytest.raises(IntegrityError, match="identity_key"):
        session.commit()
    session.rollback()
    assert len(r.list_rights(session, subject=CONSUMER)) == 1


def before_inserting(session: Session, model: type[Base], url: str,
                     change: Callable[[Session], object]) -> None:
    """When ``session`` is about to insert a ``model`` row, first make ``change`` on another
    connection and commit it (once): the race between a change's check ("does it exist?")
    and its insert, made deterministic."""
    fired: list[bool] = []

    def other_change(flushing: Session, _context: object, _instances: object) -> None:
        if fired or not any(isinstance(o, model) for o in flushing.new):
            return
        fired.append(True)
        engine = make_engine(url)
        with session_factory(engine)() as other:
            change(other)
        engine.dispose()

    event.listen(session, "before_flush", other_change)


def test_concurrent_grants_leave_one_right(session: Session, migrated_url: str) -> None:
    populate(session)
    version = r.registry_version(session)
    before_inserting(session, m.Right, migrated_url, lambda other: r.grant(
        other, "racer", CONSUMER, SERVICE, method="GET", path="/people/*", now=T0))
    right, created = r.grant(session, "a", CONSUMER, SERVICE, method="GET", path="/people/*")
    assert not created and right["granted_by"] == "racer"  # the winner's right, reported
    assert [x["id"] for x in r.list_rights(session, subject=CONSUMER)] == [right["id"]]
    assert [e.action for e in events(session)].count("right.grant") == 1
    assert r.registry_version(session) == version + 1  # only the winner changed anything


def test_concurrent_group_member_adds_leave_one_membership(session: Session,
                                                          migrated_url: str) -> None:
    populate(session)
    r.add_group(session, "a", "partners")
    before_inserting(session, m.GroupMember, migrated_url,
                     lambda other: r.add_group_member(other, "racer", "partners", CONSUMER))
    assert r.add_group_member(session, "a", "partners", CONSUMER)["members"] == [CONSUMER]
    added = [e for e in events(session) if e.action == "group.member.add"]
    assert [e.actor for e in added] == ["racer"]


def test_a_service_added_twice_at_once_is_registered_once(session: Session,
                                                          migrated_url: str) -> None:
    populate(session)
    extra = f"{PROVIDER}/extra"  # unversioned: version is NULL, version_key ''
    before_inserting(session, m.Service, migrated_url, lambda other: r.add_service(
        other, "racer", extra, backend_url="http://127.0.0.1:1/"))
    with pytest.raises(r.RegistryError, match=f"service {extra} was registered by a "
                                              "concurrent change") as info:
        r.add_service(session, "a", extra, backend_url="http://127.0.0.1:2/")
    assert info.value.code == "AlreadyExists"
    assert [x["backend_url"] for x in r.list_services(session) if x["id"] == extra] == \
        ["http://127.0.0.1:1/"]
    with pytest.raises(r.RegistryError, match="already registered"):  # run it again
        r.add_service(session, "a", extra, backend_url="http://127.0.0.1:2/")
    r.add_service(session, "a", f"{extra}/v2", backend_url="http://127.0.0.1:2/")


def test_a_lost_grant_race_rolls_an_import_back(session: Session, migrated_url: str) -> None:
    populate(session)
    document = r.export_registry(session)
    document["rights"] = [{"subject": CONSUMER, "service": SERVICE}]
    # A consent after the right: never recorded, the import stops at the lost race. (On
    # SQLite the right must be the import's first write: from then on the import holds the
    # database's write lock, and no other change can race it.)
    document["consents"] = [{"subject_hash": "ab" * 32, "client": CONSUMER,
                             "service": SERVICE, "purpose": "care"}]
    version = r.registry_version(session)
    before_inserting(session, m.Right, migrated_url,
                     lambda other: r.grant(other, "racer", CONSUMER, SERVICE, now=T0))
    with pytest.raises(r.RegistryError, match=r"rights\[0\]: .*granted by a concurrent change"):
        r.import_registry(session, "importer", document)
    assert r.registry_version(session) == version + 1  # the racer's grant, nothing else
    assert [x["granted_by"] for x in r.list_rights(session)] == ["racer"]
    assert r.list_consents(session) == []
    again = r.import_registry(session, "importer", document)  # run it again
    assert again["added"] == 1 and [c.split()[0] for c in again["changes"]] == ["consent.record"]


def test_events_and_versions_move_together(session: Session) -> None:
    populate(session)
    r.grant(session, "a", CONSUMER, SERVICE)
    r.revoke(session, "a", CONSUMER, SERVICE)
    recorded = events(session)
    assert r.registry_version(session) == len(recorded) == 8
    listed = r.list_admin_events(session, after_id=recorded[5].id)
    assert [e["action"] for e in listed] == ["right.grant", "right.revoke"]
    assert listed[1]["before"]["subject"] == CONSUMER and listed[1]["after"] is None


def test_import_replace_makes_the_registry_equal_to_the_document(session: Session) -> None:
    populate(session)
    r.add_group(session, "a", "partners")
    r.add_group_member(session, "a", "partners", CONSUMER)
    r.grant(session, "a", "partners", SERVICE)
    wanted = r.export_registry(session)
    # Drift: an extra member, subsystem, service, endpoint and right; a changed setting;
    # a removed group membership.
    r.add_member(session, "a", "JP-DEV/COM/EXTRA", "extra")
    r.add_subsystem(session, "a", "JP-DEV/COM/EXTRA/APP")
    r.add_service(session, "a", f"{PROVIDER}/extra", backend_url="http://127.0.0.1:1/")
    r.add_endpoint(session, "a", SERVICE, "DELETE", "/people/**")
    r.grant(session, "a", "JP-DEV/COM/EXTRA/APP", SERVICE, method="DELETE", path="/people/**")
    r.update_service(session, "a", SERVICE, timeout=99)
    r.remove_group_member(session, "a", "partners", CONSUMER)

    with pytest.raises(r.RegistryError, match="import with replace"):
        r.import_registry(session, "importer", wanted)

    version = r.registry_version(session)
    preview = r.import_registry(session, "importer", wanted, replace=True, dry_run=True)
    assert preview["dry_run"] and preview["removed"] == 5 and preview["updated"] == 1
    assert f"service.remove {PROVIDER}/extra" in preview["changes"]
    assert r.registry_version(session) == version  # rolled back
    assert len(r.list_members(session)) == 3

    done = r.import_registry(session, "importer", wanted, replace=True)
    assert done["changes"] == preview["changes"]
    assert r.export_registry(session) == wanted
    assert r.registry_version(session) == version + len(done["changes"])
    again = r.import_registry(session, "importer", wanted, replace=True)
    assert again["changes"] == [] and again["added"] == again["removed"] == 0


def test_import_replace_never_removes_consents(session: Session) -> None:
    populate(session)
    wanted = r.export_registry(session)
    r.record_consent(session, "a", KEY, "citizen", CONSUMER, SERVICE, "care")
    with pytest.raises(r.RegistryError, match=r"removing service .*consent\(s\)"):
        r.import_registry(session, "importer", {**wanted, "services": [], "endpoints": []},
                          replace=True)
    assert len(r.list_consents(session)) == 1

"""The pure decision engine on hand-built snapshots."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secserver.acl.decision import Decision, decide
from secserver.acl.snapshot import (
    ConsentEntry,
    EndpointEntry,
    RegistrySnapshot,
    RightEntry,
    ServiceEntry,
    SubsystemEntry,
    subject_hash,
)
from secserver.identifiers import ClientId, ServiceId

KEY = b"node-secret"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PROVIDER = ClientId.parse("JP-DEV/GOV/TOYONO/RESIDENTS")
PEOPLE = ServiceId(PROVIDER, "people")
RECORDS = ServiceId(PROVIDER, "records")  # requires consent
OTHER = ServiceId(PROVIDER, "other")
ALICE = ClientId.parse("JP-DEV/COM/OTTA/TAGS")
ALICE_TWIN = ClientId.parse("JP-DEV/COM/OTTA/BILLING")  # same member as ALICE
BOB = ClientId.parse("JP-DEV/COM/BOB/APP")
CAROL = ClientId.parse("JP-DEV/GOV/CAROL/APP")
MALLORY = ClientId.parse("JP-DEV/COM/MALLORY/APP")

EP_GET_PERSON = EndpointEntry.create(1, PEOPLE, "GET", "/people/*")
EP_ANY_FILES = EndpointEntry.create(2, PEOPLE, "*", "/files/**")
EP_POST_PEOPLE = EndpointEntry.create(3, PEOPLE, "POST", "/people")
EP_ADMIN = EndpointEntry.create(4, PEOPLE, "*", "/admin/**")


def right(id: int, kind: str, subject: str, service: ServiceId,
          endpoint: EndpointEntry | None = None) -> RightEntry:
    return RightEntry(id, kind, subject, service, endpoint, NOW, "admin")


def consent(id: int, subject: str, client: ClientId, *, days: int = 30,
            revoked: datetime | None = None, start: datetime | None = None) -> ConsentEntry:
    begin = start or NOW - timedelta(days=1)
    return ConsentEntry(id, subject_hash(KEY, subject), client, RECORDS, "care planning",
                        begin, begin + timedelta(days=days), revoked)


def snapshot(*, key: bytes | None = KEY) -> RegistrySnapshot:
    return RegistrySnapshot.build(
        services=[
            ServiceEntry(PEOPLE, "http://127.0.0.1:9000", 5.0, False, "digest",
                         (EP_GET_PERSON, EP_ANY_FILES, EP_POST_PEOPLE, EP_ADMIN)),
            ServiceEntry(RECORDS, "http://127.0.0.1:9001", 5.0, True, "store"),
            ServiceEntry(OTHER, "http://127.0.0.1:9002", 5.0, False, "digest"),
        ],
        subsystems=[SubsystemEntry(PROVIDER, True, "none", None, ()),
                    SubsystemEntry(ALICE, False, "none", None, ())],
        groups={"partners": [CAROL]},
        rights=[
            right(10, "subsystem", str(ALICE), PEOPLE, EP_GET_PERSON),
            right(11, "subsystem", str(ALICE), PEOPLE, EP_ANY_FILES),
            right(12, "member", "JP-DEV/COM/BOB", PEOPLE),
            right(13, "group", "partners", PEOPLE, EP_POST_PEOPLE),
            right(14, "subsystem", str(ALICE), RECORDS),
            right(15, "member", "JP-DEV/COM/BOB", RECORDS),
        ],
        consents=[
            consent(20, "citizen-1", ALICE),
            consent(21, "citizen-2", ALICE, revoked=NOW - timedelta(hours=1)),
            consent(22, "citizen-3", ALICE, days=1, start=NOW - timedelta(days=3)),
            consent(23, "citizen-4", ALICE, start=NOW + timedelta(days=1)),
            consent(24, "citizen-5", ClientId.parse("JP-DEV/COM/BOB")),  # member-wide
            consent(25, "citizen-6", ALICE_TWIN),
        ],
        version=7, subject_key=key)


SNAP = snapshot()


def check(client: ClientId, service: ServiceId, method: str, path: str,
          subject: str | None = None, now: datetime = NOW) -> Decision:
    return decide(SNAP, client, service, method, path, subject, now)


@pytest.mark.parametrize(("client", "method", "path", "allowed", "rule"), [
    (ALICE, "GET", "/people/42", True, "right 10"),
    (ALICE, "get", "/people/42", True, "right 10"),
    (ALICE, "POST", "/people/42", False, None),
    (ALICE, "GET", "/people", False, None),
    (ALICE, "GET", "/people/", False, None),
    (ALICE, "GET", "/people/42/secrets", False, None),
    (ALICE, "DELETE", "/files/a/b/c.txt", True, "right 11"),
    (ALICE, "GET", "/files", True, "right 11"),
    (ALICE, "GET", "/admin/users", False, None),
    (ALICE, "GET", "/", False, None),
    (ALICE_TWIN, "GET", "/people/42", False, None),  # a subsystem right is not member-wide
    (BOB, "DELETE", "/admin/everything", True, "right 12"),  # member-wide, whole service
    (ClientId.parse("JP-DEV/COM/BOB/OTHERAPP"), "GET", "/x", True, "right 12"),
    (ClientId.parse("JP-DEV/COM/BOB"), "GET", "/x", True, "right 12"),
    (CAROL, "POST", "/people", True, "right 13"),
    (CAROL, "POST", "/people/1", False, None),
    (CAROL, "GET", "/people", False, None),
    (MALLORY, "GET", "/people/42", False, None),
])
def test_rights(client: ClientId, method: str, path: str, allowed: bool,
                rule: str | None) -> None:
    decision = check(client, PEOPLE, method, path)
    assert decision.allowed is allowed, decision.reason
    if rule is None:
        assert decision.matched_rule is None
        assert "has no access right" in decision.reason
    else:
        assert decision.matched_rule is not None and decision.matched_rule.startswith(rule)


@pytest.mark.parametrize("path", [
    "/people/42/../../admin/users",
    "/people/%2e%2e/admin/users",
    "/people/%2E%2E/admin",
    "/people/..;/admin/users",
    "/people/42%2F..%2F..%2Fadmin",
    "/people/42%5C..%5Cadmin",
    "/people/42\\..\\admin",
    "/files/../admin/x",
    "/files/%2e%2e/admin/x",
    "//admin/users",
    "/files//../admin",
    "/people/42%00",
    "/people/42\x00",
    "/people/%c0%ae%c0%ae/admin",
    "/people/42%",
    "/people/42?x=/admin",
])
def test_path_tricks_never_reach_an_ungranted_endpoint(path: str) -> None:
    decision = check(ALICE, PEOPLE, "GET", path)
    assert not decision.allowed
    assert decision.reason.startswith("request refused: ")


def test_encoded_but_harmless_paths_match_their_decoded_form() -> None:
    assert check(ALICE, PEOPLE, "GET", "/%70eople/42").allowed  # %70 = 'p'
    assert not check(ALICE, PEOPLE, "GET", "/people/4%2F2").allowed


def test_bad_method_is_refused() -> None:
    decision = check(ALICE, PEOPLE, "GET /x", "/people/1")
    assert not decision.allowed and "HTTP method" in decision.reason


def test_unknown_service_and_no_rights_on_service() -> None:
    missing = check(ALICE, ServiceId(PROVIDER, "nope"), "GET", "/")
    assert not missing.allowed and "not registered" in missing.reason
    versioned = check(BOB, ServiceId(PROVIDER, "people", "v2"), "GET", "/")
    assert not versioned.allowed and "not registered" in versioned.reason
    nobody = check(BOB, OTHER, "GET", "/")
    assert not nobody.allowed and "has no access right to GET / of service" in nobody.reason


def test_service_rights_are_preferred_over_endpoint_rights() -> None:
    snap = RegistrySnapshot.build(
        services=[ServiceEntry(PEOPLE, "http://x", 1.0, False, "digest", (EP_GET_PERSON,))],
        rights=[right(2, "subsystem", str(ALICE), PEOPLE, EP_GET_PERSON),
                right(3, "group", "g", PEOPLE), right(1, "member", "JP-DEV/COM/OTTA", PEOPLE)],
        groups={"g": [ALICE]})
    decision = decide(snap, ALICE, PEOPLE, "GET", "/people/1", None, NOW)
    assert decision.allowed and (decision.matched_rule or "").startswith("right 1:")


@pytest.mark.parametrize(("client", "subject", "allowed", "reason"), [
    (ALICE, "citizen-1", True, "consent 20"),
    (ALICE, "citizen-2", False, "consent 21 revoked"),
    (ALICE, "citizen-3", False, "consent 22 expired"),
    (ALICE, "citizen-4", False, "consent 23 not yet valid"),
    (ALICE, "citizen-5", False, "consent missing"),  # consent is for BOB's member
    (ALICE, "citizen-6", False, "consent missing"),  # consent is for ALICE's twin subsystem
    (ALICE, "nobody", False, "consent missing"),
    (ClientId.parse("JP-DEV/COM/BOB/APP"), "citizen-5", True, "consent 24"),
    (ClientId.parse("JP-DEV/COM/BOB/OTHER"), "citizen-5", True, "consent 24"),
    (ClientId.parse("JP-DEV/COM/BOB/APP"), "citizen-1", False, "consent missing"),
    (MALLORY, "citizen-1", False, "has no access right"),
])
def test_consent(client: ClientId, subject: str, allowed: bool, reason: str) -> None:
    decision = check(client, RECORDS, "GET", "/records/1", subject)
    assert decision.allowed is allowed
    text = (decision.matched_rule or "") if allowed else decision.reason
    assert reason in text, decision.reason


def test_consent_boundaries_are_half_open() -> None:
    entry = consent(20, "citizen-1", ALICE)
    assert entry.state_at(entry.valid_from) == "active"
    assert entry.valid_until is not None
    assert entry.state_at(entry.valid_until) == "expired"
    assert entry.state_at(entry.valid_until - timedelta(microseconds=1)) == "active"
    revoked = consent(21, "x", ALICE, revoked=NOW)
    assert revoked.state_at(NOW) == "revoked"
    assert revoked.state_at(NOW - timedelta(seconds=1)) == "active"


def test_consent_service_without_subject_or_key() -> None:
    missing = check(ALICE, RECORDS, "GET", "/", None)
    assert not missing.allowed and "names no data subject" in missing.reason
    empty = check(ALICE, RECORDS, "GET", "/", "")
    assert not empty.allowed and "names no data subject" in empty.reason
    keyless = decide(snapshot(key=None), ALICE, RECORDS, "GET", "/", "citizen-1", NOW)
    assert not keyless.allowed and "subject_key_file" in keyless.reason


def test_subject_hash_is_keyed_and_normalised() -> None:
    assert subject_hash(b"k1", "x") != subject_hash(b"k2", "x")
    assert subject_hash(b"k", "e\u0301") == subject_hash(b"k", "\u00e9")
    assert len(subject_hash(b"k", "x")) == 64
    with pytest.raises(ValueError):
        subject_hash(b"", "x")


def test_decision_is_frozen() -> None:
    decision = check(ALICE, PEOPLE, "GET", "/people/1")
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]


def test_snapshot_lookups() -> None:
    assert SNAP.version == 7 and SNAP.rights_count == 6
    service = SNAP.service(RECORDS)
    assert service is not None and service.requires_consent and service.log_body == "store"
    assert SNAP.local_subsystem(PROVIDER) is not None
    assert SNAP.local_subsystem(ALICE) is None  # known, but not this node's
    assert SNAP.subsystem(ALICE) is not None
    assert [str(s.id) for s in SNAP.services()] == sorted(str(s) for s in (PEOPLE, RECORDS,
                                                                            OTHER))
    assert SNAP.groups_of(CAROL) == ("partners",)
    assert "node-secret" not in repr(SNAP)


def _lenient_backend_view(raw: str) -> str:
    """How a careless backend might read a path: decode twice, backslash as '/', NFKC,
    drop ';' parameters, trim white space, drop empty segments, resolve dot segments."""
    from urllib.parse import unquote

    text = unquote(unquote(raw.split("?")[0].split("#")[0], errors="replace"),
                   errors="replace").replace("\\", "/")
    text = unicodedata.normalize("NFKC", text)
    segments: list[str] = []
    for segment in text.split("/"):
        segment = segment.split(";")[0].strip()
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    return "/" + "/".join(segments)


_TRICKY = st.sampled_from([
    "public", "private", "a", "..", ".", "%2e", "%2E%2e", "%2f", "%2F", "%5c", "\\", "/",
    "//", ";", "..;", "%00", "%25", "%252e", "%252f", "%3b", "%u002e", "?", "#", " ",
    "%c0%ae", "%e2%80%a8", "%c2%a0", "%20", "%ef%bc%8e", "%e2%80%a4", "*", "~", "%7e",
])


_SEGMENT = st.lists(_TRICKY, min_size=1, max_size=3).map("".join)
_TRICK_PATHS = st.tuples(st.sampled_from(["/public/", "/"]),
                         st.lists(_SEGMENT, min_size=1, max_size=5).map("/".join)
                         ).map("".join)


@settings(max_examples=3000, deadline=None)
@given(_TRICK_PATHS)
def test_no_path_trick_reaches_an_ungranted_endpoint(raw: str) -> None:
    """Granted only GET /public/**: whatever is allowed stays under /public even when
    read by a lenient backend."""
    service = ServiceId(PROVIDER, "files")
    public = EndpointEntry.create(1, service, "GET", "/public/**")
    private = EndpointEntry.create(2, service, "GET", "/private/**")
    snap = RegistrySnapshot.build(
        services=[ServiceEntry(service, "http://x", 1.0, False, "digest", (public, private))],
        rights=[right(1, "subsystem", str(ALICE), service, public)])
    decision = decide(snap, ALICE, service, "GET", raw, None, NOW)
    if decision.allowed:
        seen = _lenient_backend_view(raw)
        assert seen == "/public" or seen.startswith("/public/"), (raw, seen)

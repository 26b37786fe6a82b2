"""The in-memory registry snapshot the server decides on, and the watcher that refreshes it.

A :class:`RegistrySnapshot` is immutable and indexed for the decision engine: rights by
service and then by subject, consents by (subject hash, service). ``load_snapshot`` builds
one from the database (synchronous: the server calls it through
``AsyncConnection.run_sync``); ``RegistrySnapshot.build`` builds one from plain entries
(tests, benchmarks). :class:`RegistryWatcher` polls ``registry_version`` and swaps in a
new snapshot when it changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.paths import PathPattern, compile_pattern, normalise_method
from secserver.aio import cancel_and_wait
from secserver.identifiers import ClientId, ServiceId

log = logging.getLogger(__name__)

# Index keys: plain tuples, cheap to build from an id's parts on every decision.
ServiceKey = tuple[str, ...]
SubjectKey = tuple[str, ...]


def subject_hash(secret: bytes, subject: str) -> str:
    """The keyed hash (HMAC-SHA256, hex) under which a data subject is stored and looked up.

    The subject text is NFC-normalised first, so visually equal identifiers hash equally.
    """
    if not secret:
        raise ValueError("the data-subject key is empty")
    text = unicodedata.normalize("NFC", subject)
    return hmac.new(secret, text.encode("utf-8"), hashlib.sha256).hexdigest()


def service_key(service: ServiceId) -> ServiceKey:
    return service.parts()


def subsystem_subject(client: ClientId) -> SubjectKey:
    return ("subsystem", *client.parts())


def member_subject(client: ClientId) -> SubjectKey:
    return ("member", client.instance, client.member_class, client.member_code)


def group_subject(code: str) -> SubjectKey:
    return ("group", code)


def as_utc(value: datetime) -> datetime:
    """Datetimes read back from SQLite are naive; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class EndpointEntry:
    """A REST endpoint of a service: HTTP method (or ``*``) and a canonical path pattern."""

    id: int
    service: ServiceId
    method: str
    path: str
    pattern: PathPattern = field(repr=False, compare=False)

    @classmethod
    def create(cls, id: int, service: ServiceId, method: str, path: str) -> EndpointEntry:
        pattern = compile_pattern(path)
        return cls(id, service, normalise_method(method), pattern.text, pattern)

    def covers(self, method: str, normalised_path: str) -> bool:
        """Whether a request (upper-case method, normalised path) falls under this endpoint."""
        return (self.method == "*" or self.method == method) \
            and self.pattern.matches(normalised_path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class ServiceEntry:
    """What the exchange needs to know about a registered service."""

    id: ServiceId
    backend_url: str
    timeout: float
    requires_consent: bool
    log_body: str
    endpoints: tuple[EndpointEntry, ...] = ()


@dataclass(frozen=True)
class SubsystemEntry:
    """A known subsystem; ``local`` ones are this node's, with how their IS authenticates."""

    id: ClientId
    local: bool
    auth: str
    tls_cert_sha256: str | None
    allowlist: tuple[str, ...]


@dataclass(frozen=True)
class RightEntry:
    """An access right: a subject (subsystem, member or group) on a service or one endpoint."""

    id: int
    subject_kind: str
    subject: str
    service: ServiceId
    endpoint: EndpointEntry | None
    granted_at: datetime
    granted_by: str

    @property
    def subject_key(self) -> SubjectKey:
        """The index key: ``(kind, *id parts)``, or ``("group", code)``."""
        if self.subject_kind == "group":
            return group_subject(self.subject)
        return (self.subject_kind, *self.subject.split("/"))

    def describe(self) -> str:
        target = "the whole service" if self.endpoint is None else f"endpoint {self.endpoint}"
        return f"right {self.id}: {self.subject_kind} {self.subject} -> {self.service} " \
               f"({target})"


@dataclass(frozen=True)
class ConsentEntry:
    """A data subject's consent (subject only as keyed hash) for a client and a service.

    ``client`` is a subsystem, or a member (then it covers all the member's subsystems).
    """

    id: int
    subject_hash: str
    client: ClientId
    service: ServiceId
    purpose: str
    valid_from: datetime
    valid_until: datetime | None
    revoked_at: datetime | None

    def covers_client(self, client: ClientId) -> bool:
        if self.client.subsystem is None:
            return (self.client.instance, self.client.member_class, self.client.member_code) \
                == (client.instance, client.member_class, client.member_code)
        return self.client == client

    def state_at(self, now: datetime) -> str:
        """``active``, ``revoked``, ``not yet valid`` or ``expired`` at ``now``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if now < self.valid_from:
            return "not yet valid"
        if self.valid_until is not None and now >= self.valid_until:
            return "expired"
        return "active"


@dataclass(frozen=True, eq=False)
class RegistrySnapshot:
    """An immutable, indexed view of the registry at one ``version``."""

    version: int
    services_by_key: Mapping[ServiceKey, ServiceEntry]
    subsystems_by_key: Mapping[tuple[str, ...], SubsystemEntry]
    groups_by_client: Mapping[tuple[str, ...], tuple[str, ...]]
    rights_by_service: Mapping[ServiceKey, Mapping[SubjectKey, tuple[RightEntry, ...]]]
    consents_by_subject: Mapping[tuple[str, ServiceKey], tuple[ConsentEntry, ...]]
    rights_count: int = 0
    subject_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def build(cls, *, services: Iterable[ServiceEntry] = (),
              subsystems: Iterable[SubsystemEntry] = (),
              groups: Mapping[str, Iterable[ClientId]] | None = None,
              rights: Iterable[RightEntry] = (), consents: Iterable[ConsentEntry] = (),
              version: int = 0, subject_key: bytes | None = None) -> RegistrySnapshot:
        """Index plain entries (services carry their endpoints)."""
        services_by_key = {service_key(s.id): s for s in services}
        groups_by_client: dict[tuple[str, ...], list[str]] = defaultdict(list)
        for code, clients in sorted((groups or {}).items()):
            for client in clients:
                groups_by_client[client.parts()].append(code)
        rights_index: dict[ServiceKey, dict[SubjectKey, list[RightEntry]]] = defaultdict(
            lambda: defaultdict(list))
        count = 0
        for right in rights:
            rights_index[service_key(right.service)][right.subject_key].append(right)
            count += 1
        consents_index: dict[tuple[str, ServiceKey], list[ConsentEntry]] = defaultdict(list)
        for consent in consents:
            consents_index[(consent.subject_hash, service_key(consent.service))].append(consent)

        def service_first(right: RightEntry) -> tuple[bool, int]:
            return (right.endpoint is not None, right.id)

        return cls(
            version=version,
            services_by_key=services_by_key,
            subsystems_by_key={s.id.parts(): s for s in subsystems},
            groups_by_client={k: tuple(v) for k, v in groups_by_client.items()},
            rights_by_service={
                svc: {subj: tuple(sorted(lst, key=service_first)) for subj, lst in per.items()}
                for svc, per in rights_index.items()
            },
            consents_by_subject={k: tuple(sorted(v, key=lambda c: c.id))
                                 for k, v in consents_index.items()},
            rights_count=count,
            subject_key=subject_key,
        )

    @classmethod
    def empty(cls) -> RegistrySnapshot:
        return cls.build()

    def service(self, service_id: ServiceId) -> ServiceEntry | None:
        """The registered service with exactly this id (version included), if any."""
        return self.services_by_key.get(service_id.parts())

    def local_subsystem(self, client_id: ClientId) -> SubsystemEntry | None:
        """The subsystem if it is registered on this node (``local``), else None."""
        entry = self.subsystems_by_key.get(client_id.parts())
        return entry if entry is not None and entry.local else None

    def subsystem(self, client_id: ClientId) -> SubsystemEntry | None:
        """Any known subsystem, local or not."""
        return self.subsystems_by_key.get(client_id.parts())

    def services(self) -> tuple[ServiceEntry, ...]:
        return tuple(sorted(self.services_by_key.values(), key=lambda s: str(s.id)))

    def subsystems(self) -> tuple[SubsystemEntry, ...]:
        return tuple(sorted(self.subsystems_by_key.values(), key=lambda s: str(s.id)))

    def groups_of(self, client_id: ClientId) -> tuple[str, ...]:
        return self.groups_by_client.get(client_id.parts(), ())

    def consents_for(self, subject_hash: str, service_id: ServiceId) -> tuple[ConsentEntry, ...]:
        return self.consents_by_subject.get((subject_hash, service_id.parts()), ())


def _client(instance: str, member_class: str, member_code: str,
            subsystem: str | None = None) -> ClientId:
    return ClientId(instance, member_class, member_code, subsystem)


@dataclass(frozen=True)
class RegistryRows:
    """The registry tables as fetched (plain rows; safe to hand to another thread)."""

    version: int
    tables: Mapping[str, Sequence[Row[Any]]]


_TABLES = (m.Member, m.Subsystem, m.Service, m.Endpoint, m.LocalGroup, m.GroupMember,
           m.Right, m.Consent)


def fetch_rows(connection: Connection | Session) -> RegistryRows:
    """Read every registry table (synchronous; the I/O half of :func:`load_snapshot`).

    The version is read first: a change committed while reading makes the stored version
    newer than the snapshot's, so the watcher loads again rather than missing it.
    """
    version = connection.execute(
        select(m.RegistryVersion.version).where(m.RegistryVersion.id == 1)).scalar_one_or_none()
    tables = {model.__tablename__: list(connection.execute(
        select(model.__table__).order_by(model.__table__.c.id))) for model in _TABLES}
    return RegistryRows(int(version or 0), tables)


def build_snapshot(rows: RegistryRows, *, subject_key: bytes | None = None) -> RegistrySnapshot:
    """Turn fetched rows into an indexed snapshot (pure CPU, no I/O)."""
    t = rows.tables
    members = {row.id: (row.instance, row.member_class, row.member_code)
               for row in t["members"]}
    subsystem_ids = {row.id: _client(*members[row.member_id], row.code)
                     for row in t["subsystems"]}
    subsystems = [
        SubsystemEntry(subsystem_ids[row.id], bool(row.local), row.auth, row.tls_cert_sha256,
                       tuple(json.loads(row.allowlist or "[]")))
        for row in t["subsystems"]
    ]
    service_ids = {row.id: ServiceId(subsystem_ids[row.subsystem_id], row.code, row.version)
                   for row in t["services"]}
    endpoints: dict[int, EndpointEntry] = {}
    endpoints_of: dict[int, list[EndpointEntry]] = defaultdict(list)
    for row in t["endpoints"]:
        entry = EndpointEntry.create(row.id, service_ids[row.service_id], row.method, row.path)
        endpoints[row.id] = entry
        endpoints_of[row.service_id].append(entry)
    services = [
        ServiceEntry(service_ids[row.id], row.backend_url, float(row.timeout),
                     bool(row.requires_consent), row.log_body, tuple(endpoints_of[row.id]))
        for row in t["services"]
    ]
    group_codes = {row.id: row.code for row in t["local_groups"]}
    groups: dict[str, list[ClientId]] = {code: [] for code in group_codes.values()}
    for row in t["group_members"]:
        groups[group_codes[row.group_id]].append(subsystem_ids[row.subsystem_id])
    rights = []
    for row in t["rights"]:
        if row.subject_kind == "subsystem":
            subject = str(subsystem_ids[row.subject_subsystem_id])
        elif row.subject_kind == "member":
            subject = "/".join(members[row.subject_member_id])
        else:
            subject = group_codes[row.subject_group_id]
        rights.append(RightEntry(
            row.id, row.subject_kind, subject, service_ids[row.service_id],
            endpoints[row.endpoint_id] if row.endpoint_id is not None else None,
            as_utc(row.granted_at), row.granted_by))
    consents = []
    for row in t["consents"]:
        client = (subsystem_ids[row.client_subsystem_id] if row.client_subsystem_id is not None
                  else _client(*members[row.client_member_id]))
        consents.append(ConsentEntry(
            row.id, row.subject_hash, client, service_ids[row.service_id], row.purpose,
            as_utc(row.valid_from), as_utc(row.valid_until) if row.valid_until else None,
            as_utc(row.revoked_at) if row.revoked_at else None))
    return RegistrySnapshot.build(services=services, subsystems=subsystems, groups=groups,
                                  rights=rights, consents=consents, version=rows.version,
                                  subject_key=subject_key)


def load_snapshot(connection: Connection | Session, *,
                  subject_key: bytes | None = None) -> RegistrySnapshot:
    """Read the whole registry into a snapshot (synchronous; use ``run_sync`` from asyncio)."""
    return build_snapshot(fetch_rows(connection), subject_key=subject_key)


class RegistryWatcher:
    """Keeps ``current`` up to date: polls ``registry_version`` every ``interval`` seconds.

    A change is visible after at most ``interval`` plus the reload time (milliseconds for
    a small registry, ~0.2 s for 10,000 rights; only when the version changed). Rows are
    fetched through ``run_sync``; the snapshot is built in a worker thread.

    ``await start()`` loads the first snapshot (errors propagate: a node must not start
    without its registry) and starts the named polling task; ``await stop()`` cancels it.
    A failed poll keeps the previous snapshot and is logged; the next poll retries.
    """

    TASK_NAME = "secserver-acl-registry-watcher"

    def __init__(self, engine: AsyncEngine, interval: float = 0.5, *,
                 subject_key: bytes | None = None) -> None:
        if interval <= 0:
            raise ValueError("interval must be greater than zero")
        self._engine = engine
        self._interval = interval
        self._subject_key = subject_key
        self._current: RegistrySnapshot | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> RegistrySnapshot:
        if self._current is None:
            raise RuntimeError("RegistryWatcher.start() has not been awaited")
        return self._current

    async def _stored_version(self) -> int:
        async with self._engine.connect() as connection:
            result = await connection.execute(
                select(m.RegistryVersion.version).where(m.RegistryVersion.id == 1))
            return int(result.scalar_one_or_none() or 0)

    async def _load(self) -> RegistrySnapshot:
        async with self._engine.connect() as connection:
            rows = await connection.run_sync(fetch_rows)
        # Building is CPU only: a thread keeps the event loop serving meanwhile.
        return await asyncio.to_thread(build_snapshot, rows, subject_key=self._subject_key)

    async def refresh(self) -> bool:
        """Check now; load and swap in a new snapshot if the version changed."""
        if self._current is not None and await self._stored_version() == self._current.version:
            return False
        snapshot = await self._load()
        previous = self._current
        self._current = snapshot
        if previous is not None:
            log.info("access-rights registry reloaded: version %d -> %d (%d rights)",
                     previous.version, snapshot.version, snapshot.rights_count)
        return True

    async def start(self) -> RegistrySnapshot:
        if self._task is not None:
            raise RuntimeError("RegistryWatcher already started")
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name=self.TASK_NAME)
        return self.current

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.refresh()
            except Exception as exc:  # keep serving the last good snapshot
                log.warning("access-rights registry refresh failed (%s: %s); keeping "
                            "version %d", type(exc).__name__, exc, self.current.version)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

"""Subsystems (``INSTANCE/CLASS/MEMBER/SUBSYSTEM``) and how local ones authenticate their
information system."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.registry.changes import (
    SHA256_HEX,
    Json,
    RegistryError,
    delete_row,
    exists,
    in_use,
    insert,
    record_event,
    record_update,
    transaction,
    utc,
)
from secserver.acl.registry.lookups import (
    count,
    find_subsystem,
    parse_client,
    refuse_kept_consents,
    require_member,
    require_subsystem,
    require_subsystem_id,
    service_json,
    subsystem_ids,
    subsystem_json,
)
from secserver.acl.registry.rights import list_rights
from secserver.identifiers import ClientId, ServiceId


def _check_fields(client: ClientId, local: bool, auth: str, tls_cert_sha256: str | None,
                  allowlist: Sequence[str]) -> tuple[str | None, list[str]]:
    """The normalised fingerprint and networks, or an error naming the bad setting."""
    if auth not in m.AUTH_MODES:
        raise RegistryError(f"auth {auth!r} is not valid; expected one of "
                            f"{', '.join(m.AUTH_MODES)}")
    fingerprint = None
    if tls_cert_sha256:
        fingerprint = tls_cert_sha256.replace(":", "").strip().lower()
        if not SHA256_HEX.fullmatch(fingerprint):
            raise RegistryError(f"tls_cert_sha256 {tls_cert_sha256!r} is not a SHA-256 "
                                "fingerprint (64 hex digits, colons allowed)")
    networks = []
    for entry in allowlist:
        try:
            networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
        except ValueError as exc:
            raise RegistryError(f"allowlist entry {entry!r} is not an IP address or CIDR "
                                "network") from exc
    if auth == "tls" and fingerprint is None:
        raise RegistryError(f"subsystem {client}: auth 'tls' needs tls_cert_sha256, the "
                            "SHA-256 fingerprint of the IS client certificate")
    if auth == "allowlist" and not networks:
        raise RegistryError(f"subsystem {client}: auth 'allowlist' needs at least one "
                            "allowlist address or network")
    if not local and (auth != "none" or fingerprint or networks):
        raise RegistryError(f"subsystem {client}: auth, tls_cert_sha256 and allowlist apply "
                            "only to local subsystems (registered on this node)")
    return fingerprint, networks


def add_subsystem(session: Session, actor: str, subsystem: ClientId | str, *,
                  local: bool = False, auth: str = "none", tls_cert_sha256: str | None = None,
                  allowlist: Sequence[str] = (), now: datetime | None = None) -> Json:
    """Register a subsystem of a registered member.

    ``local=True`` marks this node's own subsystems; ``auth`` says how their information
    system proves it may speak for them: ``tls`` (pinned certificate fingerprint),
    ``allowlist`` (source addresses/CIDRs) or ``none``.
    """
    with transaction(session):
        at, client = utc(now), parse_client(subsystem)
        require_subsystem_id(client)
        member = require_member(session, client)
        if find_subsystem(session, client) is not None:
            raise exists(f"subsystem {client} is already registered")
        fingerprint, networks = _check_fields(client, local, auth, tls_cert_sha256, allowlist)
        row = m.Subsystem(member_id=member.id, code=client.subsystem, local=local, auth=auth,
                          tls_cert_sha256=fingerprint, allowlist=json.dumps(networks))
        insert(session, row, f"subsystem {client} was registered")
        after = subsystem_json(row, client)
        record_event(session, actor, at, "subsystem.add", str(client), None, after)
        return after


def update_subsystem(session: Session, actor: str, subsystem: ClientId | str, *,
                     local: bool | None = None, auth: str | None = None,
                     tls_cert_sha256: str | None = None,
                     allowlist: Sequence[str] | None = None,
                     now: datetime | None = None) -> Json:
    """Change a subsystem's locality or IS authentication (unset arguments stay)."""
    client = parse_client(subsystem)
    with transaction(session):
        row = require_subsystem(session, client)
        before = subsystem_json(row, client)
        new_local = before["local"] if local is None else local
        new_auth = before["auth"] if auth is None else auth
        new_cert = before["tls_cert_sha256"] if tls_cert_sha256 is None else tls_cert_sha256
        new_list = before["allowlist"] if allowlist is None else list(allowlist)
        if not new_local and local is False and auth is None:
            new_auth, new_cert, new_list = "none", None, []
        fingerprint, networks = _check_fields(client, new_local, new_auth, new_cert or None,
                                              new_list)
        row.local, row.auth = new_local, new_auth
        row.tls_cert_sha256, row.allowlist = fingerprint, json.dumps(networks)
        session.flush()
        return record_update(session, actor, now, "subsystem.update", str(client), before,
                             subsystem_json(row, client))


def list_subsystems(session: Session, *, local_only: bool = False) -> list[Json]:
    ids = subsystem_ids(session)
    rows = session.execute(select(m.Subsystem)).scalars()
    out = [subsystem_json(r, ids[r.id]) for r in rows if r.local or not local_only]
    return sorted(out, key=lambda s: s["id"])


def show_subsystem(session: Session, subsystem: ClientId | str) -> Json:
    """A subsystem with its services, groups and the rights it holds directly."""
    client = parse_client(subsystem)
    row = require_subsystem(session, client)
    services = [service_json(s, ServiceId(client, s.code, s.version)) for s in session.execute(
        select(m.Service).where(m.Service.subsystem_id == row.id)).scalars()]
    groups = list(session.execute(
        select(m.LocalGroup.code).join(m.GroupMember, m.GroupMember.group_id == m.LocalGroup.id)
        .where(m.GroupMember.subsystem_id == row.id).order_by(m.LocalGroup.code)).scalars())
    return {**subsystem_json(row, client),
            "services": sorted(services, key=lambda s: s["id"]), "groups": groups,
            "rights": list_rights(session, subject=str(client))}


def remove_subsystem(session: Session, actor: str, subsystem: ClientId | str, *,
                     now: datetime | None = None) -> Json:
    """Remove a subsystem with no services, rights or group memberships left and no
    consents (not even revoked ones)."""
    client = parse_client(subsystem)
    with transaction(session):
        row = require_subsystem(session, client)
        refuse_kept_consents(session, f"subsystem {client}",
                             m.Consent.client_subsystem_id == row.id)
        found = {
            "service(s)": count(session, m.Service, m.Service.subsystem_id == row.id),
            "right(s)": count(session, m.Right, m.Right.subject_subsystem_id == row.id),
            "group membership(s)": count(session, m.GroupMember,
                                         m.GroupMember.subsystem_id == row.id),
        }
        busy = [f"{n} {name}" for name, n in found.items() if n]
        if busy:
            raise in_use(f"subsystem {client} still has {', '.join(busy)}; remove or revoke "
                         "them first")
        return delete_row(session, actor, now, "subsystem.remove", str(client), row,
                          subsystem_json(row, client))

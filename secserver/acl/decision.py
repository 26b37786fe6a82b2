"""The access decision. Pure: a snapshot and a request in, a Decision out; no I/O.

Deny by default. A request is allowed when one of the client's subjects holds a right on
the service (covering every endpoint) or on an endpoint whose method and path pattern
cover the request. The client's subjects are: the subsystem itself, its whole member, and
every local group that contains the subsystem. The path is normalised strictly first;
anything ambiguous is denied. A service that requires consent additionally needs an
active, unrevoked consent of the named data subject for the client (its subsystem, or its
whole member) at ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from secserver.acl.paths import InvalidPath, normalise_method, normalise_path
from secserver.acl.snapshot import subject_hash
from secserver.identifiers import ClientId, ServiceId

if TYPE_CHECKING:
    from secserver.acl.snapshot import RegistrySnapshot, RightEntry


@dataclass(frozen=True)
class Decision:
    """``allowed`` with the ``reason`` and, when allowed, the rule that allowed it."""

    allowed: bool
    reason: str
    matched_rule: str | None = None


def _find_right(snapshot: RegistrySnapshot, client: ClientId, service: ServiceId,
                method: str, path: str) -> RightEntry | None:
    per_subject = snapshot.rights_by_service.get(service.parts())
    if not per_subject:
        return None
    parts = client.parts()
    subjects: list[tuple[str, ...]] = [
        ("member", client.instance, client.member_class, client.member_code)]
    if client.subsystem is not None:
        subjects.insert(0, ("subsystem", *parts))
        subjects.extend(("group", code) for code in snapshot.groups_by_client.get(parts, ()))
    candidates = [per_subject[s] for s in subjects if s in per_subject]
    # Service-wide rights first (each list is sorted that way), then endpoint rights.
    for rights in candidates:
        if rights[0].endpoint is None:
            return rights[0]
    for rights in candidates:
        for right in rights:
            endpoint = right.endpoint
            if endpoint is not None and endpoint.covers(method, path):
                return right
    return None


def decide(snapshot: RegistrySnapshot, client: ClientId, service: ServiceId, method: str,
           path: str, data_subject: str | None, now: datetime) -> Decision:
    """Decide whether ``client`` may call ``method path`` of ``service`` at ``now``.

    ``path`` is the path as sent after the service id (percent-encoded, no query; ``""``
    for SOAP). ``now`` must be timezone-aware.
    """
    entry = snapshot.service(service)
    if entry is None:
        return Decision(False, f"service {service} is not registered on this node")
    try:
        canonical = normalise_path(path)
        verb = normalise_method(method)
    except InvalidPath as exc:
        return Decision(False, f"request refused: {exc.message}")
    right = _find_right(snapshot, client, service, verb, canonical)
    if right is None:
        return Decision(False, f"client {client} has no access right to {verb} {canonical} "
                               f"of service {service}")
    if not entry.requires_consent:
        return Decision(True, f"allowed by {right.describe()}", right.describe())
    if data_subject is None or data_subject == "":
        return Decision(False, f"service {service} requires the data subject's consent, but "
                               "the request names no data subject")
    if snapshot.subject_key is None:
        return Decision(False, f"service {service} requires consent, but this node has no "
                               "data-subject key ([acl] subject_key_file) to check it")
    hashed = subject_hash(snapshot.subject_key, data_subject)
    seen: list[str] = []
    for consent in snapshot.consents_for(hashed, service):
        if not consent.covers_client(client):
            continue
        state = consent.state_at(now)
        if state == "active":
            rule = f"{right.describe()}; consent {consent.id} ({consent.purpose})"
            return Decision(True, f"allowed by {rule}", rule)
        seen.append(f"consent {consent.id} {state}")
    detail = f" ({', '.join(seen)})" if seen else ""
    return Decision(False, f"consent missing: no active consent of the data subject for "
                           f"client {client} on service {service}{detail}")

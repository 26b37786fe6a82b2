"""Services of a provider subsystem (``.../SUBSYSTEM/SERVICE[/VERSION]``) and their REST
endpoints (method or ``*``, path pattern with ``*`` and ``**``)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from secserver.acl import models as m
from secserver.acl.registry.changes import (
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
    endpoint_args,
    endpoint_json,
    find_endpoint,
    find_service,
    parse_client,
    parse_service,
    refuse_kept_consents,
    require_endpoint,
    require_service,
    require_subsystem,
    service_ids,
    service_json,
)
from secserver.acl.registry.rights import list_rights, rights_json
from secserver.identifiers import ClientId, ServiceId


def _check_fields(backend_url: str, timeout: float, log_body: str) -> None:
    parts = urlsplit(backend_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RegistryError(f"backend URL {backend_url!r} is not an http:// or https:// URL")
    if not timeout > 0:
        raise RegistryError(f"timeout must be greater than zero seconds, got {timeout}")
    if log_body not in m.LOG_BODY_POLICIES:
        raise RegistryError(f"log_body {log_body!r} is not valid; expected one of "
                            f"{', '.join(m.LOG_BODY_POLICIES)}")


def add_service(session: Session, actor: str, service: ServiceId | str, *, backend_url: str,
                timeout: float = 30.0, requires_consent: bool = False,
                log_body: str = "digest", now: datetime | None = None) -> Json:
    """Register a service of a registered subsystem, with its backend URL."""
    with transaction(session):
        at, service_id = utc(now), parse_service(service)
        provider = require_subsystem(session, service_id.provider)
        if find_service(session, service_id) is not None:
            raise exists(f"service {service_id} is already registered")
        _check_fields(backend_url, timeout, log_body)
        row = m.Service(subsystem_id=provider.id, code=service_id.code,
                        version=service_id.version, backend_url=backend_url, timeout=timeout,
                        requires_consent=requires_consent, log_body=log_body)
        insert(session, row, f"service {service_id} was registered")
        after = service_json(row, service_id)
        record_event(session, actor, at, "service.add", str(service_id), None, after)
        return after


def update_service(session: Session, actor: str, service: ServiceId | str, *,
                   backend_url: str | None = None, timeout: float | None = None,
                   requires_consent: bool | None = None, log_body: str | None = None,
                   now: datetime | None = None) -> Json:
    """Change a service's settings (unset arguments stay)."""
    service_id = parse_service(service)
    with transaction(session):
        row = require_service(session, service_id)
        before = service_json(row, service_id)
        if backend_url is not None:
            row.backend_url = backend_url
        if timeout is not None:
            row.timeout = timeout
        if requires_consent is not None:
            row.requires_consent = requires_consent
        if log_body is not None:
            row.log_body = log_body
        _check_fields(row.backend_url, row.timeout, row.log_body)
        session.flush()
        return record_update(session, actor, now, "service.update", str(service_id), before,
                             service_json(row, service_id))


def list_services(session: Session, *, provider: ClientId | str | None = None) -> list[Json]:
    ids = service_ids(session)
    wanted = None if provider is None else parse_client(provider)
    out = [service_json(r, ids[r.id]) for r in session.execute(select(m.Service)).scalars()
           if wanted is None or ids[r.id].provider == wanted]
    return sorted(out, key=lambda s: s["id"])


def show_service(session: Session, service: ServiceId | str) -> Json:
    """A service with its endpoints and the rights on it."""
    service_id = parse_service(service)
    row = require_service(session, service_id)
    return {**service_json(row, service_id),
            "endpoints": list_endpoints(session, service_id),
            "rights": list_rights(session, service=service_id)}


def remove_service(session: Session, actor: str, service: ServiceId | str, *,
                   now: datetime | None = None) -> Json:
    """Remove a service with no rights and no consents, not even revoked ones (its
    endpoints go with it)."""
    service_id = parse_service(service)
    with transaction(session):
        row = require_service(session, service_id)
        refuse_kept_consents(session, f"service {service_id}", m.Consent.service_id == row.id)
        rights = count(session, m.Right, m.Right.service_id == row.id)
        if rights:
            raise in_use(f"service {service_id} still has {rights} right(s); revoke them first")
        endpoints = list(session.execute(select(m.Endpoint).where(
            m.Endpoint.service_id == row.id).order_by(m.Endpoint.id)).scalars())
        before = {**service_json(row, service_id),
                  "endpoints": [endpoint_json(e, service_id) for e in endpoints]}
        for endpoint in endpoints:
            session.delete(endpoint)
        session.flush()
        return delete_row(session, actor, now, "service.remove", str(service_id), row, before)


# --- endpoints ----------------------------------------------------------------------------

def add_endpoint(session: Session, actor: str, service: ServiceId | str, method: str,
                 path: str, *, now: datetime | None = None) -> Json:
    """Add a REST endpoint (method or ``*``, path pattern with ``*``/``**``) to a service."""
    with transaction(session):
        at, service_id = utc(now), parse_service(service)
        row = require_service(session, service_id)
        verb, pattern = endpoint_args(method, path)
        if find_endpoint(session, row, verb, pattern) is not None:
            raise exists(f"endpoint {verb} {pattern} of service {service_id} already exists")
        endpoint = m.Endpoint(service_id=row.id, method=verb, path=pattern)
        insert(session, endpoint, f"endpoint {verb} {pattern} of service {service_id} was added")
        after = endpoint_json(endpoint, service_id)
        record_event(session, actor, at, "endpoint.add", f"{service_id} {verb} {pattern}",
                     None, after)
        return after


def list_endpoints(session: Session, service: ServiceId | str | None = None) -> list[Json]:
    ids = service_ids(session)
    query = select(m.Endpoint).order_by(m.Endpoint.path, m.Endpoint.method)
    if service is not None:
        query = query.where(m.Endpoint.service_id == require_service(
            session, parse_service(service)).id)
    rows = session.execute(query).scalars()
    return sorted((endpoint_json(r, ids[r.service_id]) for r in rows),
                  key=lambda e: (e["service"], e["path"], e["method"]))


def show_endpoint(session: Session, service: ServiceId | str, method: str,
                  path: str) -> Json:
    """One endpoint with the rights granted on it."""
    service_id = parse_service(service)
    service_row = require_service(session, service_id)
    row = require_endpoint(session, service_row, service_id, method, path)
    rights = session.execute(select(m.Right).where(m.Right.endpoint_id == row.id)
                             .order_by(m.Right.id)).scalars()
    return {**endpoint_json(row, service_id), "rights": rights_json(session, list(rights))}


def remove_endpoint(session: Session, actor: str, service: ServiceId | str, method: str,
                    path: str, *, now: datetime | None = None) -> Json:
    """Remove an endpoint that no right refers to."""
    service_id = parse_service(service)
    with transaction(session):
        service_row = require_service(session, service_id)
        row = require_endpoint(session, service_row, service_id, method, path)
        rights = count(session, m.Right, m.Right.endpoint_id == row.id)
        if rights:
            raise in_use(f"endpoint {row.method} {row.path} of {service_id} still has "
                         f"{rights} right(s); revoke them first")
        return delete_row(session, actor, now, "endpoint.remove",
                          f"{service_id} {row.method} {row.path}", row,
                          endpoint_json(row, service_id))

"""``secserver consent``: record, revoke and list data subjects' consents.

Data subjects are stored only as keyed hashes (HMAC-SHA256 with the node secret from
``[acl] subject_key_file``). Pass ``-`` as SUBJECT to read it from stdin instead of the
command line (which other users of the machine may see).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import click

from secserver.acl import registry
from secserver.cli.acl import (
    CLIENT,
    EXIT_CODES,
    SERVICE,
    TIME,
    Registry,
    Table,
    changes,
    reads,
    subject_key,
)
from secserver.cli.options import fail
from secserver.identifiers import ClientId, ServiceId

CONSENTS = Table("consents", [("id", "id"), ("subject_hash", "subject (keyed hash)"),
                              ("client", "client"), ("service", "service"),
                              ("purpose", "purpose"), ("valid_from", "valid from"),
                              ("valid_until", "valid until"), ("revoked_at", "revoked at")])


def _subject(value: str) -> str:
    if value == "-":
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        fail("the data subject is empty")
    return value


def _short(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{**row, "subject_hash": str(row["subject_hash"])[:16] + "..."} for row in rows]


@click.group(epilog=EXIT_CODES, context_settings={"help_option_names": ["-h", "--help"]})
def consent() -> None:
    """Record, revoke and list data subjects' consents (stored only as keyed hashes)."""


@consent.command("record")
@click.argument("subject")
@click.argument("client", type=CLIENT)
@click.argument("service", type=SERVICE)
@click.option("--purpose", required=True, help="What the client may use the data for.")
@click.option("--from", "valid_from", type=TIME, default=None,
              help="Start of validity (ISO 8601; UTC if no zone; default now).")
@click.option("--until", "valid_until", type=TIME, default=None,
              help="End of validity (exclusive; default: until revoked).")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Valid for this many days from the start (instead of --until).")
@changes
def record(reg: Registry, subject: str, client: ClientId, service: ServiceId, purpose: str,
           valid_from: datetime | None, valid_until: datetime | None, days: int | None) -> None:
    """Record SUBJECT's consent for CLIENT (subsystem, or whole member) to use SERVICE.

    Only a keyed hash of SUBJECT is stored. Give '-' as SUBJECT to read it from stdin, so
    it does not appear in the process list or shell history.
    """
    if days is not None and valid_until is not None:
        raise click.UsageError("give --until or --days, not both")
    start = valid_from or datetime.now(UTC)
    if days is not None:
        valid_until = start + timedelta(days=days)
    data_subject = _subject(subject)
    with reg.open() as (config, session):
        key = subject_key(config)
        assert key is not None
        made = registry.record_consent(session, reg.actor, key, data_subject, client, service,
                                       purpose, valid_from=start, valid_until=valid_until)
        service_info = registry.show_service(session, service)
    if not service_info["requires_consent"] and not reg.as_json:
        click.echo(f"note: service {service} does not require consent "
                   f"(secserver acl services set {service} --requires-consent)", err=True)
    until = made["valid_until"] or "revoked"
    reg.done(f"consent {made['id']} recorded: {client} -> {service} ({purpose}), "
             f"from {made['valid_from']} until {until}", made)


@consent.command("revoke")
@click.argument("consent_id", type=int, required=False)
@click.option("--subject", default=None,
              help="Revoke every unrevoked consent of this data subject ('-': stdin).")
@click.option("--client", type=CLIENT, default=None, help="With --subject: only this client.")
@click.option("--service", type=SERVICE, default=None, help="With --subject: only this service.")
@changes
def revoke(reg: Registry, consent_id: int | None, subject: str | None, client: ClientId | None,
           service: ServiceId | None) -> None:
    """Revoke consent CONSENT_ID, or all of a data subject's consents (--subject)."""
    if (consent_id is None) == (subject is None):
        raise click.UsageError("give either a CONSENT_ID or --subject")
    if subject is None and (client is not None or service is not None):
        raise click.UsageError("--client and --service go with --subject")
    with reg.open() as (config, session):
        if consent_id is not None:
            gone = [registry.revoke_consent(session, reg.actor, consent_id)]
        else:
            key = subject_key(config)
            assert key is not None
            gone = registry.revoke_consents(session, reg.actor, key, _subject(subject or ""),
                                            client=client, service=service)
    if reg.as_json:
        reg.done("", {"revoked": gone})
    else:
        for item in gone:
            click.echo(f"consent {item['id']} revoked at {item['revoked_at']}")


@consent.command("list")
@click.option("--subject", default=None, help="Only this data subject's consents ('-': stdin).")
@click.option("--client", type=CLIENT, default=None, help="Only consents for this client.")
@click.option("--service", type=SERVICE, default=None, help="Only consents for this service.")
@click.option("--active", is_flag=True, help="Only consents active now.")
@reads
def list_(reg: Registry, subject: str | None, client: ClientId | None,
          service: ServiceId | None, active: bool) -> None:
    """List consents (data subjects appear only as keyed hashes)."""
    with reg.open() as (config, session):
        key = subject_key(config, required=subject is not None)
        rows = registry.list_consents(
            session, subject_key=key, data_subject=None if subject is None else _subject(subject),
            client=client, service=service, active_at=datetime.now(UTC) if active else None)
    reg.list(rows if reg.as_json else _short(rows), CONSENTS)

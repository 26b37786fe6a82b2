"""``secserver audit``: verify the log, show and export one exchange, verify a bundle
offline, archive old records.

Exit codes: 0 success (for ``verify``/``verify-bundle``: no problem found), 1 a problem
was found or the command failed, 2 usage error.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from secserver.audit.verify import VerifyReport
from secserver.cli.options import (
    config_option,
    handle_errors,
    json_option,
    load_or_fail,
    print_json,
)

if TYPE_CHECKING:
    from secserver.audit.bundle import Anchored

F = TypeVar("F", bound=Callable[..., Any])


def database_errors(func: F) -> F:
    """Database failures become one clear line (under ``handle_errors``), not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        from secserver.audit.errors import AuditError

        try:
            return func(*args, **kwargs)
        except SQLAlchemyError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise AuditError(f"cannot read the log from the database: {first}; is the "
                             "database reachable and upgraded (secserver db upgrade)?") from exc

    return wrapper  # type: ignore[return-value]


@click.group()
def audit() -> None:
    """Check the tamper-evident message log and extract evidence from it."""


def _print_report(report: VerifyReport) -> None:
    span = f"{report.first_seq}..{report.last_seq}" if report.records else "none"
    click.echo(f"node {report.node}: {report.records} records ({span}), {report.messages} "
               f"messages, {report.checkpoints} checkpoints, {report.timestamps} timestamps, "
               f"{report.message_signatures} message signatures checked")
    for problem in report.problems:
        click.echo(f"PROBLEM: {problem.message}")
    for warning in report.warnings:
        click.echo(f"warning: {warning.message}")
    click.echo("log verified: no problem found" if report.ok
               else f"log NOT verified: {len(report.problems)} problem(s)")


@audit.command("verify")
@config_option
@click.option("--from", "from_seq", type=click.IntRange(min=1), help="First record (seq).")
@click.option("--to", "to_seq", type=click.IntRange(min=1), help="Last record (seq).")
@click.option("--no-signatures", is_flag=True, help="Skip per-message signature checks.")
@json_option
@handle_errors
@database_errors
def verify(config_path: Path, from_seq: int | None, to_seq: int | None, no_signatures: bool,
           as_json: bool) -> None:
    """Check every chain link, Merkle root, checkpoint signature, timestamp token and
    message signature of the node's log (archives and database)."""
    from secserver.audit.checks import verify_node_log

    config = load_or_fail(config_path)
    if from_seq is not None and to_seq is not None and to_seq < from_seq:
        raise click.UsageError("--to must not be smaller than --from")
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        # Refreshed from the callback, not by rich's refresh thread: with no other thread
        # the range workers are forked, not spawned (which imports everything again).
        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(),
                      console=_stderr_console(), transient=True, auto_refresh=False) as bar:
            task = bar.add_task("verifying", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total, refresh=True)

            report = verify_node_log(config, from_seq=from_seq, to_seq=to_seq,
                                     signatures=not no_signatures, progress=progress)
    else:
        report = verify_node_log(config, from_seq=from_seq, to_seq=to_seq,
                                 signatures=not no_signatures)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    sys.exit(0 if report.ok else 1)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _parse_date(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"expected an ISO date or time (2026-01-31 or "
                                 f"2026-01-31T12:00:00Z), got {value!r}") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@audit.command("archive")
@config_option
@click.option("--before", required=True, help="Archive batches checkpointed before this "
              "date/time (ISO 8601, UTC unless given).")
@click.option("--out", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Archive directory.")
@json_option
@handle_errors
@database_errors
def archive(config_path: Path, before: str, out_dir: Path, as_json: bool) -> None:
    """Move old records (whole timestamped batches) into a compressed archive file and
    purge them from the database; `audit verify` keeps checking them."""
    from secserver.audit.archive import archive_before

    config = load_or_fail(config_path)
    result = archive_before(config.database_url, config.node.server_id, _parse_date(before),
                            out_dir, now=datetime.now(UTC),
                            require_timestamps=bool(config.tsa.url))
    if result is None:
        if as_json:
            print_json({"archived": 0})
        else:
            click.echo("nothing to archive: no (timestamped) checkpoint before that date")
        return
    if as_json:
        print_json({"archived": result.records, "first_seq": result.first_seq,
                    "last_seq": result.last_seq, "path": str(result.path),
                    "sha256": result.file_sha256})
    else:
        click.echo(f"archived records {result.first_seq}..{result.last_seq} "
                   f"({result.records}) to {result.path}")


def _body_key(config: Any) -> bytes | None:
    from secserver.audit.body import parse_body_key
    from secserver.config import read_secret

    raw = read_secret(config.log.body_key_file, "[log] body_key_file")
    return None if raw is None else parse_body_key(raw)


def _message_evidence(config: Any, message_id: str, *, chosen: bool) -> list[Anchored]:
    """The records of one exchange on this node, each with the batch that anchors it:
    all of them, or (``chosen``) the request and response a bundle holds."""
    from secserver.audit.bundle import anchor_record, choose_records, message_records
    from secserver.audit.errors import AuditError
    from secserver.audit.store import archives, log_connection

    node = config.node.server_id
    with log_connection(config.database_url) as conn:
        archived = archives(conn, node)
        records = message_records(conn, node, message_id, archived)
        if not records:
            raise AuditError(f"no log record of message {message_id!r} on node {node}")
        return [anchor_record(conn, node, r, archived)
                for r in (choose_records(records) if chosen else records)]


@audit.command("show")
@config_option
@click.option("--id", "message_id", required=True, help="The message id (X-Road-Id).")
@json_option
@handle_errors
@database_errors
def show(config_path: Path, message_id: str, as_json: bool) -> None:
    """Show the log records of one exchange (request and response)."""
    from secserver.audit.bundle import plain_body
    from secserver.audit.errors import AuditError
    from secserver.audit.records import parse_fields

    config = load_or_fail(config_path)
    node = config.node.server_id
    key = _body_key(config)
    out: list[dict[str, Any]] = []
    for anchored in _message_evidence(config, message_id, chosen=False):
        record = anchored.record
        body_note: str | None = None
        try:
            body = plain_body(record, node, key)
        except AuditError as exc:
            body, body_note = None, exc.message
        out.append({
            "seq": record.seq, "hash": record.hash.hex(),
            "fields": parse_fields(record.content),
            "checkpoint": anchored.checkpoint.seq if anchored.checkpoint else None,
            "timestamped": anchored.token is not None,
            "body": None if body is None else body.decode("utf-8", "replace"),
            "body_note": body_note,
        })
    if as_json:
        print_json({"message_id": message_id, "node": node, "records": out})
        return
    for item in out:
        fields = item["fields"]
        click.echo(f"record {item['seq']} ({fields['direction']}, {fields['side']} side)"
                   f"  checkpoint: {item['checkpoint'] or 'not yet'}"
                   f"{', timestamped' if item['timestamped'] else ''}")
        for name, value in fields.items():
            if name not in ("record", "node", "kind"):
                click.echo(f"  {name}: {value}")
        if item["body"] is not None:
            click.echo(f"  body: {item['body']}")
        elif item["body_note"]:
            click.echo(f"  body: ({item['body_note']})")


@audit.command("export")
@config_option
@click.option("--id", "message_id", required=True, help="The message id (X-Road-Id).")
@click.option("--out", "out_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Bundle file (.zip).")
@handle_errors
@database_errors
def export(config_path: Path, message_id: str, out_path: Path) -> None:
    """Write the evidence bundle of one exchange (records, signatures, audit paths,
    checkpoint, timestamp, certificates) for offline checking."""
    from secserver.audit.bundle import build_bundle
    from secserver.audit.errors import AuditError

    config = load_or_fail(config_path)
    if not config.trust.ca_files:
        raise AuditError("no CA certificate to include: set [trust] ca_files")
    ca_pem = b"".join(path.read_bytes() for path in config.trust.ca_files)
    items = _message_evidence(config, message_id, chosen=True)
    data = build_bundle(config.node.server_id, message_id, items, ca_pem=ca_pem,
                        body_key=_body_key(config), created_at=datetime.now(UTC),
                        tsa_url=config.tsa.url)
    out_path.write_bytes(data)
    click.echo(f"wrote {out_path} ({len(data)} bytes, records "
               f"{', '.join(str(i.record.seq) for i in items)})")


@audit.command("verify-bundle")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ca", "ca_files", required=True, multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Trusted CA certificate (PEM); not the copy inside the bundle.")
@json_option
@handle_errors
def verify_bundle_command(bundle: Path, ca_files: tuple[Path, ...], as_json: bool) -> None:
    """Verify an evidence bundle offline, with nothing but the bundle and a trusted CA."""
    from secserver.audit.bundle import verify_bundle
    from secserver.signing.trust import TrustStore

    report = verify_bundle(bundle.read_bytes(), TrustStore.from_files(ca_files))
    if as_json:
        print_json(report.to_dict())
    else:
        for check in report.checks:
            click.echo(f"ok: {check}")
        for problem in report.problems:
            click.echo(f"PROBLEM: {problem}")
        click.echo(f"bundle of message {report.message_id} from {report.node}: "
                   + ("verified" if report.ok else "NOT verified"))
    sys.exit(0 if report.ok else 1)

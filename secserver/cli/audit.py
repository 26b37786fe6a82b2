"""``secserver audit``: verify the log, show and export one exchange, verify a bundle
offline, archive old records.

Exit codes: 0 success (for ``verify``/``verify-bundle``: no problem found), 1 a problem
was found or the command failed, 2 usage error.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from secserver.audit.verify import VerifyReport
from secserver.cli.options import (
    config_option,
    handle_errors,
    json_option,
    load_or_fail,
    print_json,
)


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

        with Progress("[progress.description]{task.description}", BarColumn(),
                      MofNCompleteColumn(), TimeRemainingColumn(),
                      console=_stderr_console(), transient=True) as bar:
            task = bar.add_task("verifying", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

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
def archive(config_path: Path, before: str, out_dir: Path, as_json: bool) -> None:
    """Move old records (whole timestamped batches) into a compressed archive file and
    purge them from the database; `audit verify` keeps checking them."""
    from secserver.audit.archive import archive_before

    config = load_or_fail(config_path)
    result = archive_before(config.database_url, config.node.server_id, _parse_date(before),
                            out_dir, now=datetime.now(UTC))
    if result is None:
        if as_json:
            print_json({"archived": 0})
        else:
            click.echo("nothing to archive: no timestamped checkpoint before that date")
        return
    if as_json:
        print_json({"archived": result.records, "first_seq": result.first_seq,
                    "last_seq": result.last_seq, "path": str(result.path),
                    "sha256": result.file_sha256})
    else:
        click.echo(f"archived records {result.first_seq}..{result.last_seq} "
                   f"({result.records}) to {result.path}")

"""``secserver sign`` and ``secserver verify``: message signatures for operators."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from secserver.cli.options import (
    config_option,
    fail,
    handle_errors,
    json_option,
    load_or_fail,
    print_json,
)
from secserver.errors import InvalidIdentifier
from secserver.identifiers import ClientId
from secserver.signing.signer import Signer, verify_message
from secserver.signing.trust import TrustStore


def _read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")


@click.command()
@config_option
@click.argument("document", metavar="IN")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the signature here instead of stdout.")
@handle_errors
def sign(config_path: Path, document: str, out_path: Path | None) -> None:
    """Sign IN ('-' for stdin) with the member key of [signing]; write a detached CMS
    signature (DER) to stdout or --out. Check it with `openssl cms -verify -binary
    -inform DER -content IN -CAfile ca.crt`."""
    config = load_or_fail(config_path)
    data = _read_input(document)
    signature = Signer.from_config(config).sign_now(data)
    if out_path is not None:
        out_path.write_bytes(signature)
    else:
        if sys.stdout.isatty():
            fail("refusing to write a binary signature to a terminal; redirect stdout or "
                 "use --out")
        sys.stdout.buffer.write(signature)
        sys.stdout.buffer.flush()


@click.command()
@config_option
@click.argument("document", metavar="IN")
@click.argument("signature", metavar="SIG", type=click.Path(dir_okay=False, exists=True,
                                                            path_type=Path))
@click.option("--member", "member_text", help="Require the signer to be this member "
              "(INSTANCE/CLASS/MEMBER[/SUBSYSTEM]).")
@click.option("--at", "at_text", help="Check certificate validity at this ISO 8601 time "
              "instead of now.")
@json_option
@handle_errors
def verify(config_path: Path, document: str, signature: Path, member_text: str | None,
           at_text: str | None, as_json: bool) -> None:
    """Verify SIG (single CMS or batch signature) over IN against the CAs of [trust];
    print who signed. Exit 1 if it does not verify."""
    config = load_or_fail(config_path)
    if not config.trust.ca_files:
        fail("[trust] ca_files is empty: no CA to verify against")
    try:
        expected = ClientId.parse(member_text) if member_text else None
    except InvalidIdentifier as exc:
        raise click.BadParameter(exc.message, param_hint="--member") from exc
    if at_text:
        try:
            now = datetime.fromisoformat(at_text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise click.BadParameter(f"{at_text!r} is not an ISO 8601 time",
                                     param_hint="--at") from exc
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
    else:
        now = datetime.now(UTC)
    trust = TrustStore.from_files(config.trust.ca_files)
    result = verify_message(_read_input(document), signature.read_bytes(), trust, now,
                            expected)
    subject = result.certificate.subject.rfc4514_string()
    info = {
        "ok": True,
        "member": str(result.member) if result.member else None,
        "certificate": subject,
        "signing_time": result.signing_time.isoformat() if result.signing_time else None,
        "batch": None if result.batch is None else
        {"index": result.batch.index, "size": result.batch.size},
    }
    if as_json:
        print_json(info)
    else:
        form = ("single" if result.batch is None
                else f"batch, document {result.batch.index + 1} of {result.batch.size}")
        click.echo(f"ok: signed by {info['member'] or subject} at {info['signing_time']} "
                   f"({form})")

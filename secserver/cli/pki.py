"""``secserver pki``: the development PKI."""

from __future__ import annotations

import os
from pathlib import Path

import click

from secserver.cli.options import handle_errors, json_option, print_json
from secserver.signing.errors import KeyUnavailable
from secserver.signing.pki import (
    DEV_MEMBERS,
    DEV_SERVERS,
    KEY_TYPES,
    KeyType,
    init_dev_pki,
)


def read_passphrase(env_var: str | None, file: Path | None) -> bytes | None:
    """A passphrase from an environment variable or a file (never a command-line value)."""
    if env_var and file:
        raise click.UsageError("give --passphrase-env or --passphrase-file, not both")
    if env_var:
        value = os.environ.get(env_var)
        if not value:
            raise KeyUnavailable(f"environment variable {env_var} (--passphrase-env) is not set "
                                 "or empty")
        return value.encode("utf-8")
    if file is not None:
        try:
            value_bytes = file.read_bytes().strip()
        except OSError as exc:
            raise KeyUnavailable(f"cannot read passphrase file {file}: {exc.strerror}") from exc
        if not value_bytes:
            raise KeyUnavailable(f"passphrase file {file} is empty")
        return value_bytes
    return None


passphrase_env_option = click.option(
    "--passphrase-env", metavar="VAR",
    help="Encrypt the private keys with the passphrase in this environment variable.")
passphrase_file_option = click.option(
    "--passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Encrypt the private keys with the passphrase in this file.")


@click.group()
def pki() -> None:
    """Development certificates and keys."""


@pki.command("init-dev")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False,
              path_type=Path), help="Directory to create the PKI in.")
@click.option("--key-type", type=click.Choice(KEY_TYPES), default="ec-p256", show_default=True)
@passphrase_env_option
@passphrase_file_option
@click.option("--force", is_flag=True, help="Replace an existing development PKI.")
@json_option
@handle_errors
def init_dev(directory: Path, key_type: KeyType, passphrase_env: str | None,
             passphrase_file: Path | None, force: bool, as_json: bool) -> None:
    """Create a development CA, member signing keys, server TLS and log keys, a TSA and a
    directory operator for instance JP-DEV (layout: docs/protocol.md)."""
    passphrase = read_passphrase(passphrase_env, passphrase_file)
    result = init_dev_pki(directory, key_type=key_type, passphrase=passphrase, force=force)
    files = {
        "ca": str(result.ca_cert),
        "tsa": str(result.tsa_cert),
        "operator": str(result.operator_cert),
        "members": {str(m): str(result.member_dir(m) / "sign.crt") for m, _ in DEV_MEMBERS},
        "servers": {str(s): str(result.server_dir(s)) for s in DEV_SERVERS},
    }
    if as_json:
        print_json({"ok": True, "key_type": key_type, "encrypted": passphrase is not None,
                    **files})
    else:
        click.echo(f"development PKI for JP-DEV ({key_type}"
                   f"{', keys encrypted' if passphrase else ''}) in {directory}")
        click.echo(f"  CA:       {files['ca']}")
        for member, subsystem in DEV_MEMBERS:
            click.echo(f"  member:   {member} (subsystem {subsystem}): "
                       f"{result.member_dir(member)}/sign.crt")
        for server in DEV_SERVERS:
            click.echo(f"  server:   {server}: {result.server_dir(server)}/tls.crt, log.crt")
        click.echo(f"  TSA:      {files['tsa']}")
        click.echo(f"  operator: {files['operator']}")

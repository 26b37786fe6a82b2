"""``secserver tsa``: the development RFC 3161 Time-Stamp Authority."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from secserver.cli.options import handle_errors
from secserver.cli.pki import passphrase_env_option, passphrase_file_option, read_passphrase
from secserver.signing.tsa import DevTsa, serve


@click.group()
def tsa() -> None:
    """Development timestamping (RFC 3161)."""


@tsa.command("serve")
@click.option("--dir", "directory", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Development PKI directory (uses DIR/tsa/tsa.crt and tsa.key).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port; the chosen one is printed).")
@passphrase_env_option
@passphrase_file_option
@handle_errors
def serve_command(directory: Path, host: str, port: int, passphrase_env: str | None,
                  passphrase_file: Path | None) -> None:
    """Answer RFC 3161 requests over HTTP until interrupted.

    Prints 'listening http://HOST:PORT/' on stdout once ready.
    """
    authority = DevTsa.from_directory(directory, read_passphrase(passphrase_env,
                                                                 passphrase_file))

    def ready(bound: int) -> None:
        click.echo(f"listening http://{host}:{bound}/")

    asyncio.run(serve(authority, host, port, ready))

"""``secserver demo``: set up two members' nodes, a TSA and two services; run the scenario."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import click

from secserver.cli.options import fail_config
from secserver.errors import ConfigError, SecServerError


def _wait_forever() -> None:
    threading.Event().wait()


@click.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Keep everything in DIR (consumer.toml, provider.toml, pki/, data/, "
                   "logs/); default: a temporary directory, removed afterwards.")
@click.option("--keep-running", is_flag=True,
              help="After the scenario, keep every process up until Ctrl-C and print the URLs.")
def demo(directory: Path | None, keep_running: bool) -> None:
    """Run the end-to-end demo on 127.0.0.1 with the embedded SQLite database.

    Sets up a development PKI, TOYONO's and OTTA's security servers, a development TSA and
    the two sample services, registers services and rights, then runs: an allowed REST
    call, an allowed SOAP call, a call without a right, a personal-data call without
    consent, and the same call after consent is recorded. Exit 0 only if every step
    behaved as expected.
    """
    from secserver.demo import run_demo

    def progress(text: str) -> None:
        click.echo(f"... {text}", err=True)

    try:
        result = run_demo(directory, keep_running=keep_running, echo=click.echo,
                          echo_progress=progress, wait_forever=_wait_forever)
    except KeyboardInterrupt:
        click.echo("error: interrupted; every process the demo started is stopped", err=True)
        sys.exit(1)
    except ConfigError as exc:
        fail_config(exc, "the demo's configuration")
    except SecServerError as exc:
        click.echo(f"error: demo set-up failed: {exc.message}", err=True)
        if exc.detail:
            click.echo(exc.detail, err=True)
        sys.exit(1)
    if directory is not None:
        click.echo(f"node configurations: {result.directory / 'consumer.toml'} and "
                   f"{result.directory / 'provider.toml'}")
    sys.exit(0 if result.ok else 1)

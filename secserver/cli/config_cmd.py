"""``secserver config``: check a node configuration."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from secserver.cli.options import print_json
from secserver.config import load_config
from secserver.errors import ConfigError


@click.group()
def config() -> None:
    """Inspect node configuration files."""


@config.command("check")
@click.option("--config", "config_path", required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Node configuration (TOML).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def check(config_path: Path, as_json: bool) -> None:
    """Report every problem in a configuration at once (exit 1 if there are any)."""
    try:
        loaded = load_config(config_path)
    except ConfigError as exc:
        if as_json:
            print_json({"ok": False, "problems": exc.problems})
        else:
            click.echo(f"{config_path}: {len(exc.problems)} problem(s)")
            for problem in exc.problems:
                click.echo(f"  - {problem}")
        sys.exit(1)
    if as_json:
        print_json({"ok": True, "server_id": str(loaded.server_id),
                    "database": loaded.database_url.split("@")[-1]})
    else:
        click.echo(f"{config_path}: ok (node {loaded.server_id})")

"""``secserver db``: schema migrations."""

from __future__ import annotations

from pathlib import Path

import click

from secserver.cli.options import config_option, load_or_fail
from secserver.db import migrate


@click.group()
def db() -> None:
    """Manage the node database schema (Alembic migrations)."""


@db.command("upgrade")
@config_option
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def upgrade(config_path: Path, revision: str) -> None:
    """Upgrade the database schema."""
    config = load_or_fail(config_path)
    migrate.upgrade(config.database_url, revision)
    click.echo(f"database at revision {migrate.current_revision(config.database_url)}")


@db.command("current")
@config_option
def current(config_path: Path) -> None:
    """Print the current schema revision and the newest one shipped."""
    config = load_or_fail(config_path)
    click.echo(f"current: {migrate.current_revision(config.database_url) or 'empty'}")
    click.echo(f"head:    {migrate.head_revision()}")

"""Shared fixtures: databases (SQLite and a real PostgreSQL), temporary directories."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from postgres import create_database, find_pg_bin, running_postgres

from secserver.db import migrate

_pg_skipped: list[str] = []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """URL of a PostgreSQL server started for this test session.

    Missing binaries fail the run under CI (CI=true) and skip loudly elsewhere.
    """
    if find_pg_bin() is None:
        message = ("PostgreSQL server binaries not found: install Debian's 'postgresql' "
                   "package; PostgreSQL tests cannot run")
        if os.environ.get("CI"):
            pytest.fail(message)
        _pg_skipped.append(message)
        pytest.skip(message)
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, or a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'secserver.db'}"
    server: str = request.getfixturevalue("postgres_server")
    return create_database(server)


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A database with every Alembic migration applied (never ``create_all``)."""
    migrate.upgrade(database_url)
    return database_url


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _pg_skipped:
        terminalreporter.section("POSTGRESQL MISSING", sep="!", red=True, bold=True)
        terminalreporter.line(_pg_skipped[0], red=True)

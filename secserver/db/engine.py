"""Engines for the CLI (synchronous) and the server (asyncio), SQLite or PostgreSQL.

URLs are given in their plain form (``sqlite:///path``, ``postgresql://...``); the
driver is chosen here: pysqlite / psycopg for synchronous use, aiosqlite / asyncpg for
the server. SQLite runs in WAL mode with foreign keys on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _driver_url(url: str, *, asynchronous: bool) -> str:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        driver = "aiosqlite" if asynchronous else "pysqlite"
    elif backend == "postgresql":
        driver = "asyncpg" if asynchronous else "psycopg"
    else:
        raise ValueError(f"unsupported database {backend!r}; use sqlite or postgresql")
    return parsed.set(drivername=f"{backend}+{driver}").render_as_string(hide_password=False)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _ensure_sqlite_dir(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """A synchronous engine (CLI, migrations, tests)."""
    if is_sqlite(url):
        _ensure_sqlite_dir(url)
    engine = create_engine(_driver_url(url, asynchronous=False), **kwargs)
    if is_sqlite(url):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def make_async_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An asyncio engine (the server)."""
    if is_sqlite(url):
        _ensure_sqlite_dir(url)
    engine = create_async_engine(_driver_url(url, asynchronous=True), **kwargs)
    if is_sqlite(url):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)

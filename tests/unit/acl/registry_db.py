"""What the registry tests share: a session on a migrated database (SQLite and PostgreSQL)
and the identifiers of a provider, its service and a consumer.

Test modules take the fixture with ``from registry_db import registry_session  # noqa: F401``
and ask for ``session``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from secserver.db.engine import make_engine, session_factory

PROVIDER = "JP-DEV/GOV/TOYONO/RESIDENTS"
SERVICE = f"{PROVIDER}/population"
CONSUMER = "JP-DEV/COM/OTTA/TAGS"


@pytest.fixture(name="session")
def registry_session(migrated_url: str) -> Iterator[Session]:
    """A session on a database with every migration applied."""
    engine = make_engine(migrated_url)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()

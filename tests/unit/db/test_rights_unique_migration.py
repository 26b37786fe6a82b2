"""Migration 0004_rights_unique: duplicate rights left by racing grants are merged, then
the database holds one row per right (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from secserver.db import migrate
from secserver.db.engine import make_engine


def test_duplicates_are_merged_and_refused_afterwards(database_url: str) -> None:
    migrate.upgrade(database_url, "0003_exchange")
    engine = make_engine(database_url)
    right = ("INSERT INTO rights (subject_kind, subject_{kind}_id, service_id, endpoint_id,"
             " granted_at, granted_by) VALUES ('{kind}', 1, 1, {endpoint},"
             " '2026-01-0{day} 00:00:00+00:00', '{by}')")
    try:
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO members (instance, member_class, member_code, name)"
                              " VALUES ('JP-DEV', 'GOV', 'T', '')"))
            c.execute(sa.text("INSERT INTO subsystems (member_id, code, local, auth, allowlist)"
                              " VALUES (1, 'S', false, 'none', '[]')"))
            c.execute(sa.text("INSERT INTO services (subsystem_id, code, backend_url, timeout,"
                              " requires_consent, log_body)"
                              " VALUES (1, 'svc', 'http://x/', 1, false, 'digest')"))
            c.execute(sa.text("INSERT INTO endpoints (service_id, method, path)"
                              " VALUES (1, 'GET', '/x')"))
            for kind, endpoint, day, by in [("subsystem", "NULL", 1, "first"),
                                            ("subsystem", "NULL", 2, "racer"),
                                            ("member", "NULL", 3, "member"),
                                            ("subsystem", "1", 4, "endpoint"),
                                            ("subsystem", "1", 5, "racer")]:
                c.execute(sa.text(right.format(kind=kind, endpoint=endpoint, day=day, by=by)))
        migrate.upgrade(database_url)
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT id, granted_by, identity_key FROM rights"
                                     " ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "first", "subsystem:1>1:*"),
                                            (3, "member", "member:1>1:*"),
                                            (4, "endpoint", "subsystem:1>1:1")]
        late = right.format(kind="subsystem", endpoint="NULL", day=6, by="late")
        keyed = late.replace(") VALUES (", ", identity_key) VALUES (").removesuffix(")") \
            + ", 'subsystem:1>1:*')"
        with pytest.raises(sa.exc.IntegrityError, match="identity_key"), engine.begin() as c:
            c.execute(sa.text(keyed))
        migrate.downgrade(database_url, "0003_exchange")
        with engine.begin() as c:  # the old schema again: duplicates are possible
            c.execute(sa.text(late))
    finally:
        engine.dispose()

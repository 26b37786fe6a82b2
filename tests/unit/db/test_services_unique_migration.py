"""Migration 0005_services_unique: one row per service id, also for unversioned services
(SQLite and PostgreSQL); services already registered twice stop the upgrade, named."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from secserver.db import migrate
from secserver.db.engine import make_engine

SERVICE = ("INSERT INTO services (subsystem_id, code, version, backend_url, timeout,"
           " requires_consent, log_body) VALUES (1, 'svc', {version}, 'http://x/', 1, false,"
           " 'digest')")


def test_unique_service_ids(database_url: str) -> None:
    migrate.upgrade(database_url, "0004_rights_unique")
    engine = make_engine(database_url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO members (instance, member_class, member_code, name)"
                              " VALUES ('JP-DEV', 'GOV', 'T', '')"))
            c.execute(sa.text("INSERT INTO subsystems (member_id, code, local, auth, allowlist)"
                              " VALUES (1, 'S', false, 'none', '[]')"))
            for version in ("NULL", "NULL", "'v1'"):
                c.execute(sa.text(SERVICE.format(version=version)))
        with pytest.raises(RuntimeError, match=r"services registered more than once "
                                               r"\(subsystem row 1, service 'svc', version "
                                               r"None: 2 rows\)"):
            migrate.upgrade(database_url)
        assert migrate.current_revision(database_url) == "0004_rights_unique"
        with engine.begin() as c:
            c.execute(sa.text("DELETE FROM services WHERE id = 2"))
        migrate.upgrade(database_url)
        with engine.connect() as c:
            rows = c.execute(sa.text("SELECT id, version, version_key FROM services"
                                     " ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, None, ""), (3, "v1", "v1")]
        keyed = SERVICE.replace("version,", "version, version_key,").format(
            version="NULL, ''")
        refused = r"uq_services_identity|services\.version_key"  # PostgreSQL | SQLite
        with pytest.raises(sa.exc.IntegrityError, match=refused), engine.begin() as c:
            c.execute(sa.text(keyed))
        if not database_url.startswith("sqlite"):  # SQLite has no way to add the CHECK
            with pytest.raises(sa.exc.IntegrityError, match="version_key"), \
                    engine.begin() as c:
                c.execute(sa.text(SERVICE.replace("version,", "version, version_key,").format(
                    version="'v2', 'v3'")))
        migrate.downgrade(database_url, "0004_rights_unique")
        migrate.upgrade(database_url)
    finally:
        engine.dispose()

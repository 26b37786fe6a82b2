"""The models and the migration describe the same schema."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import secserver.acl.models as models
from secserver.db.base import Base
from secserver.db.engine import make_engine


def test_models_match_the_migration(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    ours = {t.name for t in Base.metadata.sorted_tables if t.name in {
        models.Member.__tablename__, models.Subsystem.__tablename__, models.Service.__tablename__,
        models.Endpoint.__tablename__, models.LocalGroup.__tablename__,
        models.GroupMember.__tablename__, models.Right.__tablename__,
        models.Consent.__tablename__, models.AdminEvent.__tablename__,
        models.RegistryVersion.__tablename__}}
    assert len(ours) == 10

    def touches_ours(entry: object) -> bool:
        return any(name in repr(entry) for name in ours)

    assert [d for d in diff if touches_ours(d)] == []

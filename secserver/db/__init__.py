"""Database access: engines, the declarative base and Alembic migrations."""

"""Alembic's migrations build exactly the tables the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import service.core.audit  # noqa: F401  (registers the audit tables)
import service.core.orm  # noqa: F401
from service.core.db import Base, make_engine
from service.core.migrate import upgrade


def test_migrations_match_the_models(database_url: str):
    upgrade(database_url)
    upgrade(database_url)  # a second run is a no-op
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
    finally:
        engine.dispose()

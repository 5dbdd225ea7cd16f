"""Alembic environment: dpsynth's metadata, the URL from Settings (or the caller's config)."""

from __future__ import annotations

from alembic import context

import service.core.audit  # noqa: F401  (registers the audit tables on Base.metadata)
import service.core.orm  # noqa: F401  (registers the service tables)
from service.core.config import get_settings
from service.core.db import Base, make_engine

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database


def run_offline() -> None:
    """Emit SQL without a database connection (``alembic upgrade --sql``)."""
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate a live database."""
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            compare_type=True,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

"""The SQLAlchemy engine, session factory and declarative base.

SQLite (the embedded default) runs every transaction as ``BEGIN IMMEDIATE``: the write
lock is taken at the start, so two transactions that both read the remaining budget and
then reserve it cannot interleave (on Postgres the ledger locks the dataset row
instead). ``secure_delete`` overwrites deleted content, so an erased dataset key does
not linger in free pages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base of every table; constraint names are stable for Alembic."""

    metadata = MetaData(naming_convention=NAMING)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level; SQLAlchemy's begin event below issues BEGIN itself.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000", "secure_delete=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with dpsynth's SQLite settings when it is SQLite."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit (rows are returned to callers)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any exception.

    Callbacks registered with ``after_commit`` run once the commit succeeded (e.g. sending
    a job's message, so a worker never looks for a row that is not committed yet).
    """
    with factory() as session:
        with session.begin():
            yield session
        for callback in session.info.pop("after_commit", []):
            callback()


def after_commit(session: Session, callback: Callable[[], object]) -> None:
    """Run ``callback`` after the transaction of ``session`` (opened by ``transaction``) commits."""
    session.info.setdefault("after_commit", []).append(callback)

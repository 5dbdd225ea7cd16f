"""Fixtures for tests against real servers: throwaway PostgreSQL and Redis.

The servers are started once per session on free ports. When a server's binaries are
not installed the fixtures skip, unless DPSYNTH_REQUIRE_SERVERS is set (scripts/test.sh
sets it), in which case they fail: in CI a missing server is an error, not a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.integration.live import LiveService, live_service, service_settings
from tests.integration.servers import (
    PostgresServer,
    RedisServer,
    postgres_missing,
    redis_missing,
    unavailable,
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session; tests should use their own database."""
    unavailable(postgres_missing())
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis server for the session (no persistence); `restart()` keeps its port."""
    unavailable(redis_missing())
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis URL, emptied (FLUSHALL) before the test; restarted if a test stopped it."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.restart()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """SQLAlchemy URL of a fresh, empty database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def service(tmp_path) -> Iterator[LiveService]:
    """A live API on SQLite (the embedded default) in ``tmp_path``."""
    with live_service(service_settings(tmp_path / "data")) as live:
        yield live


@pytest.fixture
def service_any_db(tmp_path, database_url: str) -> Iterator[LiveService]:
    """A live API on SQLite, then on PostgreSQL."""
    with live_service(service_settings(tmp_path / "data", database_url)) as live:
        yield live

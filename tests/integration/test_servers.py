"""The throwaway servers and the database fixtures work."""

from __future__ import annotations

import redis
import sqlalchemy as sa

from tests.integration.servers import PostgresServer, RedisServer


def test_postgres_accepts_sqlalchemy(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert conn.execute(sa.text("SHOW fsync")).scalar_one() == "off"
    finally:
        engine.dispose()


def test_postgres_databases_are_isolated(postgres_server: PostgresServer) -> None:
    first = postgres_server.create_database()
    second = postgres_server.create_database()
    engines = [sa.create_engine(postgres_server.url(name)) for name in (first, second)]
    try:
        with engines[0].begin() as conn:
            conn.execute(sa.text("CREATE TABLE only_here (x integer)"))
            conn.execute(sa.text("INSERT INTO only_here VALUES (1)"))
        assert sa.inspect(engines[0]).has_table("only_here")
        assert not sa.inspect(engines[1]).has_table("only_here")
    finally:
        for engine in engines:
            engine.dispose()
        postgres_server.drop_database(first)
        postgres_server.drop_database(second)


def test_redis_ping_and_restart_on_same_port(redis_server: RedisServer, redis_url: str) -> None:
    port = redis_server.port
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping()
        client.set("queued", "job")
        redis_server.restart()
        assert redis_server.port == port
        assert redis_server.url == redis_url
        # The pool reconnects to the restarted server; nothing was persisted.
        assert client.ping()
        assert client.get("queued") is None


def test_redis_url_is_emptied_per_test(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.dbsize() == 0


def test_database_url_gives_working_engine(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    try:
        metadata = sa.MetaData()
        table = sa.Table(
            "item", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String)
        )
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"name": "a"}, {"name": "b"}])
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one() == 2
        expected = "sqlite" if database_url.startswith("sqlite") else "postgresql"
        assert engine.dialect.name == expected
    finally:
        engine.dispose()

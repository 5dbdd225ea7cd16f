"""A real dpsynth API on a free port, served by uvicorn in a thread of the test process.

Real HTTP, a real database (SQLite or PostgreSQL), real storage on disk and a real
SQLite broker; only the worker is absent (tests that train start ``dpsynth worker``).
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from service.api.main import create_app
from service.core.config import Settings
from service.core.db import make_engine, make_sessionmaker, transaction
from service.core.migrate import upgrade
from service.core.orm import Role, Tenant
from service.core.security import create_key, create_tenant
from tests.integration.servers import free_port


@dataclass
class LiveService:
    """A running API and a way to make tenants and keys behind its back."""

    url: str
    settings: Settings
    sessions: sessionmaker[Session]
    _tenants: dict[str, str] = field(default_factory=dict)

    def tenant(self, name: str) -> str:
        """The id of tenant ``name``, created on first use."""
        if name not in self._tenants:
            with transaction(self.sessions) as session:
                existing = session.query(Tenant).filter(Tenant.name == name).first()
                self._tenants[name] = existing.id if existing else create_tenant(session, name).id
        return self._tenants[name]

    def key(self, role: Role | str, tenant: str = "acme") -> str:
        """A new API key token."""
        with transaction(self.sessions) as session:
            _, token = create_key(session, tenant_id=self.tenant(tenant), role=Role(role), name=str(role))
        return token

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for the API, authenticated with ``token`` when given."""
        headers = {"X-API-Key": token} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def service_settings(data_dir: Path, database_url: str | None = None, **overrides: object) -> Settings:
    """Settings for a throwaway service under ``data_dir``."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        encryption_key=base64.b64encode(os.urandom(32)).decode(),
        **overrides,
    )


@contextmanager
def live_service(settings: Settings) -> Iterator[LiveService]:
    """Migrate, serve, yield, stop."""
    upgrade(settings.database)
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test API did not start")
        time.sleep(0.02)
    engine = make_engine(settings.database)
    try:
        yield LiveService(
            url=f"http://127.0.0.1:{port}", settings=settings, sessions=make_sessionmaker(engine)
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()

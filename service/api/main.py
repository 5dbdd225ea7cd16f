"""The FastAPI app factory: ``create_app(settings)`` builds everything the routes use.

Migrations are not run here: ``dpsynth migrate`` (or ``dpsynth serve``, before it starts
the app) runs ``alembic upgrade head`` as a one-shot step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import web
from service.api import errors
from service.api.deps import Services
from service.api.routes import audit, batches, datasets, jobs, keys, releases, statements
from service.core.config import Settings, get_settings
from service.core.db import make_engine, make_sessionmaker
from service.core.storage import Storage
from workers.app import create_celery, prepare_broker


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API for ``settings`` (default: from the environment).

    Raises:
        RuntimeError: production mode without explicit secrets and URLs.
    """
    settings = settings or get_settings()
    settings.check_production()
    settings.master_key()  # fail at startup, not at the first upload
    settings.signing_seed()  # nor at the first audit bundle

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        prepare_broker(settings)
        engine = make_engine(settings.database)
        app.state.services = Services(
            settings=settings,
            sessions=make_sessionmaker(engine),
            storage=Storage(settings.storage),
            celery=create_celery(settings),
        )
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="dpsynth",
        summary="Differentially private synthetic tables with a recorded, auditable guarantee.",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in (datasets, statements, jobs, batches, releases, audit, keys):
        app.include_router(module.router)

    web.install(app, settings)  # the web form under /ui/ (service/web)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    return app

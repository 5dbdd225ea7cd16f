"""The web form for people who do not write code: server-rendered pages under ``/ui/``.

The pages sit on the API's own route functions and role sets (``service.api``): a page
that submits a job calls ``service.api.routes.jobs.submit_job`` with the logged-in user
as the caller, so the checks, the ledger and the audit log are exactly the API's. Only
authentication differs: a signed session cookie (``SessionMiddleware``) holding the
user's id instead of an API key, and a per-session CSRF token on every POST.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from service.core.config import Settings
from service.web import errors
from service.web.deps import STATIC, SecurityHeaders
from service.web.routes import audit, auth, datasets, jobs, releases, schema

SESSION_COOKIE = "dpsynth_session"


def install(app: FastAPI, settings: Settings) -> None:
    """Add the web form to ``app``: session middleware, pages, static files, error pages.

    Raises:
        RuntimeError: production mode without ``DPSYNTH_SESSION_SECRET``.
    """
    app.add_middleware(SecurityHeaders, prefix="/ui")
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_key(),
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age,
        path="/ui",
        same_site="lax",
        https_only=settings.cookies_https_only,
    )
    for module in (auth, datasets, schema, jobs, releases, audit):
        app.include_router(module.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="static")
    errors.install(app)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        """The web form."""
        return RedirectResponse("/ui/", status_code=307)

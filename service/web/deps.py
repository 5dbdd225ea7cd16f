"""The web form's plumbing: who is logged in, CSRF, templates, security headers.

``web_caller`` turns the session's user id into the same ``Principal`` the API builds
from a key (``actor`` = ``user:<id>``), and the role aliases below use the API's role
sets with ``require``, so a page lets through exactly whom its API route would.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import (
    AUDITOR,
    CUSTODIAN,
    LEDGER_READERS,
    RELEASE_READERS,
    Principal,
    ServicesDep,
    require,
)
from service.core.db import transaction
from service.core.errors import PermissionDeniedError
from service.core.orm import Role, Tenant, User
from service.web import charts, formats

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(formats.FILTERS)
templates.env.globals["stacked_bar"] = charts.stacked_bar

USER_KEY, CSRF_KEY, LOGIN_AT_KEY, FLASH_KEY = "user_id", "csrf", "login_at", "flash"
CSRF_FIELD, CSRF_HEADER = "csrf_token", "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# What each role finds in the navigation; the pages themselves check roles on the server.
NAV: dict[Role, list[tuple[str, str]]] = {
    Role.custodian: [
        ("Datasets", "/ui/datasets"),
        ("Jobs", "/ui/jobs"),
        ("Releases", "/ui/releases"),
        ("Budget ledgers", "/ui/ledgers"),
    ],
    Role.analyst: [("Releases", "/ui/releases")],
    Role.auditor: [
        ("Budget ledgers", "/ui/ledgers"),
        ("Audit log", "/ui/audit"),
        ("Evidence bundles", "/ui/evidence"),
    ],
    Role.admin: [],
}


class LoginRequired(Exception):  # noqa: N818 (a signal, not an error: it redirects to the login page)
    """No live session: the error handler sends the browser to the login page."""


@dataclass(frozen=True)
class WebUser:
    """The logged-in user as the pages show them."""

    principal: Principal
    name: str
    tenant_name: str

    @property
    def role(self) -> Role:
        """The user's role."""
        return self.principal.role


def get_web_user(request: Request, services: ServicesDep) -> WebUser:
    """The user behind the session cookie, re-read on every request (a disabled user is out at once).

    Raises:
        LoginRequired: no session, an expired one, or a user that is gone or disabled.
    """
    user_id = request.session.get(USER_KEY)
    login_at = request.session.get(LOGIN_AT_KEY, 0)
    if not user_id or time.time() - login_at > services.settings.session_max_age:
        request.session.pop(USER_KEY, None)
        raise LoginRequired
    with transaction(services.sessions) as session:
        user = session.get(User, user_id)
        tenant = session.get(Tenant, user.tenant_id) if user is not None else None
        if user is None or tenant is None or user.disabled_at is not None:
            request.session.clear()
            raise LoginRequired
        found = WebUser(
            principal=Principal(id=user.id, tenant_id=user.tenant_id, role=user.role, via="user"),
            name=user.name,
            tenant_name=tenant.name,
        )
    request.state.web_user = found
    return found


WebUserDep = Annotated[WebUser, Depends(get_web_user)]


def web_caller(user: WebUserDep) -> Principal:
    """The logged-in user as the API's ``Principal``."""
    return user.principal


AnyUser = Annotated[Principal, Depends(web_caller)]
Custodian = Annotated[Principal, Depends(require(*CUSTODIAN, source=web_caller))]
Auditor = Annotated[Principal, Depends(require(*AUDITOR, source=web_caller))]
ReleaseReader = Annotated[Principal, Depends(require(*RELEASE_READERS, source=web_caller))]
LedgerReader = Annotated[Principal, Depends(require(*LEDGER_READERS, source=web_caller))]


def csrf_token(request: Request) -> str:
    """The session's synchronizer token, made on first use."""
    token = request.session.get(CSRF_KEY)
    if not token:
        token = request.session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


async def check_csrf(request: Request) -> None:
    """Every POST (any unsafe method) carries the session's token, as a form field or header.

    The header is read first, so a raw upload body is never parsed as a form.

    Raises:
        PermissionDeniedError: the token is missing or wrong (a 403).
    """
    if request.method in SAFE_METHODS:
        return
    expected = request.session.get(CSRF_KEY)
    given = request.headers.get(CSRF_HEADER)
    content_type = request.headers.get("content-type", "")
    if given is None and content_type.startswith("application/x-www-form-urlencoded"):
        value = (await request.form()).get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
        raise PermissionDeniedError(
            "this form is missing its security token, or the token is out of date; "
            "reload the page and try again"
        )


def web_router() -> APIRouter:
    """A router for pages: not in the API's OpenAPI, and every POST checked for CSRF."""
    return APIRouter(prefix="/ui", include_in_schema=False, dependencies=[Depends(check_csrf)])


async def read_form(request: Request) -> FormData:
    """The submitted form (already parsed by the CSRF check, so read once)."""
    return await request.form()


FormDep = Annotated[FormData, Depends(read_form)]


def flash(request: Request, message: str) -> None:
    """A one-time notice shown on the next page."""
    request.session[FLASH_KEY] = message


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> Response:
    """A page with the header's user, the navigation, the CSRF token and any flash message."""
    user: WebUser | None = getattr(request.state, "web_user", None)
    base = {
        "user": user,
        "nav": NAV[user.role] if user else [],
        "path": request.url.path,
        "section": None,  # a page outside its nav item's path names it (e.g. a ledger under /datasets)
        "csrf_token": csrf_token(request),
        "flash": request.session.pop(FLASH_KEY, None),
    }
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Pure ASGI middleware: strict CSP and friends on the web form's responses, pages not cached."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers to responses under ``prefix``."""
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{self.prefix}/static/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)

"""Log in, log out, and the start page of each role.

A login reads the user row in one short transaction, runs scrypt outside any
transaction (the database is not locked while it hashes) and then audits the outcome
(``auth.login`` or ``auth.failure``) in another. The session is cleared on login, so a
token planted before it (session fixation, an old CSRF token) does not survive.
"""

from __future__ import annotations

import time
from typing import Annotated

import anyio
from fastapi import Query, Request
from fastapi.responses import RedirectResponse, Response

from service.api.deps import ServicesDep
from service.core import audit
from service.core.db import transaction
from service.core.errors import AuthenticationError
from service.core.security import LoginCandidate, check_password, find_login
from service.web.deps import (
    LOGIN_AT_KEY,
    NAV,
    USER_KEY,
    FormDep,
    WebUserDep,
    csrf_token,
    flash,
    render,
    web_router,
)
from service.web.errors import safe_next

router = web_router()


@router.get("/")
def home(user: WebUserDep) -> Response:
    """Each role starts on its first page."""
    pages = NAV[user.role]
    return RedirectResponse(pages[0][1] if pages else "/ui/account", status_code=303)


@router.get("/account")
def account(request: Request, user: WebUserDep) -> Response:
    """Who is logged in; admins find how to manage users and keys."""
    return render(request, "account.html")


@router.get("/login")
def login_page(request: Request, next: Annotated[str | None, Query()] = None) -> Response:
    """The login form."""
    if request.session.get(USER_KEY):
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", next=safe_next(next), values={}, errors={})


@router.post("/login")
async def login(request: Request, form: FormDep, services: ServicesDep) -> Response:
    """Check the name and password; on success start a fresh session."""
    name = str(form.get("name", "")).strip()
    password = str(form.get("password", ""))
    target = safe_next(str(form.get("next", "")))
    if not name or not password:
        errors = {"name": "Enter your user name."} if not name else {}
        if not password:
            errors["password"] = "Enter your password."
        return render(
            request, "login.html", status_code=422, next=target, values={"name": name}, errors=errors
        )

    def read() -> LoginCandidate:
        with transaction(services.sessions) as session:
            return find_login(session, name)

    candidate = await anyio.to_thread.run_sync(read)
    try:
        user_id = await anyio.to_thread.run_sync(check_password, candidate, password)
    except AuthenticationError:
        await anyio.to_thread.run_sync(_audit_failure, services, candidate, request.url.path)
        errors = {"password": "The user name or password is not right."}
        return render(
            request, "login.html", status_code=401, next=target, values={"name": name}, errors=errors
        )
    await anyio.to_thread.run_sync(_audit, services, "auth.login", user_id, candidate.tenant_id)
    request.session.clear()
    request.session.update({USER_KEY: user_id, LOGIN_AT_KEY: time.time()})
    csrf_token(request)
    return RedirectResponse(target, status_code=303)


def _audit(services: ServicesDep, action: str, user_id: str, tenant_id: str | None) -> None:
    with transaction(services.sessions) as session:
        audit.append(
            session,
            action=action,
            actor=f"user:{user_id}",
            tenant_id=tenant_id,
            object_type="user",
            object_id=user_id,
            details={"via": "web"},
        )


def _audit_failure(services: ServicesDep, candidate: LoginCandidate, path: str) -> None:
    # A known user's failures go to their tenant's log; the typed name is not logged (people
    # type passwords into the name field), only whether it named a user.
    user_id = candidate.user_id
    with transaction(services.sessions) as session:
        audit.append(
            session,
            action="auth.failure",
            actor="anonymous",
            tenant_id=candidate.tenant_id,
            object_type="user" if user_id else None,
            object_id=user_id,
            details={"path": path, "method": "POST", "via": "web", "known_user": user_id is not None},
        )


@router.post("/logout")
def logout(request: Request, user: WebUserDep, services: ServicesDep) -> Response:
    """End the session."""
    _audit(services, "auth.logout", user.principal.id, user.principal.tenant_id)
    request.session.clear()
    flash(request, "You are logged out.")
    return RedirectResponse("/ui/login", status_code=303)

"""Shared dependencies: the settings, a transaction per request, the caller, access checks.

Access is checked here once, not in each route: ``Caller`` authenticates the key,
``require(...)`` checks the role, and ``owned(...)`` loads an object only if it belongs
to the caller's tenant (another tenant's object is a 404, so ids cannot be probed).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from celery import Celery
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session, sessionmaker

from service.core import audit
from service.core.config import Settings
from service.core.db import transaction
from service.core.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from service.core.orm import Role
from service.core.security import authenticate
from service.core.storage import Storage


@dataclass(frozen=True)
class Services:
    """What the app builds once at startup (see ``main.create_app``)."""

    settings: Settings
    sessions: sessionmaker[Session]
    storage: Storage
    celery: Celery


def get_services(request: Request) -> Services:
    """The app's services."""
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    """One transaction per request: committed when the route returns, rolled back on error."""
    with transaction(services.sessions) as session:
        yield session


# scope="function": the transaction commits (and its after-commit callbacks run) before the
# response is sent, so a client never sees a 2xx for a write that is not committed yet, and a
# failed commit is reported as an error. FastAPI's default for yield dependencies is to exit
# only after the response has gone out.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    key_id: str
    tenant_id: str
    role: Role

    @property
    def actor(self) -> str:
        """How the audit log names the caller."""
        return f"key:{self.key_id}"


def get_caller(
    request: Request,
    services: ServicesDep,
    x_api_key: Annotated[str | None, Header(description="dps_... API key")] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """The caller behind the request's API key (``X-API-Key`` or ``Authorization: Bearer``).

    Runs in its own short transaction, so a failure can be audited and committed, and a
    long request (an upload) holds no database lock while it streams.
    """
    token = x_api_key
    if token is None and authorization and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    with transaction(services.sessions) as session:
        try:
            key = authenticate(session, token)
        except AuthenticationError as exc:
            failure = exc
            audit.append(
                session,
                action="auth.failure",
                actor="anonymous",
                details={"path": request.url.path, "method": request.method, "had_key": token is not None},
            )
        else:
            return Principal(key_id=key.id, tenant_id=key.tenant_id, role=key.role)
    raise failure


Caller = Annotated[Principal, Depends(get_caller)]


def require(*roles: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets only ``roles`` through."""

    def check(caller: Caller) -> Principal:
        if caller.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise PermissionDeniedError(f"this needs the role {allowed}; your key is {caller.role.value}")
        return caller

    return check


Custodian = Annotated[Principal, Depends(require(Role.custodian))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
Auditor = Annotated[Principal, Depends(require(Role.auditor))]
ReleaseReader = Annotated[Principal, Depends(require(Role.custodian, Role.analyst, Role.auditor))]
LedgerReader = Annotated[Principal, Depends(require(Role.custodian, Role.auditor))]

T = TypeVar("T")

# Object ids are uuid4 hex (API key ids 16 hex digits); anything else cannot name an object,
# and is not sent to the database (PostgreSQL refuses NUL characters with an error).
_OBJECT_ID = re.compile(r"[0-9a-f]{1,64}")


def is_object_id(value: str) -> bool:
    """Whether ``value`` has the shape of an object id."""
    return _OBJECT_ID.fullmatch(value) is not None


def owned(session: Session, model: type[T], object_id: str, caller: Principal, *, lock: bool = False) -> T:
    """``model`` row ``object_id`` if it is in the caller's tenant.

    Raises:
        NotFoundError: missing or another tenant's (indistinguishable on purpose).
    """
    if not is_object_id(object_id):
        raise NotFoundError(f"no {model.__name__.lower()} {object_id!r}")
    query: Any = session.query(model).filter(model.id == object_id)  # type: ignore[attr-defined]
    if lock:
        query = query.with_for_update()
    row = query.one_or_none()
    if row is None or row.tenant_id != caller.tenant_id:  # type: ignore[attr-defined]
        raise NotFoundError(f"no {model.__name__.lower()} {object_id!r}")
    return row

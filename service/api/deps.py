"""Shared dependencies: the settings, a transaction per request, the caller, access checks.

Access is checked here once, not in each route: ``Caller`` authenticates the key,
``require(...)`` checks the role, and ``owned(...)`` loads an object only if it belongs
to the caller's tenant (another tenant's object is a 404, so ids cannot be probed).
The web form (``service.web``) authenticates with a session instead and uses the same
role sets, ``require`` and ``owned``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

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
    """The authenticated caller: an API key, or a user logged in to the web form.

    Attributes:
        id: the API key's id, or the user's id (``via`` says which).
        tenant_id: the caller's tenant; every object access is checked against it.
        role: what the caller may do.
        via: ``"key"`` (API and CLI) or ``"user"`` (web session).
    """

    id: str
    tenant_id: str
    role: Role
    via: Literal["key", "user"] = "key"

    @property
    def actor(self) -> str:
        """How the audit log names the caller: ``key:<id>`` or ``user:<id>``."""
        return f"{self.via}:{self.id}"


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
            return Principal(id=key.id, tenant_id=key.tenant_id, role=key.role)
    raise failure


Caller = Annotated[Principal, Depends(get_caller)]


# Who may do what, in one place: the API's dependencies below and the web form's use these.
CUSTODIAN = (Role.custodian,)
ADMIN = (Role.admin,)
AUDITOR = (Role.auditor,)
RELEASE_READERS = (Role.custodian, Role.analyst, Role.auditor)
LEDGER_READERS = (Role.custodian, Role.auditor)


def check_role(caller: Principal, roles: tuple[Role, ...]) -> Principal:
    """``caller`` if its role is one of ``roles``.

    Raises:
        PermissionDeniedError: naming the roles that may.
    """
    if caller.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        what = "your key is" if caller.via == "key" else "you are"
        raise PermissionDeniedError(f"this needs the role {allowed}; {what} {caller.role.value}")
    return caller


def require(*roles: Role, source: Callable[..., Principal] = get_caller) -> Callable[[Principal], Principal]:
    """A dependency that lets only ``roles`` through; ``source`` authenticates (API key by default)."""

    def check(caller: Principal = Depends(source)) -> Principal:  # noqa: B008 (FastAPI's idiom)
        return check_role(caller, roles)

    return check


Custodian = Annotated[Principal, Depends(require(*CUSTODIAN))]
Admin = Annotated[Principal, Depends(require(*ADMIN))]
Auditor = Annotated[Principal, Depends(require(*AUDITOR))]
ReleaseReader = Annotated[Principal, Depends(require(*RELEASE_READERS))]
LedgerReader = Annotated[Principal, Depends(require(*LEDGER_READERS))]

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

"""Tenants and API keys.

A key reads ``dps_<id>_<secret>``: the id finds the row, the secret is checked against
its SHA-256. Secrets are 256 random bits, so a fast hash is enough (no password
stretching needed) and the plaintext is shown once, at creation, and never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.errors import AuthenticationError, InvalidRequestError
from service.core.orm import ApiKey, Role, Tenant, utcnow

KEY_PATTERN = re.compile(r"^dps_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_tenant(session: Session, name: str) -> Tenant:
    """A new tenant; names are unique.

    Raises:
        InvalidRequestError: the name is empty or taken.
    """
    name = name.strip()
    if not name:
        raise InvalidRequestError("a tenant needs a name")
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise InvalidRequestError(f"a tenant named {name!r} already exists")
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    return tenant


def create_key(session: Session, *, tenant_id: str, role: Role, name: str) -> tuple[ApiKey, str]:
    """A new API key row and its plaintext token (shown once, never stored)."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(id=key_id, tenant_id=tenant_id, role=Role(role), name=name, secret_hash=_hash(secret))
    session.add(key)
    session.flush()
    return key, f"dps_{key_id}_{secret}"


def authenticate(session: Session, token: str | None) -> ApiKey:
    """The live key behind ``token``.

    Raises:
        AuthenticationError: no token, a malformed one, an unknown id, a wrong secret or a
            revoked key; the message does not say which, so it cannot be used to probe ids.
    """
    match = KEY_PATTERN.match(token or "")
    key = session.get(ApiKey, match.group(1)) if match else None
    # Compare even when the id is unknown so timing does not reveal which ids exist.
    expected = key.secret_hash if key is not None else _hash("")
    given = _hash(match.group(2)) if match else ""
    if not hmac.compare_digest(expected, given) or key is None or key.revoked_at is not None:
        raise AuthenticationError("invalid or revoked API key")
    return key


def revoke_key(session: Session, key: ApiKey) -> None:
    """Revoke ``key``; it stops working at once."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()

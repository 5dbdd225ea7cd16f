"""Tenants, API keys and web users.

A key reads ``dps_<id>_<secret>``: the id finds the row, the secret is checked against
its SHA-256. Secrets are 256 random bits, so a fast hash is enough (no password
stretching needed) and the plaintext is shown once, at creation, and never stored.

Passwords are people's choices, so they are stretched: scrypt (stdlib ``hashlib``) with
a random 16-byte salt and OWASP's cost (N=2^17, r=8, p=1: about 0.5 s and 128 MiB),
stored as ``scrypt$N$r$p$salt$hash`` so the cost can rise later without breaking old
hashes. A login looks the name up (``find_login``, inside a transaction) and checks the
password outside it (``check_password``), so the database is not locked while scrypt runs;
an unknown name costs the same work as a known one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.errors import AuthenticationError, InvalidRequestError
from service.core.orm import ApiKey, Role, Tenant, User, utcnow

KEY_PATTERN = re.compile(r"^dps_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
MIN_PASSWORD, MAX_PASSWORD = 12, 1024
_USER_NAME = re.compile(r"^[^\x00-\x1f\x7f\s][^\x00-\x1f\x7f]{0,199}$")


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


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * r * n + (1 << 20), dklen=32
    )


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def password_matches(password: str, stored: str) -> bool:
    """Whether ``password`` hashes to ``stored`` (with the salt and cost stored there)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        given = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(given, _unb64(digest))


# Checked against when the name is unknown, so that a miss costs what a hit costs.
_DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(bytes(16))}${_b64(bytes(32))}"


def generate_password() -> str:
    """A random password of 20 URL-safe characters (120 bits)."""
    return secrets.token_urlsafe(15)


def check_new_password(password: str) -> None:
    """Refuse passwords that are too short or absurdly long.

    Raises:
        InvalidRequestError: saying what length is needed.
    """
    if len(password) < MIN_PASSWORD:
        raise InvalidRequestError(f"a password needs at least {MIN_PASSWORD} characters, got {len(password)}")
    if len(password) > MAX_PASSWORD:
        raise InvalidRequestError(f"a password may have at most {MAX_PASSWORD} characters")


def create_user(session: Session, *, tenant_id: str, role: Role, name: str, password: str) -> User:
    """A new web user; names are unique across tenants.

    Raises:
        InvalidRequestError: a bad or taken name, or a password that is too short or too long.
    """
    name = name.strip()
    if not _USER_NAME.match(name):
        raise InvalidRequestError(
            "a user name needs 1 to 200 characters, no control characters and no leading space"
        )
    check_new_password(password)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise InvalidRequestError(f"a user named {name!r} already exists")
    user = User(tenant_id=tenant_id, role=Role(role), name=name, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


@dataclass(frozen=True)
class LoginCandidate:
    """What a login needs from the database: the user behind a name (if any) and its hash."""

    user_id: str | None
    tenant_id: str | None
    password_hash: str
    active: bool


def find_login(session: Session, name: str) -> LoginCandidate:
    """The user called ``name``, or a stand-in with the dummy hash when there is none."""
    user = session.scalar(select(User).where(User.name == name.strip())) if name else None
    if user is None:
        return LoginCandidate(user_id=None, tenant_id=None, password_hash=_DUMMY_HASH, active=False)
    return LoginCandidate(
        user_id=user.id,
        tenant_id=user.tenant_id,
        password_hash=user.password_hash,
        active=user.disabled_at is None,
    )


def check_password(candidate: LoginCandidate, password: str) -> str:
    """The user id if ``password`` is right for ``candidate``; same work either way.

    Raises:
        AuthenticationError: unknown name, wrong password or disabled user; the message does
            not say which.
    """
    ok = password_matches(password[:MAX_PASSWORD], candidate.password_hash)
    if not ok or candidate.user_id is None or not candidate.active:
        raise AuthenticationError("the user name or password is not right")
    return candidate.user_id


def authenticate_password(session: Session, name: str, password: str) -> User:
    """The active user ``name`` if ``password`` is theirs (hashes inside the caller's transaction).

    The web form uses ``find_login`` and ``check_password`` around its own transactions instead,
    so scrypt does not run while the database is locked.

    Raises:
        AuthenticationError: as ``check_password``.
    """
    user_id = check_password(find_login(session, name), password)
    user = session.get(User, user_id)
    assert user is not None
    return user


def actor_names(session: Session, tenant_id: str) -> dict[str, str]:
    """Readable names of a tenant's users and API keys, by audit actor (``user:<id>``, ``key:<id>``)."""
    names = {
        f"user:{user.id}": f"{user.name} ({user.role.value})"
        for user in session.scalars(select(User).where(User.tenant_id == tenant_id))
    }
    for key in session.scalars(select(ApiKey).where(ApiKey.tenant_id == tenant_id)):
        names[f"key:{key.id}"] = f"API key {key.name!r} ({key.role.value})"
    return names

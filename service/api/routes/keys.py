"""API keys of the caller's tenant, for admins."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from service.api.deps import Admin, SessionDep, owned
from service.api.schemas import KeyCreate, KeyCreated, KeyPublic
from service.core import audit
from service.core.orm import ApiKey
from service.core.security import create_key, revoke_key

router = APIRouter(prefix="/keys", tags=["keys"])


@router.get("", response_model=list[KeyPublic])
def list_keys(session: SessionDep, caller: Admin) -> list[ApiKey]:
    """The tenant's keys (never their secrets)."""
    return list(session.scalars(select(ApiKey).where(ApiKey.tenant_id == caller.tenant_id)))


@router.post("", response_model=KeyCreated, status_code=status.HTTP_201_CREATED)
def new_key(body: KeyCreate, session: SessionDep, caller: Admin) -> KeyCreated:
    """A new key in the tenant; its token is in this response only."""
    key, token = create_key(session, tenant_id=caller.tenant_id, role=body.role, name=body.name)
    audit.append(
        session,
        action="key.created",
        actor=caller.actor,
        tenant_id=caller.tenant_id,
        object_type="api_key",
        object_id=key.id,
        details={"role": key.role.value},
    )
    return KeyCreated(**KeyPublic.model_validate(key).model_dump(), token=token)


@router.delete("/{key_id}", response_model=KeyPublic)
def delete_key(key_id: str, session: SessionDep, caller: Admin) -> ApiKey:
    """Revoke a key; it stops working at once."""
    key = owned(session, ApiKey, key_id, caller)
    revoke_key(session, key)
    audit.append(
        session,
        action="key.revoked",
        actor=caller.actor,
        tenant_id=caller.tenant_id,
        object_type="api_key",
        object_id=key.id,
    )
    return key

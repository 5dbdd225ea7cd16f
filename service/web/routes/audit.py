"""The audit log for auditors: the newest events to read, and exports that verify offline."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import Response

from service.api.deps import ServicesDep, SessionDep
from service.api.routes import audit as api
from service.api.schemas import ExportFormat
from service.core import audit
from service.core.security import actor_names
from service.web.deps import Auditor, render, web_router

router = web_router()
SHOWN = 200


@router.get("/audit")
def audit_page(request: Request, session: SessionDep, caller: Auditor) -> Response:
    """The tenant's newest events and the export buttons."""
    events = audit.recent(session, caller.tenant_id, limit=SHOWN)
    names = actor_names(session, caller.tenant_id)
    return render(request, "audit.html", events=events, shown=SHOWN, names=names)


@router.get("/audit/export")
def export(
    services: ServicesDep, caller: Auditor, format: Annotated[ExportFormat, Query()] = "jsonl"
) -> Response:
    """The whole tenant log as a file, through the API's export (itself an audited event)."""
    return api.export(services, caller, format=format)

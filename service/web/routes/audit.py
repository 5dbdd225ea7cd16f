"""The audit log for auditors: the newest events to read, exports and signed evidence bundles."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import Response

from service.api.deps import ServicesDep, SessionDep
from service.api.routes import audit as api
from service.api.routes import datasets as datasets_api
from service.api.schemas import ExportFormat
from service.core import audit
from service.core.errors import InvalidRequestError
from service.core.orm import aware
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


@router.get("/evidence")
def bundles_page(request: Request, session: SessionDep, services: ServicesDep, caller: Auditor) -> Response:
    """Evidence bundles to download: per dataset, for the whole tenant, or over a time range."""
    datasets = datasets_api.list_datasets(session, caller)
    key = api.public_key(services)
    return render(request, "audit_bundles.html", datasets=datasets, key=key)


def _moment(text: str | None, *, end_of_day: bool, label: str) -> datetime | None:
    """A form's date (``YYYY-MM-DD``: the whole day) or date and time, in UTC; empty is None."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(f"{label} {text!r} is not a date; write it as 2025-01-31") from None
    return aware(moment)


@router.get("/evidence/public-key.pem")
def public_key_pem(services: ServicesDep, caller: Auditor) -> Response:
    """The service's public key as a file, to keep beside the bundles (it is public anyway)."""
    pem = api.public_key(services).public_key_pem
    headers = {"Content-Disposition": 'attachment; filename="dpsynth-signing-key.pem"'}
    return Response(pem, media_type="application/x-pem-file", headers=headers)


@router.get("/evidence/bundle")
def bundle(
    services: ServicesDep,
    caller: Auditor,
    dataset_id: Annotated[str | None, Query()] = None,
    since: Annotated[str | None, Query()] = None,
    until: Annotated[str | None, Query()] = None,
) -> Response:
    """One bundle through the API's route (itself an audited event); dates are whole UTC days."""
    return api.bundle(
        services,
        caller,
        dataset_id=dataset_id or None,
        since=_moment(since, end_of_day=False, label="the start date"),
        until=_moment(until, end_of_day=True, label="the end date"),
    )

"""The audit log for auditors: export as JSONL or CSV (formula-safe), verifiable offline."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from service.api.deps import Auditor, ServicesDep
from service.api.schemas import ExportFormat
from service.core import audit
from service.core.db import transaction

router = APIRouter(prefix="/audit", tags=["audit"])


def _stream(spool: tempfile.SpooledTemporaryFile[str]) -> Iterator[bytes]:
    with spool:
        spool.seek(0)
        while chunk := spool.read(1 << 16):
            yield chunk.encode()


@router.get("/export", response_class=StreamingResponse)
def export(
    services: ServicesDep,
    caller: Auditor,
    format: Annotated[ExportFormat, Query(description="jsonl or csv")] = "jsonl",
) -> StreamingResponse:
    """The tenant's events, chained; check them with ``dpsynth audit verify FILE``.

    The export is itself an audited event, written first so that it is in the file.
    """
    with transaction(services.sessions) as session:
        audit.append(session, action="audit.export", actor=caller.actor, tenant_id=caller.tenant_id)
    # Spooled: small logs stay in memory, large ones go to a temp file, never a DB cursor held open.
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+", newline="", encoding="utf-8")
    with transaction(services.sessions) as session:
        if format == "csv":
            audit.export_csv(session, spool, tenant_id=caller.tenant_id)
        else:
            audit.export_jsonl(session, spool, tenant_id=caller.tenant_id)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(
        _stream(spool),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="audit-{caller.tenant_id}.{format}"'},
    )

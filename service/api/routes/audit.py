"""The audit log for auditors: plain exports (JSONL or CSV, formula-safe) and signed evidence bundles.

Both verify offline with ``dpsynth audit verify FILE``; a bundle also against the service's
public key (``GET /audit/public-key``, public on purpose) with ``--public-key``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from service.api.deps import Auditor, ServicesDep, owned
from service.api.schemas import ExportFormat, PublicKeyPublic
from service.core import audit, bundles
from service.core.db import transaction
from service.core.orm import Dataset
from service.core.signing import ALGORITHM, Signer

router = APIRouter(prefix="/audit", tags=["audit"])
_CHUNK = 1 << 16


def _stream(spool: IO[Any]) -> Iterator[bytes]:
    with spool:
        spool.seek(0)
        while chunk := spool.read(_CHUNK):
            yield chunk.encode() if isinstance(chunk, str) else chunk


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


@router.get("/public-key", response_model=PublicKeyPublic)
def public_key(services: ServicesDep) -> PublicKeyPublic:
    """The Ed25519 key that signs audit bundles. Public: no API key needed.

    Keep a copy (or its fingerprint) from a channel you trust, and verify bundles with
    ``dpsynth audit verify BUNDLE --public-key KEY.pem``.
    """
    signer = Signer.from_settings(services.settings)
    return PublicKeyPublic(
        algorithm=ALGORITHM, fingerprint=signer.fingerprint, public_key_pem=signer.public_pem().decode()
    )


@router.get("/bundles", response_class=StreamingResponse)
def bundle(
    services: ServicesDep,
    caller: Auditor,
    dataset_id: Annotated[str | None, Query(description="one dataset; default: the whole tenant")] = None,
    since: Annotated[datetime | None, Query(description="events from this time (UTC unless stated)")] = None,
    until: Annotated[datetime | None, Query(description="events up to this time (inclusive)")] = None,
) -> StreamingResponse:
    """A signed evidence bundle (zip): events, ledger, certificates, manifest, signature, public key.

    The events are the tenant chain's, contiguous, over the time range (all of them by
    default); the ledger and certificates are those of the dataset (or of every dataset)
    as they are now. The export is an audited event, written first, so that a bundle
    without ``until`` holds it. Check it offline with ``dpsynth audit verify BUNDLE``.
    """
    scope = bundles.Scope(tenant_id=caller.tenant_id, dataset_id=dataset_id, since=since, until=until)
    with transaction(services.sessions) as session:
        if dataset_id is not None:
            owned(session, Dataset, dataset_id, caller)
        audit.append(
            session,
            action="audit.bundle",
            actor=caller.actor,
            tenant_id=caller.tenant_id,
            object_type="dataset" if dataset_id else None,
            object_id=dataset_id,
            details=scope.as_dict(),
        )
    signer = Signer.from_settings(services.settings)
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20, mode="w+b")
    with transaction(services.sessions) as session:
        bundles.snapshot(session)
        bundles.write_bundle(session, spool, scope=scope, signer=signer, actor=caller.actor)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"audit-bundle-{dataset_id or caller.tenant_id}-{stamp}.zip"
    return StreamingResponse(
        _stream(spool),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )

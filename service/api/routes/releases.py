"""Releases: list, download (CSV or Parquet), certificate, custodian-only quality report."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Annotated, Any

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from service.api.deps import Custodian, ReleaseReader, ServicesDep, SessionDep, owned
from service.api.schemas import ReleasePublic, TableFormat
from service.core import audit
from service.core.bundle_format import public_certificate
from service.core.errors import ConflictError, PermissionDeniedError
from service.core.orm import Job, Release, Role
from service.core.storage import Storage

router = APIRouter(prefix="/releases", tags=["releases"])
_CHUNK = 1 << 20


def public_release(release: Release, job: Job) -> ReleasePublic:
    """A release's public view; it cost what its job was charged."""
    return ReleasePublic(
        id=release.id,
        job_id=release.job_id,
        dataset_id=release.dataset_id,
        rows=release.rows,
        created_at=release.created_at,
        epsilon=job.epsilon_charged if job.epsilon_charged is not None else job.epsilon,
        delta=job.delta_charged if job.delta_charged is not None else job.delta,
        state=release.state,
    )


@router.get("", response_model=list[ReleasePublic])
def list_releases(session: SessionDep, caller: ReleaseReader) -> list[ReleasePublic]:
    """The tenant's releases, newest first."""
    rows = session.execute(
        select(Release, Job)
        .join(Job, Job.id == Release.job_id)
        .where(Release.tenant_id == caller.tenant_id)
        .order_by(Release.created_at.desc())
    ).all()
    return [public_release(release, job) for release, job in rows]


@router.get("/{release_id}", response_model=ReleasePublic)
def get_release(release_id: str, session: SessionDep, caller: ReleaseReader) -> ReleasePublic:
    """One release: rows and what it cost."""
    release = owned(session, Release, release_id, caller)
    job = session.get(Job, release.job_id)
    assert job is not None
    return public_release(release, job)


@router.get("/{release_id}/certificate")
def get_certificate(release_id: str, session: SessionDep, caller: ReleaseReader) -> dict[str, Any]:
    """The privacy certificate: epsilon, delta, accountant, every mechanism and its share.

    Only the custodian sees the hash of the raw input it was computed from.
    """
    certificate = owned(session, Release, release_id, caller).certificate
    return dict(certificate) if caller.role is Role.custodian else public_certificate(certificate)


@router.get("/{release_id}/quality")
def get_quality(release_id: str, session: SessionDep, caller: Custodian) -> dict[str, Any]:
    """The quality report. Computed against raw data, so not DP: custodian-only."""
    release = owned(session, Release, release_id, caller)
    return {"custodian_only": True, "report": release.quality}


def _csv_chunks(storage: Storage, key: str) -> Iterator[bytes]:
    with storage.open_read(key) as fh:
        parquet = pq.ParquetFile(fh)
        for index in range(parquet.num_row_groups):
            out = io.BytesIO()
            options = pacsv.WriteOptions(include_header=index == 0)
            pacsv.write_csv(parquet.read_row_group(index), out, write_options=options)
            yield out.getvalue()


def _file_chunks(storage: Storage, key: str) -> Iterator[bytes]:
    with storage.open_read(key) as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


@router.get("/{release_id}/download", response_class=StreamingResponse)
def download_release(
    release_id: str,
    session: SessionDep,
    services: ServicesDep,
    caller: ReleaseReader,
    format: Annotated[TableFormat, Query(description="csv or parquet")] = "csv",
) -> StreamingResponse:
    """The synthetic table, streamed. Not available to auditors (they read evidence, not data)."""
    if caller.role is Role.auditor:
        raise PermissionDeniedError("auditors read certificates and ledgers, not released tables")
    release = owned(session, Release, release_id, caller)
    if release.state != "ready":
        raise ConflictError(f"release {release.id} is {release.state}; its table is not available")
    audit.append(
        session,
        action="release.download",
        actor=caller.actor,
        tenant_id=caller.tenant_id,
        object_type="release",
        object_id=release.id,
        details={"format": format},
    )
    chunks = _csv_chunks if format == "csv" else _file_chunks
    media = "text/csv" if format == "csv" else "application/vnd.apache.parquet"
    name = f"release-{release.id}.{format}"
    return StreamingResponse(
        chunks(services.storage, release.storage_key),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get("/{release_id}/model", response_class=StreamingResponse)
def download_model(
    release_id: str, session: SessionDep, services: ServicesDep, caller: ReleaseReader
) -> StreamingResponse:
    """The generator the release was drawn from (safetensors), to re-derive the release offline.

    It can draw any number of rows, so it is data like the table: not for auditors.
    ``dpsynth releases reproduce`` re-draws the table with it and re-computes epsilon.
    """
    if caller.role is Role.auditor:
        raise PermissionDeniedError("auditors read certificates and ledgers, not models that draw data")
    release = owned(session, Release, release_id, caller)
    job = session.get(Job, release.job_id)
    if job is None or job.model_key is None:
        raise ConflictError(f"release {release.id} has no stored model")
    audit.append(
        session,
        action="release.model_download",
        actor=caller.actor,
        tenant_id=caller.tenant_id,
        object_type="release",
        object_id=release.id,
        details={"job_id": job.id},
    )
    return StreamingResponse(
        _file_chunks(services.storage, job.model_key),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="model-{job.id}.safetensors"'},
    )

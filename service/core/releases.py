"""Releases drawn from a finished job's stored model: request, complete, fail.

Sampling is post-processing of the DP model, so a release costs no budget; its
certificate is the job's certificate (the same guarantee covers every table drawn from
the model), with this release's id and sampling seed added.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core import audit
from service.core.bundle_format import certificate_digest
from service.core.errors import ConflictError
from service.core.orm import Job, JobState, Release, new_id


def release_key(release_id: str) -> str:
    """Storage key of a release's table."""
    return f"releases/{release_id}/table.parquet"


def first_certificate(session: Session, job: Job) -> dict[str, Any]:
    """The certificate of the job's first release (written when training finished)."""
    cert = session.scalar(
        select(Release.certificate).where(Release.job_id == job.id).order_by(Release.created_at).limit(1)
    )
    if cert is None:
        raise ConflictError(f"job {job.id} has no certificate")
    return cert


def request(session: Session, job: Job, *, rows: int, actor: str) -> Release:
    """A pending release of ``rows`` rows from ``job``'s model; a worker completes it.

    Raises:
        ConflictError: the job did not succeed (no model to sample from).
    """
    if job.state != JobState.succeeded or job.model_key is None:
        raise ConflictError(f"job {job.id} is {job.state}; only a succeeded job's model can be sampled")
    release_id = new_id()
    seed = secrets.randbelow(2**31)
    certificate = dict(first_certificate(session, job))
    service = {k: v for k, v in certificate.get("service", {}).items() if k != "reproduce"}
    certificate["service"] = {**service, "release_id": release_id, "sample_seed": seed}
    release = Release(
        id=release_id,
        tenant_id=job.tenant_id,
        job_id=job.id,
        dataset_id=job.dataset_id,
        rows=rows,
        storage_key=release_key(release_id),
        certificate=certificate,
        state="pending",
    )
    session.add(release)
    session.flush()
    audit.append(
        session,
        action="release.requested",
        actor=actor,
        tenant_id=job.tenant_id,
        object_type="release",
        object_id=release.id,
        details={"job_id": job.id, "rows": rows},
    )
    return release


def complete(
    session: Session, release_id: str, *, rows: int, reproduce: dict[str, Any], actor: str
) -> Release:
    """Mark a pending release ready once its table is stored, with what re-derives it."""
    release = session.scalars(select(Release).where(Release.id == release_id).with_for_update()).one()
    if release.state != "pending":
        raise ConflictError(f"release {release_id} is {release.state}, not pending")
    release.state, release.rows = "ready", rows
    certificate = dict(release.certificate)
    certificate["service"] = {**certificate["service"], "reproduce": reproduce}
    release.certificate = certificate
    audit.append(
        session,
        action="release.created",
        actor=actor,
        tenant_id=release.tenant_id,
        object_type="release",
        object_id=release.id,
        details={
            "job_id": release.job_id,
            "rows": rows,
            "certificate_sha256": certificate_digest(certificate),
        },
    )
    return release


def fail(session: Session, release_id: str, *, error: str, actor: str) -> None:
    """Mark a pending release failed (nothing was released)."""
    release = session.scalars(select(Release).where(Release.id == release_id).with_for_update()).one()
    if release.state == "pending":
        release.state, release.error = "failed", error
        audit.append(
            session,
            action="release.failed",
            actor=actor,
            tenant_id=release.tenant_id,
            object_type="release",
            object_id=release.id,
            details={"error": error[:200]},
        )

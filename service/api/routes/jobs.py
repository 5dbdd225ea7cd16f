"""Jobs: submit (reserving budget), list, status with progress, cancel."""

from __future__ import annotations

import logging

from celery import Celery
from fastapi import APIRouter, status
from sqlalchemy import select

from service.api.deps import Custodian, ServicesDep, SessionDep, is_object_id, owned
from service.api.routes.releases import public_release
from service.api.schemas import JobCreate, JobPublic, ReleaseCreate, ReleasePublic
from service.core import audit, jobs, ledger, queueing, releases
from service.core.db import after_commit
from service.core.orm import Dataset, Job, JobState, Release
from workers.app import SAMPLE_TASK, TRAIN_TASK, send

router = APIRouter(prefix="/jobs", tags=["jobs"])
log = logging.getLogger(__name__)


def public_job(session: SessionDep, job: Job) -> JobPublic:
    """A job's public view, with its first release if it has one."""
    out = JobPublic.model_validate(job)
    out.release_id = session.scalar(select(Release.id).where(Release.job_id == job.id).limit(1))
    return out


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobPublic)
def submit_job(body: JobCreate, services: ServicesDep, session: SessionDep, caller: Custodian) -> JobPublic:
    """Reserve the budget and queue the job, in one transaction; 409 with what remains if over.

    The message to the workers is sent only after the transaction commits, so a worker
    never looks for a job that does not exist yet.
    """
    dataset = owned(session, Dataset, body.dataset_id, caller)
    options = job_options(body)
    job = ledger.reserve(
        session,
        dataset_id=body.dataset_id,
        created_by=caller.id,
        epsilon=body.epsilon,
        delta=body.delta,
        rows=body.rows,
        options=options,
    )
    # The queue follows the raw row count, so it stays out of the audit log that auditors read.
    job.queue = queueing.route(dataset.row_count, body.device, cpu_max_rows=services.settings.cpu_max_rows)
    audit.append(
        session,
        action="job.queued",
        actor=caller.actor,
        tenant_id=caller.tenant_id,
        object_type="job",
        object_id=job.id,
        details={
            "dataset_id": job.dataset_id,
            "epsilon": job.epsilon,
            "delta": job.delta,
            "rows": job.rows,
        },
    )
    celery, queue = services.celery, job.queue
    after_commit(session, lambda: publish(celery, TRAIN_TASK, job.id, queue))
    return public_job(session, job)


def job_options(body: JobCreate) -> dict:
    """The engine options of a job request (seed and advanced settings)."""
    return body.model_dump(exclude={"dataset_id", "epsilon", "delta", "rows", "device"}, exclude_none=True)


def publish(celery: Celery, task: str, object_id: str, queue: str = queueing.CPU) -> None:
    """Send ``task`` for a committed row; a failure is logged for the reconciler to retry."""
    # The row is committed by now, so the answer is a success either way: a failed send is
    # logged and the row stays queued/pending for the reconciler to send again, never a 500
    # that would make the client submit, and reserve, again.
    try:
        send(celery, task, object_id, queue=queue)
    except Exception:
        log.exception("%s %s is committed but its message could not be sent to the workers", task, object_id)


@router.get("", response_model=list[JobPublic])
def list_jobs(session: SessionDep, caller: Custodian, dataset_id: str | None = None) -> list[JobPublic]:
    """The tenant's jobs, newest first (optionally of one dataset)."""
    query = select(Job).where(Job.tenant_id == caller.tenant_id).order_by(Job.created_at.desc())
    if dataset_id is not None:
        if not is_object_id(dataset_id):
            return []
        query = query.where(Job.dataset_id == dataset_id)
    return [public_job(session, job) for job in session.scalars(query)]


@router.get("/{job_id}", response_model=JobPublic)
def get_job(job_id: str, session: SessionDep, caller: Custodian) -> JobPublic:
    """State, progress (fraction, phase, epoch) and epsilon spent so far."""
    return public_job(session, owned(session, Job, job_id, caller))


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, services: ServicesDep, session: SessionDep, caller: Custodian) -> JobPublic:
    """Cancel: a job that never ran ends uncharged; a running one stops, charged what it spent."""
    job = owned(session, Job, job_id, caller, lock=True)
    was_queued = job.state == JobState.queued
    cancelled = jobs.request_cancel(session, job, actor=caller.actor)
    if was_queued and cancelled.started_at is not None:  # an earlier attempt left a checkpoint
        storage, key = services.storage, jobs.checkpoint_key(job.id)
        after_commit(session, lambda: storage.delete(key))
    return public_job(session, cancelled)


@router.post("/{job_id}/releases", status_code=status.HTTP_202_ACCEPTED, response_model=ReleasePublic)
def request_release(
    job_id: str, body: ReleaseCreate, services: ServicesDep, session: SessionDep, caller: Custodian
) -> ReleasePublic:
    """Draw another table from a succeeded job's model (no budget); a worker writes it.

    The release is ``pending`` until then; ``GET /releases/{id}`` shows when it is ``ready``.
    """
    job = owned(session, Job, job_id, caller)
    release = releases.request(session, job, rows=body.rows, actor=caller.actor)
    celery = services.celery
    after_commit(session, lambda: publish(celery, SAMPLE_TASK, release.id))
    return public_release(release, job)

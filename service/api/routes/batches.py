"""Batches: many jobs from one manifest, admitted whole or refused whole."""

from __future__ import annotations

from fastapi import APIRouter, status
from sqlalchemy import select

from service.api.deps import Custodian, ServicesDep, SessionDep, owned
from service.api.routes.jobs import job_options, public_job, publish
from service.api.schemas import BatchCreate, BatchPublic
from service.core import audit, ledger, queueing
from service.core.db import after_commit
from service.core.orm import Batch, Dataset, Job
from workers.app import TRAIN_TASK

router = APIRouter(prefix="/batches", tags=["batches"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=BatchPublic)
def submit_batch(
    body: BatchCreate, services: ServicesDep, session: SessionDep, caller: Custodian
) -> BatchPublic:
    """Reserve every job's budget in one transaction and queue them all, or refuse the whole batch.

    A batch whose jobs together exceed a dataset's remaining budget is a 409 naming the job
    where it ran out, and nothing of it is kept or run.
    """
    rows = {
        dataset_id: owned(session, Dataset, dataset_id, caller).row_count
        for dataset_id in {job.dataset_id for job in body.jobs}
    }
    batch = Batch(tenant_id=caller.tenant_id, created_by=caller.id)
    session.add(batch)
    session.flush()
    requests = [
        ledger.JobRequest(
            dataset_id=job.dataset_id,
            epsilon=job.epsilon,
            delta=job.delta,
            rows=job.rows,
            options=job_options(job),
        )
        for job in body.jobs
    ]
    jobs = ledger.reserve_batch(session, requests, created_by=caller.id, batch_id=batch.id)
    cpu_max_rows = services.settings.cpu_max_rows
    for job, asked in zip(jobs, body.jobs, strict=True):
        job.queue = queueing.route(rows[job.dataset_id], asked.device, cpu_max_rows=cpu_max_rows)
    audit.append(
        session,
        action="batch.queued",
        actor=caller.actor,
        tenant_id=caller.tenant_id,
        object_type="batch",
        object_id=batch.id,
        details={"jobs": [job.id for job in jobs], "epsilon": sum(job.epsilon for job in jobs)},
    )
    celery = services.celery
    for job in jobs:
        after_commit(
            session, lambda job_id=job.id, queue=job.queue: publish(celery, TRAIN_TASK, job_id, queue)
        )
    return BatchPublic(
        id=batch.id, created_at=batch.created_at, jobs=[public_job(session, job) for job in jobs]
    )


@router.get("/{batch_id}", response_model=BatchPublic)
def get_batch(batch_id: str, session: SessionDep, caller: Custodian) -> BatchPublic:
    """The batch's jobs with their state and progress."""
    batch = owned(session, Batch, batch_id, caller)
    jobs = session.scalars(select(Job).where(Job.batch_id == batch.id).order_by(Job.created_at, Job.id)).all()
    return BatchPublic(
        id=batch.id, created_at=batch.created_at, jobs=[public_job(session, job) for job in jobs]
    )

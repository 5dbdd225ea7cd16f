"""The job state machine on the database row: leases, progress, cancel, settle, reconcile.

The row, not the broker's message, is the source of truth. A worker *claims* a queued
job with one conditional UPDATE, so a redelivered or duplicated message finds nothing to
claim and exits. While it trains it renews a lease; when a worker dies the lease runs
out and ``reconcile`` settles the job. Every state change is audited in the same
transaction as the change itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from service.core import audit
from service.core.bundle_format import certificate_digest
from service.core.errors import ConflictError
from service.core.ledger import settle
from service.core.orm import Job, JobState, Release, utcnow

WORKER_LOST = "the worker stopped renewing its lease (killed or lost)"


def model_key(job_id: str) -> str:
    """Storage key of a job's model weights."""
    return f"models/{job_id}/model.safetensors"


def checkpoint_key(job_id: str) -> str:
    """Storage key of a job's latest checkpoint (ledger, plan, measurements, network states)."""
    return f"jobs/{job_id}/checkpoint.pt"


def _audit_state(session: Session, job: Job, actor: str, **details: Any) -> None:
    audit.append(
        session,
        action=f"job.{job.state}",
        actor=actor,
        tenant_id=job.tenant_id,
        object_type="job",
        object_id=job.id,
        details={"dataset_id": job.dataset_id, **details},
    )


def claim(
    session: Session, job_id: str, *, owner: str, lease_seconds: float, device: str | None = None
) -> Job | None:
    """Take a queued job for ``owner`` (training on ``device``); ``None`` when it is not queued."""
    now = utcnow()
    taken = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.queued)
        .values(
            state=JobState.running,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Job.attempts + 1,
            started_at=now,
            phase="starting",
            worker=owner,
            device=device,
        )
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    _audit_state(session, job, f"worker:{owner}", attempt=job.attempts)
    return job


def renew(session: Session, job_id: str, *, owner: str, lease_seconds: float) -> tuple[bool, bool]:
    """Extend ``owner``'s lease; returns (still ours, cancel requested)."""
    renewed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.running, Job.lease_owner == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    cancel = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return renewed.rowcount == 1, bool(cancel)


def report_progress(
    session: Session, job_id: str, *, owner: str, progress: float, phase: str, epoch: float, epsilon: float
) -> bool:
    """Record progress if ``owner`` still holds the job; returns whether it does."""
    done = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.running, Job.lease_owner == owner)
        .values(progress=progress, phase=phase, epoch=epoch, epsilon_spent=epsilon)
        .execution_options(synchronize_session=False)
    )
    return done.rowcount == 1


def _owned(session: Session, job_id: str, owner: str) -> Job:
    job = session.scalars(select(Job).where(Job.id == job_id).with_for_update()).one()
    if job.state != JobState.running or job.lease_owner != owner:
        raise ConflictError(f"job {job_id} is no longer held by {owner} (state {job.state})")
    return job


def succeed(
    session: Session,
    job_id: str,
    *,
    owner: str,
    epsilon: float,
    model_key: str,
    release: Release,
) -> Job:
    """Settle a finished job with its real spend and record its first release."""
    job = _owned(session, job_id, owner)
    settle(job, state=JobState.succeeded, epsilon=epsilon, delta=job.delta)
    job.progress, job.phase, job.finished_at, job.model_key = 1.0, "done", utcnow(), model_key
    job.lease_owner = job.lease_expires_at = None
    session.add(release)
    session.flush()
    _audit_state(session, job, f"worker:{owner}", epsilon_charged=job.epsilon_charged)
    audit.append(
        session,
        action="release.created",
        actor=f"worker:{owner}",
        tenant_id=job.tenant_id,
        object_type="release",
        object_id=release.id,
        details={
            "job_id": job.id,
            "rows": release.rows,
            "certificate_sha256": certificate_digest(release.certificate),
        },
    )
    return job


def stop(
    session: Session, job_id: str, *, owner: str, state: JobState, epsilon: float, error: str | None
) -> Job:
    """Settle a job that ended early (failed or cancelled) with what it spent."""
    job = _owned(session, job_id, owner)
    settle(job, state=state, epsilon=epsilon, delta=job.delta if epsilon > 0 else 0.0)
    job.finished_at, job.error = utcnow(), error
    job.lease_owner = job.lease_expires_at = None
    _audit_state(session, job, f"worker:{owner}", epsilon_charged=job.epsilon_charged, error=error)
    return job


def request_cancel(session: Session, job: Job, *, actor: str) -> Job:
    """Cancel ``job``: a queued job ends at once, a running one is told to stop.

    A queued job that never ran is charged nothing; one requeued after an attempt, its
    whole reservation (see below).

    Raises:
        ConflictError: the job already ended.
    """
    if JobState(job.state).final:
        raise ConflictError(f"job {job.id} already ended ({job.state})")
    if job.state == JobState.queued:
        # A job back in the queue after an attempt (its worker died or stopped) may have
        # spent budget that only its checkpoint knows, and possibly more since: charge its
        # whole reservation. A job that never ran spent nothing.
        ran = job.started_at is not None
        settle(
            job,
            state=JobState.cancelled,
            epsilon=job.epsilon if ran else 0.0,
            delta=job.delta if ran else 0.0,
        )
        job.finished_at = utcnow()
        _audit_state(session, job, actor, epsilon_charged=job.epsilon_charged)
    else:
        job.cancel_requested = True
        audit.append(
            session,
            action="job.cancel_requested",
            actor=actor,
            tenant_id=job.tenant_id,
            object_type="job",
            object_id=job.id,
        )
    return job


MAX_ATTEMPTS = 2


@dataclass(frozen=True)
class Reconciled:
    """What a sweep did: jobs put back in the queue, and jobs given up on."""

    requeued: list[str]
    failed: list[str]


def _requeue_or_fail(session: Session, job: Job, *, reason: str, actor: str, max_attempts: int) -> bool:
    """After an attempt died: back to the queue (reservation kept), or failed at ``max_attempts``.

    A failed job is charged its whole reservation: what the dead attempts spent cannot be
    read back, and a lost job never loses a charge. Returns whether it was requeued.
    """
    job.lease_owner = job.lease_expires_at = None
    if job.attempts < max_attempts:
        job.state, job.phase, job.resent_at = JobState.queued, "requeued", utcnow()
        _audit_state(session, job, actor, reason=reason, attempts=job.attempts)
        return True
    settle(job, state=JobState.failed, epsilon=job.epsilon, delta=job.delta)
    job.finished_at = utcnow()
    job.error = f"{reason}, {job.attempts} times; given up"
    _audit_state(session, job, actor, epsilon_charged=job.epsilon_charged, error=job.error)
    return False


def reconcile(session: Session, *, max_attempts: int = MAX_ATTEMPTS) -> Reconciled:
    """Deal with every running job whose lease ran out (its worker died mid-training).

    Below ``max_attempts`` the job goes back to the queue, its reservation kept: the next
    worker resumes it from its last checkpoint, accountant state included, so it is
    charged once, when it ends, what the whole run spent. At ``max_attempts`` (a job that
    keeps killing its workers) it fails and is charged its whole reservation.
    """
    expired = session.scalars(
        select(Job)
        .where(
            Job.state == JobState.running,
            or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < utcnow()),
        )
        .with_for_update(skip_locked=True)
    ).all()
    done = Reconciled(requeued=[], failed=[])
    for job in expired:
        requeued = _requeue_or_fail(
            session, job, reason=WORKER_LOST, actor="system:reconciler", max_attempts=max_attempts
        )
        (done.requeued if requeued else done.failed).append(job.id)
    return done


def crashed(session: Session, job_id: str, *, owner: str, reason: str) -> Job:
    """The attempt of ``owner`` failed in a way a retry may survive (it ran out of memory).

    Treated like a dead worker: requeued to resume from its checkpoint, or failed and
    charged its reservation at the last attempt.
    """
    job = _owned(session, job_id, owner)
    _requeue_or_fail(session, job, reason=reason, actor=f"worker:{owner}", max_attempts=MAX_ATTEMPTS)
    return job


def hand_back(session: Session, job_id: str, *, owner: str, reason: str) -> Job:
    """Put a job ``owner`` stopped cleanly (worker shutdown) back in the queue, uncharged.

    Its checkpoint holds everything it spent, so the next worker resumes it and it is
    charged once, at the end; a clean stop does not count as one of its attempts.
    """
    job = _owned(session, job_id, owner)
    job.state, job.phase, job.resent_at = JobState.queued, "requeued", utcnow()
    job.lease_owner = job.lease_expires_at = None
    job.attempts -= 1
    _audit_state(session, job, f"worker:{owner}", reason=reason, epsilon_spent=job.epsilon_spent)
    return job


def stale_messages(session: Session, *, older_than: float) -> tuple[list[str], list[str]]:
    """Ids of queued jobs and pending releases unclaimed for ``older_than`` seconds, marked re-sent.

    "Unclaimed" counts from creation or from the last re-send.

    Their message may be lost (the serverless brokers drop a message whose worker was
    killed after receiving it), so the caller sends it again. A duplicate is harmless: a
    job is claimed once, and a release is written once.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than)
    found: list[list[str]] = []
    for model, waiting in ((Job, Job.state == JobState.queued), (Release, Release.state == "pending")):
        rows = session.scalars(
            select(model)
            .where(waiting, func.coalesce(model.resent_at, model.created_at) < cutoff)
            .with_for_update(skip_locked=True)
        ).all()
        for row in rows:
            row.resent_at = now
        found.append([row.id for row in rows])
    return found[0], found[1]

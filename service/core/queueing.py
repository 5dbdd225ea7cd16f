"""Which worker runs which job: queues by device, tenant priorities, per-tenant limits.

A broker message only wakes a worker; the job it then claims is chosen here, from the
rows: of the queued jobs in the queues it serves, its preferred queue first, then the
highest-priority tenant, then the oldest job, skipping tenants already at their limit of
running jobs. Priorities and limits therefore hold in whatever order the broker
delivers, and a duplicate message at worst finds nothing to claim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from service.core import jobs
from service.core.orm import Job, JobState, Tenant

GPU, CPU = "gpu", "cpu"
QUEUES = (GPU, CPU)
DeviceRequest = Literal["auto", "cpu", "gpu"]


def route(rows: int, device: DeviceRequest, *, cpu_max_rows: int) -> str:
    """The queue of a new job: as asked, or by table size for ``auto`` (small tables train on CPU)."""
    if device == "auto":
        return CPU if rows <= cpu_max_rows else GPU
    return GPU if device == "gpu" else CPU


def parse_queues(text: str) -> list[str]:
    """``"gpu,cpu"`` -> ``["gpu", "cpu"]``, checked.

    Raises:
        ValueError: an unknown queue name, or none at all.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in QUEUES]
    if unknown or not names:
        raise ValueError(f"queues must be a comma-separated list of {', '.join(QUEUES)}; got {text!r}")
    return list(dict.fromkeys(names))


def _has_room(session: Session, tenant_id: str, limit: int) -> bool:
    # The tenant row is locked first, so two workers cannot both take its last slot
    # (on SQLite, BEGIN IMMEDIATE already makes the claim transactions one at a time).
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    running = session.scalar(
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant_id, Job.state == JobState.running)
    )
    return (running or 0) < limit


def claim_next(
    session: Session,
    *,
    owner: str,
    queues: Sequence[str],
    lease_seconds: float,
    device: str | None = None,
    default_limit: int | None = None,
) -> Job | None:
    """Claim the job ``owner`` should run next, or ``None`` when none may run now.

    ``queues`` are the queues the worker serves, preferred first; ``default_limit`` is the
    running-jobs limit of tenants that set none (``None``: unlimited).
    """
    preference = case({queue: rank for rank, queue in enumerate(queues)}, value=Job.queue)
    skipped_tenants: set[str] = set()
    skipped_jobs: set[str] = set()
    while True:
        query = (
            select(Job.id, Job.tenant_id, Tenant.max_running_jobs)
            .join(Tenant, Tenant.id == Job.tenant_id)
            .where(Job.state == JobState.queued, Job.queue.in_(list(queues)))
            .order_by(preference, Tenant.priority.desc(), Job.created_at, Job.id)
            .limit(1)
        )
        if skipped_tenants:
            query = query.where(Job.tenant_id.not_in(skipped_tenants))
        if skipped_jobs:
            query = query.where(Job.id.not_in(skipped_jobs))
        found = session.execute(query).first()
        if found is None:
            return None
        job_id, tenant_id, own_limit = found
        limit = own_limit if own_limit is not None else default_limit
        if limit is not None and not _has_room(session, tenant_id, limit):
            skipped_tenants.add(tenant_id)
            continue
        job = jobs.claim(session, job_id, owner=owner, lease_seconds=lease_seconds, device=device)
        if job is not None:
            return job
        skipped_jobs.add(job_id)  # another worker took it between our look and our claim


def next_waiting(session: Session, tenant_id: str) -> tuple[str, str] | None:
    """(id, queue) of the tenant's oldest queued job, to wake a worker for when a slot frees."""
    found = session.execute(
        select(Job.id, Job.queue)
        .where(Job.tenant_id == tenant_id, Job.state == JobState.queued)
        .order_by(Job.created_at, Job.id)
        .limit(1)
    ).first()
    return None if found is None else (found[0], found[1])


def queues_of(session: Session, job_ids: list[str]) -> dict[str, str]:
    """The queue of each job, to send its wake-up to."""
    if not job_ids:
        return {}
    return dict(session.execute(select(Job.id, Job.queue).where(Job.id.in_(job_ids))).all())

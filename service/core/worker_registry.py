"""Workers as they report themselves: name, device, queues, last seen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.core.orm import Job, JobState, Worker, aware, utcnow


def register(session: Session, name: str, *, device: str, queues: list[str]) -> None:
    """Record a starting worker (a restarted one with the same name replaces its old row)."""
    now = utcnow()
    session.merge(
        Worker(
            name=name, device=device, queues=",".join(queues), started_at=now, seen_at=now, stopped_at=None
        )
    )


def seen(session: Session, name: str) -> None:
    """The worker is alive now."""
    worker = session.get(Worker, name)
    if worker is not None:
        worker.seen_at = utcnow()


def stopped(session: Session, name: str) -> None:
    """The worker shut down cleanly."""
    worker = session.get(Worker, name)
    if worker is not None:
        worker.stopped_at = utcnow()


@dataclass(frozen=True)
class WorkerStatus:
    """One worker for operators: alive when seen recently and not stopped."""

    name: str
    device: str
    queues: str
    started_at: datetime
    seen_at: datetime
    alive: bool
    running_jobs: int


def listing(session: Session, *, alive_within: float) -> list[WorkerStatus]:
    """Every worker that ever registered, alive ones first, then by name."""
    cutoff = utcnow() - timedelta(seconds=alive_within)
    running = dict(
        session.execute(
            select(Job.lease_owner, func.count())
            .where(Job.state == JobState.running)
            .group_by(Job.lease_owner)
        ).all()
    )
    out = []
    for worker in session.scalars(select(Worker)):
        out.append(
            WorkerStatus(
                name=worker.name,
                device=worker.device,
                queues=worker.queues,
                started_at=worker.started_at,
                seen_at=worker.seen_at,
                alive=worker.stopped_at is None and aware(worker.seen_at) >= cutoff,
                running_jobs=int(running.get(worker.name, 0)),
            )
        )
    return sorted(out, key=lambda w: (not w.alive, w.name))

"""Which job a worker claims next, on SQLite and PostgreSQL: queues, priorities, per-tenant limits."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from service.core import jobs, worker_registry
from service.core.db import make_engine, make_sessionmaker, transaction
from service.core.migrate import upgrade
from service.core.orm import Dataset, Job, JobState, Tenant, utcnow
from service.core.queueing import CPU, GPU, claim_next, next_waiting, parse_queues, route


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _tenant(
    sessions: sessionmaker[Session], name: str, *, priority: int = 0, limit: int | None = None
) -> str:
    with transaction(sessions) as session:
        tenant = Tenant(name=name, priority=priority, max_running_jobs=limit)
        session.add(tenant)
        session.flush()
        session.add(
            Dataset(
                id=f"ds-{tenant.id}"[:32],
                tenant_id=tenant.id,
                name="t",
                file_format="csv",
                size_bytes=1,
                row_count=100,
                sha256="0" * 64,
                inferred_schema={},
                schema={},
                storage_key=None,
                wrapped_key=None,
                epsilon_budget=100.0,
                delta_budget=1e-3,
            )
        )
        return tenant.id


def _jobs(sessions: sessionmaker[Session], tenant_id: str, n: int, *, queue: str = CPU) -> list[str]:
    """``n`` queued jobs, created one second apart (oldest first)."""
    ids = []
    with transaction(sessions) as session:
        base = utcnow() - timedelta(hours=1)
        existing = session.scalar(select(Job.id).where(Job.tenant_id == tenant_id).limit(1))
        offset = 1000 if existing else 0
        for i in range(n):
            job = Job(
                tenant_id=tenant_id,
                dataset_id=f"ds-{tenant_id}"[:32],
                created_by="test",
                state=JobState.queued,
                epsilon=0.1,
                delta=1e-5,
                rows=10,
                options={},
                queue=queue,
                created_at=base + timedelta(seconds=offset + i),
            )
            session.add(job)
            session.flush()
            ids.append(job.id)
    return ids


def _claim(sessions: sessionmaker[Session], queues: list[str], owner: str = "w", **kw: object) -> str | None:
    with transaction(sessions) as session:
        job = claim_next(session, owner=owner, queues=queues, lease_seconds=60, **kw)  # type: ignore[arg-type]
        return None if job is None else job.id


def test_route_by_size_unless_asked():
    assert route(100, "auto", cpu_max_rows=1000) == CPU
    assert route(1001, "auto", cpu_max_rows=1000) == GPU
    assert route(10, "gpu", cpu_max_rows=1000) == GPU
    assert route(10**9, "cpu", cpu_max_rows=1000) == CPU
    assert parse_queues(" gpu, cpu,gpu ") == [GPU, CPU]
    with pytest.raises(ValueError, match="queues must be"):
        parse_queues("tpu")


def test_higher_priority_tenant_first_then_oldest(sessions):
    low = _tenant(sessions, "low")
    high = _tenant(sessions, "high", priority=5)
    low_jobs = _jobs(sessions, low, 2)
    high_jobs = _jobs(sessions, high, 2)  # created after the low-priority ones
    order = [_claim(sessions, [CPU]) for _ in range(5)]
    assert order == [*high_jobs, *low_jobs, None]


def test_worker_takes_its_preferred_queue_first_and_never_a_queue_it_does_not_serve(sessions):
    tenant = _tenant(sessions, "acme")
    cpu_job = _jobs(sessions, tenant, 1, queue=CPU)[0]
    gpu_job = _jobs(sessions, tenant, 1, queue=GPU)[0]
    assert _claim(sessions, [CPU]) == cpu_job
    assert _claim(sessions, [CPU]) is None  # a CPU-only worker leaves the GPU job alone
    assert _claim(sessions, [GPU, CPU]) == gpu_job


def test_gpu_worker_prefers_gpu_jobs_over_older_cpu_jobs(sessions):
    tenant = _tenant(sessions, "acme")
    cpu_job = _jobs(sessions, tenant, 1, queue=CPU)[0]
    gpu_job = _jobs(sessions, tenant, 1, queue=GPU)[0]
    assert _claim(sessions, [GPU, CPU], device="cuda:0 test") == gpu_job
    assert _claim(sessions, [GPU, CPU]) == cpu_job
    with transaction(sessions) as session:
        assert session.get(Job, gpu_job).device == "cuda:0 test"


def test_tenant_at_its_limit_is_skipped_and_others_run(sessions):
    busy = _tenant(sessions, "busy", priority=9, limit=1)
    other = _tenant(sessions, "other")
    busy_jobs = _jobs(sessions, busy, 3)
    other_jobs = _jobs(sessions, other, 1)
    assert _claim(sessions, [CPU]) == busy_jobs[0]
    assert _claim(sessions, [CPU]) == other_jobs[0]  # busy is at 1 running
    assert _claim(sessions, [CPU]) is None
    with transaction(sessions) as session:
        assert next_waiting(session, busy) == (busy_jobs[1], CPU)
        jobs.stop(session, busy_jobs[0], owner="w", state=JobState.failed, epsilon=0.0, error=None)
    assert _claim(sessions, [CPU]) == busy_jobs[1]


def test_service_default_limit_applies_to_tenants_without_their_own(sessions):
    tenant = _tenant(sessions, "acme")
    own = _tenant(sessions, "own", limit=3)
    _jobs(sessions, tenant, 3)
    _jobs(sessions, own, 3)
    claimed = [_claim(sessions, [CPU], default_limit=1) for _ in range(6)]
    with transaction(sessions) as session:
        running = {
            t: len(
                session.scalars(select(Job).where(Job.tenant_id == t, Job.state == JobState.running)).all()
            )
            for t in (tenant, own)
        }
    assert running == {tenant: 1, own: 3}
    assert claimed.count(None) == 2


@pytest.mark.parametrize("limit", [1, 2])
def test_workers_racing_never_exceed_a_tenants_limit(sessions, limit: int):
    """12 workers claim at once, 5 rounds, for a tenant limited to ``limit`` running jobs.

    Half serve the CPU queue and half the GPU queue, so they go for different jobs and
    only the tenant's lock stands between them and a limit broken.
    """
    tenant = _tenant(sessions, "acme", limit=limit)
    for round_ in range(5):
        ids = _jobs(sessions, tenant, 6, queue=CPU) + _jobs(sessions, tenant, 6, queue=GPU)
        barrier = threading.Barrier(12)
        results: list[str | None] = []

        def work(i: int, barrier: threading.Barrier, results: list[str | None]) -> None:
            barrier.wait()
            results.append(_claim(sessions, [CPU] if i % 2 else [GPU], owner=f"w{i}"))

        threads = [threading.Thread(target=work, args=(i, barrier, results)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        claimed = [r for r in results if r is not None]
        assert len(results) == 12
        assert len(claimed) == limit and len(set(claimed)) == limit, f"round {round_}"
        with transaction(sessions) as session:  # end this round: every job of it fails, uncharged
            for job_id in ids:
                job = session.get(Job, job_id)
                if job.state == JobState.running:
                    jobs.stop(
                        session, job_id, owner=job.lease_owner, state=JobState.failed, epsilon=0.0, error=None
                    )
                else:
                    jobs.request_cancel(session, job, actor="test")


def test_workers_report_device_and_liveness(sessions):
    with transaction(sessions) as session:
        worker_registry.register(session, "h:1", device="cuda:0 H100", queues=[GPU, CPU])
        worker_registry.register(session, "h:2", device="cpu (2 cores)", queues=[CPU])
        worker_registry.stopped(session, "h:2")
    with transaction(sessions) as session:
        listing = worker_registry.listing(session, alive_within=60)
    assert [(w.name, w.device, w.queues, w.alive) for w in listing] == [
        ("h:1", "cuda:0 H100", "gpu,cpu", True),
        ("h:2", "cpu (2 cores)", "cpu", False),
    ]
    with transaction(sessions) as session:
        assert worker_registry.listing(session, alive_within=-1)[0].alive is False  # not seen "recently"

"""The budget ledger and the job state machine against a plain model (Hypothesis stateful).

Random sequences of reservations (single and batch), claims, duplicate claims, progress
reports, successes, stops, overspends, cancels, lease expiries, reconciler sweeps, zombie
workers and budget changes run on a real SQLite file. After every step the rows must
match the model: charged + reserved never exceed the budget, every final job is charged
exactly once and never less than what it was reported to have spent, and a refused
request changes nothing.

The model counts in exact fractions: epsilons are multiples of 1/40 and deltas of 1e-6,
so every comparison is an exact tie or misses by a whole step, and the ledger's float
slack (``SLACK``) can never make it disagree with the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, event, select, update
from sqlalchemy.orm import Session

from service.core import jobs, ledger
from service.core.db import Base, make_engine, make_sessionmaker, transaction
from service.core.errors import BudgetExhaustedError, ConflictError, InvalidRequestError
from service.core.orm import Batch, Dataset, Job, JobState, Release, Tenant, utcnow

ROWS = 1000  # every dataset's row count: a job's delta must stay below 1/1000
LEASE = 3600.0  # a live lease never runs out during a test; expiry is set by hand
MICRO = Fraction(1, 10**6)
EPSILONS = st.integers(1, 12).map(lambda k: Fraction(k, 10))
DELTAS = st.integers(1, 4).map(lambda k: k * MICRO)
BUDGET_DELTAS = st.integers(3, 12).map(lambda k: k * MICRO)
QUARTERS = st.integers(0, 4).map(lambda k: Fraction(k, 4))
PICK = st.integers(min_value=0)
TABLES = [table.name for table in Base.metadata.sorted_tables]


@dataclass
class ModelJob:
    """What the model knows of one job."""

    id: str
    dataset: int
    epsilon: Fraction
    delta: Fraction
    state: JobState = JobState.queued
    owner: str | None = None
    attempts: int = 0
    # What the engine has spent so far, as last reported: checkpoints carry it across attempts.
    spent: Fraction = Fraction(0)
    cancel_requested: bool = False
    charge: tuple[Fraction, Fraction] | None = None
    past_owners: list[str] = field(default_factory=list)


def _exact(db: float) -> Fraction:
    """The model's fraction for a stored float: the grids' denominators are far below 10**7."""
    return Fraction(db).limit_denominator(10**7)


def _close(db: float | None, model: Fraction | None) -> bool:
    if db is None or model is None:
        return db is None and model is None
    return math.isclose(db, float(model), rel_tol=1e-9, abs_tol=1e-15)


class LedgerMachine(RuleBasedStateMachine):
    """Two datasets of one tenant, their jobs, and workers named w1, w2, ..."""

    engine: Engine  # set by the test: one SQLite file, emptied for each example

    def __init__(self) -> None:
        super().__init__()
        self.factory = make_sessionmaker(self.engine)
        with transaction(self.factory) as session:
            for table in reversed(Base.metadata.sorted_tables):
                session.execute(table.delete())
            tenant = Tenant(name="acme")
            session.add(tenant)
            session.flush()
            self.tenant_id = tenant.id
            self.datasets = [_dataset(session, tenant.id, f"d{i}") for i in range(2)]
        self.totals = [(Fraction(0), Fraction(0))] * 2
        self.jobs: dict[str, ModelJob] = {}
        self.workers = 0

    # -- the model's arithmetic -------------------------------------------------------------

    def _used(self, ds: int) -> tuple[Fraction, Fraction]:
        mine = [j for j in self.jobs.values() if j.dataset == ds]
        charged = [j.charge for j in mine if j.charge is not None]
        live = [j for j in mine if j.charge is None]
        return (
            sum((c[0] for c in charged), Fraction(0)) + sum((j.epsilon for j in live), Fraction(0)),
            sum((c[1] for c in charged), Fraction(0)) + sum((j.delta for j in live), Fraction(0)),
        )

    def _remaining(self, ds: int) -> tuple[Fraction, Fraction]:
        (eps_used, delta_used), (eps_total, delta_total) = self._used(ds), self.totals[ds]
        return eps_total - eps_used, delta_total - delta_used

    def _in(self, *states: JobState) -> list[ModelJob]:
        return [j for j in self.jobs.values() if j.state in states]

    def _pick(self, pick: int, *states: JobState) -> ModelJob:
        candidates = self._in(*states)
        return candidates[pick % len(candidates)]

    def _new_owner(self) -> str:
        self.workers += 1
        return f"w{self.workers}"

    def _spend(self, job: ModelJob, quarter: Fraction) -> Fraction:
        """A spend between what the job already spent and its reservation, on the 1/40 grid."""
        return max(job.spent, job.epsilon * quarter)

    def _snapshot(self) -> list[list[Any]]:
        """Every row of every table, read on the driver (the ORM's overhead dominated the test)."""
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            return [cursor.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in TABLES]
        finally:
            connection.close()

    # -- rules ------------------------------------------------------------------------------

    @initialize(budgets=st.lists(st.tuples(st.integers(5, 30), BUDGET_DELTAS), min_size=2, max_size=2))
    def set_budgets(self, budgets: list[tuple[int, Fraction]]) -> None:
        for ds, (tenths, delta) in enumerate(budgets):
            self.set_budget(ds, Fraction(tenths, 10), delta)
            assert self.totals[ds] == (Fraction(tenths, 10), delta)

    @rule(
        ds=st.integers(0, 1), epsilon=st.integers(1, 30).map(lambda k: Fraction(k, 10)), delta=BUDGET_DELTAS
    )
    def set_budget(self, ds: int, epsilon: Fraction, delta: Fraction) -> None:
        """Raise or lower the total; never below what is charged or reserved."""
        eps_used, delta_used = self._used(ds)
        if epsilon >= eps_used and delta >= delta_used:
            with transaction(self.factory) as session:
                ledger.set_budget(session, self.datasets[ds], epsilon=float(epsilon), delta=float(delta))
            self.totals[ds] = (epsilon, delta)
            return
        before = self._snapshot()
        with pytest.raises(
            InvalidRequestError, match="cannot go below what jobs already charged or reserved"
        ):
            with transaction(self.factory) as session:
                ledger.set_budget(session, self.datasets[ds], epsilon=float(epsilon), delta=float(delta))
        assert self._snapshot() == before

    @rule(ds=st.integers(0, 1), epsilon=EPSILONS, delta=DELTAS, rest=st.booleans())
    def reserve(self, ds: int, epsilon: Fraction, delta: Fraction, rest: bool) -> None:
        eps_left, delta_left = self._remaining(ds)
        if rest:  # exactly what is left, as the ledger computes it in floats
            if eps_left <= 0:
                return
            with self.factory() as session:
                left = ledger.budget_of(session, session.get_one(Dataset, self.datasets[ds]))
            epsilon, asked = eps_left, left.epsilon_remaining
        else:
            asked = float(epsilon)
        if epsilon <= eps_left and delta <= delta_left:
            with transaction(self.factory) as session:
                job = self._reserve(session, ds, asked, delta)
            assert job.state == JobState.queued and job.epsilon_charged is None
            self.jobs[job.id] = ModelJob(job.id, ds, epsilon, delta)
            return
        before = self._snapshot()
        with pytest.raises(BudgetExhaustedError, match="but the dataset has only"):
            with transaction(self.factory) as session:
                self._reserve(session, ds, asked, delta)
        assert self._snapshot() == before

    @rule(
        requests=st.lists(
            st.tuples(st.integers(0, 1), st.integers(1, 8).map(lambda k: Fraction(k, 10)), DELTAS),
            min_size=1,
            max_size=3,
        )
    )
    def reserve_batch(self, requests: list[tuple[int, Fraction, Fraction]]) -> None:
        left = [list(self._remaining(ds)) for ds in range(2)]
        fits = True
        for ds, epsilon, delta in requests:
            fits &= epsilon <= left[ds][0] and delta <= left[ds][1]
            left[ds][0] -= epsilon
            left[ds][1] -= delta
        batch = [
            ledger.JobRequest(
                dataset_id=self.datasets[ds], epsilon=float(eps), delta=float(delta), rows=10, options={}
            )
            for ds, eps, delta in requests
        ]

        def submit(session: Session) -> list[Job]:
            row = Batch(tenant_id=self.tenant_id, created_by="k1")
            session.add(row)
            session.flush()
            return ledger.reserve_batch(session, batch, created_by="k1", batch_id=row.id)

        if fits:
            with transaction(self.factory) as session:
                created = submit(session)
            assert len(created) == len(requests)
            for job, (ds, epsilon, delta) in zip(created, requests, strict=True):
                self.jobs[job.id] = ModelJob(job.id, ds, epsilon, delta)
            return
        before = self._snapshot()
        with pytest.raises(BudgetExhaustedError, match="nothing was submitted"):
            with transaction(self.factory) as session:
                submit(session)
        assert self._snapshot() == before

    @precondition(lambda self: self._in(JobState.queued))
    @rule(pick=PICK, quarter=QUARTERS)
    def claim(self, pick: int, quarter: Fraction) -> None:
        """A worker takes a queued job and starts spending; a duplicate message finds nothing."""
        job, owner = self._pick(pick, JobState.queued), self._new_owner()
        with transaction(self.factory) as session:
            claimed = jobs.claim(session, job.id, owner=owner, lease_seconds=LEASE)
        assert claimed is not None and claimed.lease_owner == owner
        job.state, job.owner, job.attempts = JobState.running, owner, job.attempts + 1
        self._claim_again(job)
        if quarter:
            self._heartbeat(job, quarter)

    def _claim_again(self, job: ModelJob) -> None:
        before = self._snapshot()
        with transaction(self.factory) as session:
            assert jobs.claim(session, job.id, owner=self._new_owner(), lease_seconds=LEASE) is None
        assert self._snapshot() == before

    @precondition(lambda self: self._in(JobState.running))
    @rule(pick=PICK, quarter=QUARTERS)
    def heartbeat(self, pick: int, quarter: Fraction) -> None:
        self._heartbeat(self._pick(pick, JobState.running), quarter)

    def _heartbeat(self, job: ModelJob, quarter: Fraction) -> None:
        """The worker renews its lease, learns of a cancel, and reports what it has spent so far."""
        spent, owner = self._spend(job, quarter), job.owner or ""
        with transaction(self.factory) as session:
            assert jobs.renew(session, job.id, owner=owner, lease_seconds=LEASE) == (
                True,
                job.cancel_requested,
            )
            assert jobs.report_progress(
                session, job.id, owner=owner, progress=0.5, phase="fit", epoch=1.0, epsilon=float(spent)
            )
        job.spent = spent

    @precondition(lambda self: self._in(JobState.running))
    @rule(
        pick=PICK,
        quarter=QUARTERS,
        state=st.sampled_from([JobState.succeeded, JobState.failed, JobState.cancelled]),
        over=st.booleans(),
    )
    def finish(self, pick: int, quarter: Fraction, state: JobState, over: bool) -> None:
        """The worker succeeds or ends early with a spend in [spent so far, reservation].

        A spend over the reservation is refused and changes nothing.
        """
        job = self._pick(pick, JobState.running)
        spent = job.epsilon + Fraction(1, 10) if over else self._spend(job, quarter)
        before = self._snapshot() if over else None
        with _refused_if(over), transaction(self.factory) as session:
            if state == JobState.succeeded:
                jobs.succeed(
                    session,
                    job.id,
                    owner=job.owner or "",
                    epsilon=float(spent),
                    model_key=f"models/{job.id}",
                    release=self._release(job),
                )
            else:
                jobs.stop(
                    session, job.id, owner=job.owner or "", state=state, epsilon=float(spent), error=None
                )
        if over:
            assert self._snapshot() == before
        elif state == JobState.succeeded:
            self._settled(job, state, (spent, job.delta))
        else:  # delta is spent only with the first mechanism, as epsilon is
            self._settled(job, state, (spent, job.delta if spent > 0 else Fraction(0)))

    @precondition(lambda self: self._in(JobState.queued, JobState.running))
    @rule(pick=PICK)
    def request_cancel(self, pick: int) -> None:
        """Cancel a queued job (ends at once) or a running one (its worker is told to stop)."""
        job = self._pick(pick, JobState.queued, JobState.running)
        with transaction(self.factory) as session:
            row = jobs.request_cancel(session, session.get_one(Job, job.id), actor="key:k1")
            state, charge = row.state, (row.epsilon_charged, row.delta_charged)
        if job.state == JobState.running:  # told to stop; its worker settles what it spent
            job.cancel_requested = True
            return
        if job.attempts == 0:  # never ran: nothing was spent
            self._settled(job, JobState.cancelled, (Fraction(0), Fraction(0)))
            return
        # An earlier attempt died mid-training and what it spent is spent: the cancel may
        # charge its reported spend or the whole reservation (as reconcile does), or leave
        # the job for a worker to resume and settle, but it may not charge less.
        if state == JobState.queued:
            job.cancel_requested = True
            return
        assert charge[0] is not None and charge[1] is not None
        assert charge[0] >= float(job.spent) - 1e-12, (
            f"a job cancelled while requeued after a crash was charged {charge[0]}, "
            f"but its dead attempt had reported spending {float(job.spent)}: a lost charge"
        )
        self._settled(job, JobState.cancelled, (_exact(charge[0]), _exact(charge[1])))

    @precondition(lambda self: self._in(JobState.running))
    @rule(pick=PICK)
    def crash(self, pick: int) -> None:
        """The worker dies: its lease runs out and the sweep requeues the job, or gives up on it."""
        job = self._pick(pick, JobState.running)
        with transaction(self.factory) as session:
            session.execute(
                update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow() - timedelta(minutes=1))
            )
        with transaction(self.factory) as session:
            done = jobs.reconcile(session)  # live leases of the other running jobs are left alone
        if job.attempts < jobs.MAX_ATTEMPTS:
            assert done == jobs.Reconciled([job.id], [])
            job.past_owners.append(job.owner or "")
            job.state, job.owner = JobState.queued, None
        else:  # what the dead attempts spent cannot be read back: the whole reservation
            assert done == jobs.Reconciled([], [job.id])
            self._settled(job, JobState.failed, (job.epsilon, job.delta))

    @precondition(lambda self: [j for j in self.jobs.values() if j.past_owners])
    @rule(pick=PICK, quarter=QUARTERS)
    def zombie(self, pick: int, quarter: Fraction) -> None:
        """A worker whose job was requeued wakes up: it can neither report, renew nor settle."""
        haunted = [j for j in self.jobs.values() if j.past_owners]
        job = haunted[pick % len(haunted)]
        ghost = job.past_owners[pick % len(job.past_owners)]
        spent = float(self._spend(job, quarter))
        before = self._snapshot()
        with transaction(self.factory) as session:
            assert not jobs.report_progress(
                session, job.id, owner=ghost, progress=0.9, phase="fit", epoch=2.0, epsilon=spent
            )
            assert not jobs.renew(session, job.id, owner=ghost, lease_seconds=LEASE)[0]
        for settle in (
            lambda s: jobs.stop(s, job.id, owner=ghost, state=JobState.cancelled, epsilon=spent, error=None),
            lambda s: jobs.succeed(
                s, job.id, owner=ghost, epsilon=spent, model_key="m", release=self._release(job)
            ),
        ):
            with pytest.raises(ConflictError, match="no longer held"):
                with transaction(self.factory) as session:
                    settle(session)
        assert self._snapshot() == before

    def _reserve(self, session: Session, ds: int, epsilon: float, delta: Fraction) -> Job:
        return ledger.reserve(
            session,
            dataset_id=self.datasets[ds],
            created_by="k1",
            epsilon=epsilon,
            delta=float(delta),
            rows=10,
            options={},
        )

    def _release(self, job: ModelJob) -> Release:
        return Release(
            tenant_id=self.tenant_id,
            job_id=job.id,
            dataset_id=self.datasets[job.dataset],
            rows=10,
            storage_key=f"releases/{job.id}",
            certificate={},
        )

    def _settled(self, job: ModelJob, state: JobState, charge: tuple[Fraction, Fraction]) -> None:
        assert job.charge is None, f"job {job.id} settled twice"
        job.state, job.charge, job.owner = state, charge, None
        # A late message finds nothing to claim, and a late cancel is refused.
        self._claim_again(job)
        before = self._snapshot()
        with pytest.raises(ConflictError, match="already ended"):
            with transaction(self.factory) as session:
                jobs.request_cancel(session, session.get_one(Job, job.id), actor="key:k1")
        assert self._snapshot() == before

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def rows_match_the_model(self) -> None:
        with self.factory() as session:
            rows = {row.id: row for row in session.execute(select(Job.__table__))}
            datasets = {dataset.id: dataset for dataset in session.scalars(select(Dataset))}
            budgets = [ledger.budget_of(session, datasets[d]) for d in self.datasets]
        assert rows.keys() == self.jobs.keys()
        for job in self.jobs.values():
            row = rows[job.id]
            assert (row.state, row.lease_owner, row.attempts) == (job.state, job.owner, job.attempts)
            assert row.cancel_requested == job.cancel_requested
            assert _close(row.epsilon_spent, job.spent)
            # Charged exactly once: a final job has its charge, a live one none yet.
            assert (row.epsilon_charged is None) == (row.delta_charged is None) == (not job.state.final)
            if job.charge is not None:
                assert _close(row.epsilon_charged, job.charge[0]) and _close(row.delta_charged, job.charge[1])
                assert job.spent <= job.charge[0] <= job.epsilon and job.charge[1] <= job.delta
        charges = [j.charge for j in self.jobs.values() if j.charge is not None]
        eps_sum = math.fsum(row.epsilon_charged or 0.0 for row in rows.values())
        delta_sum = math.fsum(row.delta_charged or 0.0 for row in rows.values())
        assert _close(eps_sum, sum((c[0] for c in charges), Fraction(0)))
        assert _close(delta_sum, sum((c[1] for c in charges), Fraction(0)))
        for ds, budget in enumerate(budgets):
            eps_total, delta_total = self.totals[ds]
            assert _close(budget.epsilon_total, eps_total) and _close(budget.delta_total, delta_total)
            assert budget.epsilon_charged + budget.epsilon_reserved <= budget.epsilon_total + ledger.SLACK
            assert budget.delta_charged + budget.delta_reserved <= budget.delta_total * (1 + ledger.SLACK)
            eps_left, delta_left = self._remaining(ds)
            assert eps_left >= 0 and delta_left >= 0
            assert math.isclose(budget.epsilon_remaining, eps_left, abs_tol=1e-12)
            assert math.isclose(budget.delta_remaining, delta_left, abs_tol=1e-18)


def _refused_if(over: bool) -> AbstractContextManager[object]:
    """A charge above the reservation is refused loudly; a fitting one goes through."""
    return pytest.raises(ValueError, match="exceeds the reservation") if over else nullcontext()


def _dataset(session: Session, tenant_id: str, name: str) -> str:
    dataset = Dataset(
        tenant_id=tenant_id,
        name=name,
        file_format="csv",
        size_bytes=100,
        row_count=ROWS,
        sha256="0" * 64,
        inferred_schema={},
        schema={},
        storage_key=f"datasets/{name}",
        wrapped_key=b"k",
    )
    session.add(dataset)
    session.flush()
    return dataset.id


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    # Durability is not under test: skipping fsync makes each commit about 4x cheaper.
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous=OFF"))
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_ledger_and_jobs_follow_the_model(engine: Engine) -> None:
    machine = type("LedgerMachineOnFile", (LedgerMachine,), {"engine": engine})
    # About 800 steps at a few ms each. No explain phase: replaying every example under
    # coverage tracing would double the time a failure takes to report.
    phases = [phase for phase in Phase if phase != Phase.explain]
    run_state_machine_as_test(
        machine, settings=settings(max_examples=20, stateful_step_count=40, deadline=None, phases=phases)
    )


def test_request_cancel_charges_a_requeued_job_what_its_dead_attempt_spent(engine: Engine) -> None:
    """The machine's shortest lost charge: claim and spend, crash, requeue, cancel while queued.

    The dead attempt spent 0.3 (its checkpoint, accountant included, is still in storage),
    but ``request_cancel`` settles every queued job at 0.
    """
    factory = make_sessionmaker(engine)
    with transaction(factory) as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        dataset_id = _dataset(session, tenant.id, "d")
        ledger.set_budget(session, dataset_id, epsilon=1.0, delta=1e-5)
        job_id = ledger.reserve(
            session, dataset_id=dataset_id, created_by="k1", epsilon=0.5, delta=1e-6, rows=10, options={}
        ).id
    with transaction(factory) as session:
        assert jobs.claim(session, job_id, owner="w1", lease_seconds=-1) is not None  # dies at once
        jobs.report_progress(session, job_id, owner="w1", progress=0.5, phase="fit", epoch=1.0, epsilon=0.3)
    with transaction(factory) as session:
        assert jobs.reconcile(session) == jobs.Reconciled([job_id], [])
    with transaction(factory) as session:
        job = jobs.request_cancel(session, session.get_one(Job, job_id), actor="key:k1")
    assert job.state == JobState.cancelled
    assert job.epsilon_charged is not None and job.epsilon_charged >= 0.3

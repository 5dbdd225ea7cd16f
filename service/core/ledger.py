"""The privacy-budget ledger of each dataset.

A dataset has a total budget (epsilon, delta). Each job reserves its (epsilon, delta)
when it is created and, once final, is charged what it really spent; releases compose
sequentially, so the dataset's spend is the sum over its jobs. The check and the
reservation happen in one transaction that holds the dataset's lock (``FOR UPDATE`` on
Postgres; SQLite's ``BEGIN IMMEDIATE`` serializes writers), so two jobs racing for the
last budget cannot both win.

Sums use ``math.fsum`` and compare with an absolute slack of ``SLACK`` so that decimal
inputs such as 0.1 + 0.2 fit a budget of 0.3; the slack is far below any epsilon that
matters and is stated in every budget statement.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.config import check_delta, default_delta
from models.errors import PrivacyParameterError
from service.core.errors import BudgetExhaustedError, ConflictError, InvalidRequestError
from service.core.orm import Dataset, Job, JobState

SLACK = 1e-9


@dataclass(frozen=True, kw_only=True)
class Budget:
    """A dataset's budget: the total, what final jobs were charged, what live jobs reserve."""

    epsilon_total: float | None
    delta_total: float | None
    epsilon_charged: float
    delta_charged: float
    epsilon_reserved: float
    delta_reserved: float

    @property
    def epsilon_remaining(self) -> float:
        """Epsilon still free for new jobs."""
        if self.epsilon_total is None:
            return 0.0
        return max(0.0, self.epsilon_total - self.epsilon_charged - self.epsilon_reserved)

    @property
    def delta_remaining(self) -> float:
        """Delta still free for new jobs."""
        if self.delta_total is None:
            return 0.0
        return max(0.0, self.delta_total - self.delta_charged - self.delta_reserved)

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for the API."""
        return {
            "epsilon_total": self.epsilon_total,
            "delta_total": self.delta_total,
            "epsilon_charged": self.epsilon_charged,
            "delta_charged": self.delta_charged,
            "epsilon_reserved": self.epsilon_reserved,
            "delta_reserved": self.delta_reserved,
            "epsilon_remaining": self.epsilon_remaining,
            "delta_remaining": self.delta_remaining,
        }


def lock_dataset(session: Session, dataset_id: str) -> Dataset:
    """The dataset row, locked until the transaction ends."""
    return session.scalars(select(Dataset).where(Dataset.id == dataset_id).with_for_update()).one()


def budget_of(session: Session, dataset: Dataset) -> Budget:
    """The dataset's budget as the job rows say."""
    jobs = session.execute(
        select(Job.state, Job.epsilon, Job.delta, Job.epsilon_charged, Job.delta_charged).where(
            Job.dataset_id == dataset.id
        )
    ).all()
    final = [j for j in jobs if JobState(j.state).final]
    live = [j for j in jobs if not JobState(j.state).final]
    return Budget(
        epsilon_total=dataset.epsilon_budget,
        delta_total=dataset.delta_budget,
        epsilon_charged=math.fsum(j.epsilon_charged or 0.0 for j in final),
        delta_charged=math.fsum(j.delta_charged or 0.0 for j in final),
        epsilon_reserved=math.fsum(j.epsilon for j in live),
        delta_reserved=math.fsum(j.delta for j in live),
    )


def default_total_delta(rows: int) -> float:
    """A dataset's default total delta: a power of ten at most 1/(10 n), like one release's."""
    return default_delta(rows)


def default_job_delta(rows: int, delta_total: float) -> float:
    """A job's default delta: a tenth of the total, rounded down to a power of ten.

    About ten releases fit the total, and it is never above the engine's own default.
    """
    return min(default_delta(rows), 10.0 ** math.floor(math.log10(delta_total / 10)))


def set_budget(session: Session, dataset_id: str, *, epsilon: float, delta: float | None) -> Budget:
    """Set the dataset's total budget; it may not drop below what is charged or reserved.

    ``delta=None`` picks ``default_total_delta`` for the dataset's row count.

    Raises:
        InvalidRequestError: non-positive values, delta >= 1, or a total below what is used.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InvalidRequestError(f"epsilon budget must be a finite number > 0, got {epsilon!r}")
    dataset = lock_dataset(session, dataset_id)
    if delta is None:
        delta = default_total_delta(dataset.row_count)
    if not (0 < delta < 1):
        raise InvalidRequestError(f"delta budget must be in (0, 1), got {delta!r}")
    used = budget_of(session, dataset)
    eps_used = used.epsilon_charged + used.epsilon_reserved
    delta_used = used.delta_charged + used.delta_reserved
    if epsilon + SLACK < eps_used or delta * (1 + SLACK) < delta_used:
        raise InvalidRequestError(
            f"the budget cannot go below what jobs already charged or reserved: "
            f"epsilon {eps_used:.6g}, delta {delta_used:.3g}"
        )
    dataset.epsilon_budget, dataset.delta_budget = float(epsilon), float(delta)
    return budget_of(session, dataset)


def reserve(
    session: Session,
    *,
    dataset_id: str,
    created_by: str,
    epsilon: float,
    delta: float | None,
    rows: int,
    options: dict[str, Any],
    batch_id: str | None = None,
) -> Job:
    """Check the budget and create the job that reserves it, under the dataset's lock.

    ``delta=None`` picks ``default_job_delta``: about ten releases fit the total delta.

    Raises:
        InvalidRequestError: bad epsilon/delta/rows, or delta >= 1/n.
        ConflictError: the raw data was erased or no budget was set.
        BudgetExhaustedError: the job does not fit what remains.
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise InvalidRequestError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if rows <= 0:
        raise InvalidRequestError(f"rows must be > 0, got {rows!r}")
    dataset = lock_dataset(session, dataset_id)
    if dataset.raw_deleted_at is not None:
        raise ConflictError("the raw data of this dataset was erased; no new job can train on it")
    if dataset.epsilon_budget is None or dataset.delta_budget is None:
        raise ConflictError("set the dataset's privacy budget (PUT /datasets/{id}/budget) before training")
    if delta is None:
        delta = default_job_delta(dataset.row_count, dataset.delta_budget)
    delta = float(delta)
    if not (math.isfinite(delta) and delta > 0):
        raise InvalidRequestError(f"delta must be a finite number > 0, got {delta!r}")
    try:
        check_delta(delta, dataset.row_count)
    except PrivacyParameterError as exc:
        raise InvalidRequestError(str(exc)) from None
    budget = budget_of(session, dataset)
    if epsilon > budget.epsilon_remaining + SLACK or delta > budget.delta_remaining * (1 + SLACK):
        raise BudgetExhaustedError(
            f"the job needs epsilon {epsilon:.6g}, delta {delta:.3g} but the dataset has only "
            f"epsilon {budget.epsilon_remaining:.6g}, delta {budget.delta_remaining:.3g} left",
            epsilon_remaining=budget.epsilon_remaining,
            delta_remaining=budget.delta_remaining,
        )
    # A seed for everything but the privacy noise, recorded so the release can be re-derived.
    options = {"seed": secrets.randbelow(2**31), **options}
    job = Job(
        tenant_id=dataset.tenant_id,
        dataset_id=dataset.id,
        created_by=created_by,
        state=JobState.queued,
        epsilon=float(epsilon),
        delta=delta,
        rows=rows,
        options=options,
        batch_id=batch_id,
    )
    session.add(job)
    session.flush()
    return job


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    """One job of a batch, as ``reserve`` takes it."""

    dataset_id: str
    epsilon: float
    delta: float | None
    rows: int
    options: dict[str, Any]


def reserve_batch(
    session: Session, requests: list[JobRequest], *, created_by: str, batch_id: str
) -> list[Job]:
    """Reserve every job of a batch in this transaction, or none.

    The datasets are locked first, in id order, so two batches over the same datasets
    cannot deadlock; each reservation then sees the ones before it (they are flushed), so
    the sum per dataset is checked. Any refusal raises and the caller's transaction rolls
    everything back: a manifest over a dataset's budget is refused whole, before anything runs.

    Raises:
        BudgetExhaustedError, InvalidRequestError, ConflictError: as ``reserve``, naming the job.
    """
    for dataset_id in sorted({r.dataset_id for r in requests}):
        lock_dataset(session, dataset_id)
    jobs = []
    for index, r in enumerate(requests):
        try:
            jobs.append(
                reserve(
                    session,
                    dataset_id=r.dataset_id,
                    created_by=created_by,
                    epsilon=r.epsilon,
                    delta=r.delta,
                    rows=r.rows,
                    options=r.options,
                    batch_id=batch_id,
                )
            )
        except BudgetExhaustedError as exc:
            raise BudgetExhaustedError(
                f"job {index + 1} of the batch (dataset {r.dataset_id}): {exc}; nothing was submitted",
                epsilon_remaining=exc.epsilon_remaining,
                delta_remaining=exc.delta_remaining,
            ) from None
        except (InvalidRequestError, ConflictError) as exc:
            raise type(exc)(
                f"job {index + 1} of the batch (dataset {r.dataset_id}): {exc}; nothing was submitted"
            ) from None
    return jobs


def settle(job: Job, *, state: JobState, epsilon: float, delta: float) -> None:
    """Move ``job`` to a final state and charge it; a job is charged exactly once.

    The charge never exceeds the reservation: the engine cannot spend more than its
    target, so a larger figure is a bug and is refused loudly.

    Raises:
        ConflictError: the job is already final (its charge is settled).
        ValueError: the charge exceeds the reservation.
    """
    if JobState(job.state).final:
        raise ConflictError(f"job {job.id} is already {job.state}; its charge is settled")
    if not state.final:
        raise ValueError(f"settle() needs a final state, got {state}")
    if not (math.isfinite(epsilon) and epsilon >= 0 and math.isfinite(delta) and delta >= 0):
        raise ValueError(f"a charge must be finite and >= 0, got ({epsilon}, {delta})")
    if epsilon > job.epsilon + SLACK or delta > job.delta * (1 + SLACK):
        raise ValueError(f"charge ({epsilon}, {delta}) exceeds the reservation ({job.epsilon}, {job.delta})")
    job.state = state
    job.epsilon_charged = float(min(epsilon, job.epsilon))
    job.delta_charged = float(min(delta, job.delta))

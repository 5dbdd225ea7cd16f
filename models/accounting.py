"""One accountant for every mechanism that touches raw data.

Every mechanism dpsynth runs is a Gaussian mechanism: domain discovery and measured
marginals are plain Gaussian mechanisms (sample rate 1, one step) and DP-SGD is the
Poisson-subsampled Gaussian. So all of them compose in one Opacus accountant (PRV by
default, RDP as an option), and the spent epsilon is the accountant's answer for the
whole history.

``PrivacyLedger`` is the only way the engine spends budget. A training run first
``plan``s everything it will spend; the plan is checked against the target with the
accountant before anything runs, and each mechanism is then ``charge``d as it runs.
A charge outside the plan is checked again against the target, so the total can never
exceed it. Composition is monotone, so any prefix of a checked plan is within budget.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from opacus.accountants import IAccountant, PRVAccountant, RDPAccountant

from models.errors import BudgetExceededError, PrivacyParameterError

AccountantName = Literal["prv", "rdp"]

_ACCOUNTANTS: dict[str, type[IAccountant]] = {}

# Tolerance when the accountant is asked to hit the target exactly: we plan to land a
# hair under it, never over.
_PLAN_SLACK = 1e-6


def register_accountant(name: str, cls: type[IAccountant]) -> None:
    """Make an Opacus-compatible accountant available under ``name``.

    Raises:
        ValueError: ``name`` is already registered.
    """
    if name in _ACCOUNTANTS:
        raise ValueError(f"accountant {name!r} is already registered")
    _ACCOUNTANTS[name] = cls


def create_accountant(name: str) -> IAccountant:
    """A fresh accountant by name (``"prv"`` or ``"rdp"``).

    Raises:
        PrivacyParameterError: the name is unknown.
    """
    try:
        return _ACCOUNTANTS[name]()
    except KeyError:
        raise PrivacyParameterError(
            f"unknown accountant {name!r}; choose one of {sorted(_ACCOUNTANTS)}"
        ) from None


register_accountant("prv", PRVAccountant)
register_accountant("rdp", RDPAccountant)


@dataclass(frozen=True, kw_only=True)
class Mechanism:
    """A Gaussian mechanism as the accountant sees it.

    Attributes:
        name: what it measures, e.g. ``"marginal:age,sex"`` or ``"dp-sgd:discriminator"``.
        noise_multiplier: noise standard deviation divided by the L2 sensitivity.
        sample_rate: Poisson sampling rate; 1.0 for a mechanism on the whole table.
        steps: how many times it runs.
        details: parameters worth recording (sensitivity, clipping norm, bins, ...).
    """

    name: str
    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise PrivacyParameterError(
                f"{self.name}: noise_multiplier must be > 0, got {self.noise_multiplier!r}"
            )
        if not 0 < self.sample_rate <= 1:
            raise PrivacyParameterError(
                f"{self.name}: sample_rate must be in (0, 1], got {self.sample_rate!r}"
            )
        if self.steps < 0:
            raise PrivacyParameterError(f"{self.name}: steps must be >= 0, got {self.steps!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form for certificates."""
        return asdict(self)


def _merged_history(history: Iterable[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """The same privacy loss with all full-table Gaussian mechanisms merged into one.

    Repeats of one subsampled mechanism are merged into one entry too.

    Composing Gaussian mechanisms with noise multipliers s_i is exactly a Gaussian
    mechanism with s = (sum 1/s_i^2)^(-1/2) (their privacy loss distributions are
    Gaussian and their means add), so this only makes the accountant faster.
    """
    inv_var = 0.0
    # Subsampled mechanisms with the same (sigma, q) compose into one entry with the steps
    # summed (composition does not depend on order); accountants cost per entry.
    rest: dict[tuple[float, float], int] = {}
    for sigma, q, steps in history:
        if q == 1.0:
            inv_var += steps / sigma**2
        elif steps:
            rest[(sigma, q)] = rest.get((sigma, q), 0) + steps
    merged = [(inv_var**-0.5, 1.0, 1)] if inv_var else []
    return merged + [(sigma, q, steps) for (sigma, q), steps in rest.items()]


def epsilon_of(history: Iterable[tuple[float, float, int]], *, delta: float, accountant: str) -> float:
    """Epsilon the named accountant gives for ``history`` at ``delta``.

    PRV's numerical discretisation blows up (memory, then errors) at very small noise;
    where the RDP bound, also a valid upper bound, is already above ``_PRV_MAX_EPSILON``
    (or PRV fails), the RDP bound is returned instead.
    """
    merged = _merged_history(history)
    if not merged:
        return 0.0
    acct = create_accountant(accountant)
    acct.history = merged
    # Opacus' PRV takes log(1 - q) for q = 1 and RDP warns at its largest order; both
    # are harmless edge cases of full-table mechanisms and must not become errors.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        warnings.simplefilter("ignore")
        if accountant == "rdp":
            return float(acct.get_epsilon(delta, alphas=_RDP_ORDERS))
        rdp = epsilon_of(merged, delta=delta, accountant="rdp")
        if rdp > _PRV_MAX_EPSILON:
            return rdp
        try:
            return min(float(acct.get_epsilon(delta)), rdp)
        except (RuntimeError, ValueError, FloatingPointError, MemoryError):
            return rdp


_PRV_MAX_EPSILON = 50.0
_RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256, 512, 1024]


def _history(mechanisms: Iterable[Mechanism]) -> list[tuple[float, float, int]]:
    return [(m.noise_multiplier, m.sample_rate, m.steps) for m in mechanisms]


class PrivacyLedger:
    """Plans, checks and records every mechanism of one fit against a target (epsilon, delta).

    Args:
        epsilon: target epsilon; the spent epsilon never exceeds it.
        delta: total delta of the release.
        accountant: ``"prv"`` (default) or ``"rdp"``.
        delta_reserved: part of ``delta`` spent outside the accountant (the failure
            probability of thresholded partition selection); the accountant gets the rest.
    """

    def __init__(
        self, *, epsilon: float, delta: float, accountant: AccountantName = "prv", delta_reserved: float = 0.0
    ) -> None:
        if not 0 <= delta_reserved < delta:
            raise PrivacyParameterError(f"delta_reserved must be in [0, delta), got {delta_reserved!r}")
        create_accountant(accountant)  # fail early on an unknown name
        self.epsilon = epsilon
        self.delta = delta
        self.accountant = accountant
        self.delta_reserved = delta_reserved
        self.spent: list[Mechanism] = []
        self.planned: list[Mechanism] = []

    @property
    def accountant_delta(self) -> float:
        """The delta the accountant's epsilon is computed at."""
        return self.delta - self.delta_reserved

    def epsilon_for(self, mechanisms: Iterable[Mechanism]) -> float:
        """Epsilon of ``mechanisms`` composed with what was already spent."""
        return epsilon_of(
            _history([*self.spent, *mechanisms]), delta=self.accountant_delta, accountant=self.accountant
        )

    def plan(self, mechanisms: list[Mechanism]) -> float:
        """Check that spending ``mechanisms`` keeps the total within target, and remember them.

        Returns:
            the epsilon the plan will have spent when it completes.

        Raises:
            BudgetExceededError: the plan would exceed the target epsilon.
        """
        total = self.epsilon_for(mechanisms)
        if total > self.epsilon:
            raise BudgetExceededError(
                f"planned mechanisms need epsilon {total:.6g} but the target is {self.epsilon:.6g}; "
                "lower the number of steps or raise the noise"
            )
        self.planned = list(mechanisms)
        return total

    def charge(self, mechanism: Mechanism) -> None:
        """Record that ``mechanism`` is about to run; call it *before* releasing its output.

        A charge the plan covers needs no new check: the plan was checked whole. Any other
        charge is checked together with the rest of the plan, so that the invariant
        "spent + still planned <= target" holds after every charge.

        Raises:
            BudgetExceededError: the mechanism is not covered by the plan and would push the
                total (including what is still planned) past the target; nothing is recorded.
        """
        if not self._covered_by_plan(mechanism):
            total = self.epsilon_for([mechanism, *self._remaining_plan()])
            if total > self.epsilon:
                raise BudgetExceededError(
                    f"{mechanism.name} would raise the spent epsilon to {total:.6g}, over the "
                    f"target {self.epsilon:.6g}; nothing was run"
                )
        last = self.spent[-1] if self.spent else None
        if last is not None and (last.name, last.noise_multiplier, last.sample_rate, last.details) == (
            mechanism.name,
            mechanism.noise_multiplier,
            mechanism.sample_rate,
            mechanism.details,
        ):
            # One DP-SGD step at a time: keep one record with the steps counted, not thousands.
            self.spent[-1] = replace(last, steps=last.steps + mechanism.steps)
        else:
            self.spent.append(mechanism)

    def _steps_spent(self, name: str) -> int:
        return sum(m.steps for m in self.spent if m.name == name)

    def _covered_by_plan(self, mechanism: Mechanism) -> bool:
        plan = next((m for m in self.planned if m.name == mechanism.name), None)
        return (
            plan is not None
            and plan.noise_multiplier <= mechanism.noise_multiplier
            and plan.sample_rate >= mechanism.sample_rate
            and self._steps_spent(mechanism.name) + mechanism.steps <= plan.steps
        )

    def _remaining_plan(self) -> list[Mechanism]:
        rest = []
        for plan in self.planned:
            left = plan.steps - self._steps_spent(plan.name)
            if left > 0:
                rest.append(
                    Mechanism(
                        name=plan.name,
                        noise_multiplier=plan.noise_multiplier,
                        sample_rate=plan.sample_rate,
                        steps=left,
                    )
                )
        return rest

    def epsilon_spent(self) -> float:
        """Epsilon of everything charged so far (0 if nothing was)."""
        return self.epsilon_for([])

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume accounting exactly, as plain JSON-able data."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "delta_reserved": self.delta_reserved,
            "spent": [m.to_dict() for m in self.spent],
            "planned": [m.to_dict() for m in self.planned],
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger saved with ``state_dict``."""
        ledger = cls(
            epsilon=state["epsilon"],
            delta=state["delta"],
            accountant=state["accountant"],
            delta_reserved=state["delta_reserved"],
        )
        ledger.spent = [Mechanism(**m) for m in state["spent"]]
        ledger.planned = [Mechanism(**m) for m in state["planned"]]
        return ledger


def solve_scale(epsilon_at: Callable[[float], float], target: float, *, rel_tol: float = 2e-3) -> float:
    """Smallest scale s (within ``rel_tol``, from above) with ``epsilon_at(s) <= target``.

    ``epsilon_at`` must decrease as s grows (s multiplies every noise multiplier).

    Raises:
        PrivacyParameterError: no scale in a very wide range meets the target.
    """
    goal = target * (1 - _PLAN_SLACK)
    lo, hi = 0.5, 1.0
    if epsilon_at(hi) > goal:
        while epsilon_at(hi) > goal:
            lo, hi = hi, hi * 2
            if hi > 1e7:
                raise PrivacyParameterError(f"epsilon {target!r} is too small to reach with any noise")
    else:
        while epsilon_at(lo) <= goal:
            lo, hi = lo / 2, lo
            if lo < 1e-7:
                return hi
    while hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)
        if epsilon_at(mid) > goal:
            lo = mid
        else:
            hi = mid
    return hi

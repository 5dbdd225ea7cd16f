"""Split the privacy budget between mechanisms, before any of them runs.

Each full-table histogram gets a weight w and noise multiplier s / sqrt(w), so weights
are shares of zCDP-style budget (1 / 2 sigma^2 adds up across Gaussian mechanisms). The
DP-SGD discriminator, when on, is given noise so that alone it would spend
``discriminator_share * epsilon``; then one scale s is solved so that the whole plan,
composed by the accountant, meets the target epsilon. The plan is checked by the
ledger, so training never starts on a plan over budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from models.accounting import Mechanism, PrivacyLedger, epsilon_of, solve_scale
from models.config import SynthesizerConfig
from models.domain import domain_measurements
from models.gan import DPSGDParams, sample_rate_for
from models.marginals import pair_workload
from models.schema import ColumnKind, ColumnSpec

# Budget weights of the per-column histograms. Bounds only need the order of magnitude.
_W_BOUNDS, _W_CELLS, _W_ONE_WAY = 0.25, 1.0, 1.0


@dataclass(frozen=True)
class BudgetPlan:
    """Noise of every mechanism of a fit, fixed before the data is touched."""

    sigma: dict[str, float]
    pairs: list[tuple[int, int]]
    dpsgd: DPSGDParams | None
    epsilon_planned: float


# Share of delta reserved for partition selection (outside the accountant) when any
# category set is discovered with DP.
_SELECTION_DELTA_SHARE = 0.25


def new_ledger(specs: list[ColumnSpec], *, config: SynthesizerConfig, delta: float) -> PrivacyLedger:
    """The ledger of one fit, reserving part of delta when a category set is DP-selected."""
    selecting = any(s.kind is ColumnKind.CATEGORICAL and s.categories is None for s in specs)
    return PrivacyLedger(
        epsilon=config.epsilon,
        delta=delta,
        accountant=config.accountant,
        delta_reserved=delta * _SELECTION_DELTA_SHARE if selecting else 0.0,
    )


def default_pair_share(n_pairs: int) -> float:
    """0.5 up to 60 pairs, then shrinking slowly (0.37 at 171 pairs, a 19-column table)."""
    return 0.5 * min(1.0, 60 / max(n_pairs, 1)) ** 0.3


def _weights(
    specs: list[ColumnSpec], target: str | None, config: SynthesizerConfig, with_pairs: bool
) -> tuple[dict[str, float], list[tuple[int, int]]]:
    """Per-column histograms get fixed weights; pairs share ``pair_budget_share`` of the total.

    Without a cap on the pairs' share, a wide table (d columns, d(d-1)/2 pairs) would leave
    almost nothing for the 1-way marginals. Pairs with the (public) target column matter most
    for downstream models, so they get ``target_pair_share`` of the pairs' budget.
    """
    weights: dict[str, float] = {}
    for spec in specs:
        for name in domain_measurements(spec):
            weights[name] = _W_BOUNDS if name.endswith(":bounds") else _W_CELLS
        # DP-selected categories re-use their selection counts as the 1-way marginal.
        if spec.kind is ColumnKind.BOOLEAN or (
            spec.kind is ColumnKind.CATEGORICAL and spec.categories is not None
        ):
            weights[f"marginal:{spec.name}"] = _W_ONE_WAY
    names = [s.name for s in specs]
    target_idx = names.index(target) if target in names else None
    pairs = pair_workload(len(specs), target_idx) if with_pairs else []
    if not pairs:
        return weights, pairs
    share = config.pair_budget_share or default_pair_share(len(pairs))
    pair_total = sum(weights.values()) * share / (1 - share)
    with_target = [p for p in pairs if target_idx in p]
    others = [p for p in pairs if target_idx not in p]
    target_total = pair_total * (
        config.target_pair_share if with_target and others else float(bool(with_target))
    )
    for group, total in ((with_target, target_total), (others, pair_total - target_total)):
        for a, b in group:
            weights[f"marginal:{names[a]},{names[b]}"] = total / len(group)
    return weights, pairs


def make_plan(
    specs: list[ColumnSpec],
    *,
    target: str | None,
    rows: int,
    config: SynthesizerConfig,
    ledger: PrivacyLedger,
    with_pairs: bool = True,
) -> BudgetPlan:
    """Noise multipliers for every mechanism, checked against the target by ``ledger``.

    ``with_pairs=False`` plans only domains and 1-way marginals (the independent baseline).

    Raises:
        BudgetExceededError: the plan does not fit (the ledger's check).
    """
    weights, pairs = _weights(specs, target, config, with_pairs)
    delta = ledger.accountant_delta
    dpsgd = None
    if config.discriminator_share > 0:
        batch = min(config.batch_size, max(rows // 4, 1))
        q = sample_rate_for(rows, batch)
        steps = max(1, math.ceil(config.dpsgd_epochs / q))
        goal = config.discriminator_share * config.epsilon
        sigma_d = solve_scale(
            lambda s: epsilon_of([(s, q, steps)], delta=delta, accountant=ledger.accountant),
            goal,
            rel_tol=1e-2,
        )
        dpsgd = DPSGDParams(
            noise_multiplier=sigma_d,
            max_grad_norm=config.max_grad_norm,
            expected_batch_size=batch,
            sample_rate=q,
            steps=steps,
        )
    fixed = [] if dpsgd is None else [(dpsgd.noise_multiplier, dpsgd.sample_rate, dpsgd.steps)]
    total_weight = sum(weights.values())
    if total_weight == 0:
        raise ValueError("nothing to synthesize: every column is dropped")

    def eps_at(scale: float) -> float:
        # All full-table Gaussians compose to one with 1/sigma^2 = total_weight / scale^2.
        merged = (scale / math.sqrt(total_weight), 1.0, 1)
        return epsilon_of([merged, *fixed], delta=delta, accountant=ledger.accountant)

    scale = solve_scale(eps_at, config.epsilon)
    sigma = {name: scale / math.sqrt(w) for name, w in weights.items()}
    mechanisms = [Mechanism(name=n, noise_multiplier=s) for n, s in sigma.items()]
    if dpsgd is not None:
        mechanisms.append(dpsgd.mechanism())
    planned = ledger.plan(mechanisms)
    return BudgetPlan(sigma=sigma, pairs=pairs, dpsgd=dpsgd, epsilon_planned=planned)

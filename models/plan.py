"""Split the privacy budget between mechanisms, before any of them runs.

Each full-table histogram gets a weight w and noise multiplier s / sqrt(w), so weights
are shares of zCDP-style budget (1 / 2 sigma^2 adds up across Gaussian mechanisms). The
DP-SGD discriminator, when on, is given noise so that alone it would spend
``discriminator_share * epsilon``; then one scale s is solved so that the whole plan,
composed by the accountant, meets the target epsilon. The plan is checked by the
ledger, so training never starts on a plan over budget.

``describe_budget`` shows that split before anything runs, from the schema alone (kinds,
public domains, target) and the row count: no value of the data is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from models.accounting import Mechanism, PrivacyLedger, epsilon_of, solve_scale
from models.config import SynthesizerConfig
from models.domain import domain_measurements
from models.gan import DPSGD_NAME, DPSGDParams, sample_rate_for
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


Stage = Literal["domain", "one-way", "two-way", "dp-sgd"]


@dataclass(frozen=True)
class BudgetLine:
    """One planned mechanism and its share of the fit's privacy loss.

    Attributes:
        mechanism: its name in the certificate, e.g. ``"domain:age:cells"``.
        stage: ``"domain"`` (bounds, DP quantile-bin cells, category selection), ``"one-way"``
            or ``"two-way"`` marginals, or ``"dp-sgd"`` (the DP-GAN discriminator).
        columns: the columns it reads.
        noise_multiplier: noise standard deviation over sensitivity.
        share: its part of the privacy loss, in [0, 1]; shares add up to 1.
    """

    mechanism: str
    stage: Stage
    columns: tuple[str, ...]
    noise_multiplier: float
    share: float


@dataclass(frozen=True)
class BudgetSplit:
    """The plan of one fit, before anything runs (see ``describe_budget``)."""

    epsilon: float
    delta: float
    delta_partition_selection: float
    lines: list[BudgetLine]

    def share(self, *stages: Stage, column: str | None = None) -> float:
        """Sum of the shares of ``stages`` (all when none), optionally only lines reading ``column``."""
        return math.fsum(
            line.share
            for line in self.lines
            if (not stages or line.stage in stages) and (column is None or column in line.columns)
        )


def describe_budget(
    specs: list[ColumnSpec], *, target: str | None, rows: int, config: SynthesizerConfig, delta: float
) -> BudgetSplit:
    """How a fit on ``specs`` would split ``config.epsilon``, computed by the planner itself.

    Reads no data: only kinds, public domains, the target and ``rows`` (which matters only
    for the DP-SGD sample rate). Shares are those the planner assigns: the full-table
    Gaussian mechanisms add up in zCDP, so each gets ``(1/sigma^2) / sum(1/sigma^2)`` of
    what the DP-SGD discriminator leaves; the discriminator is planned to spend
    ``discriminator_share * epsilon`` alone and gets that share.

    Raises:
        ValueError: every column is dropped (nothing to synthesize).
    """
    ledger = new_ledger(specs, config=config, delta=delta)
    plan = make_plan(specs, target=target, rows=rows, config=config, ledger=ledger)
    names = [s.name for s in specs]
    columns: dict[str, tuple[Stage, tuple[str, ...]]] = {}
    for spec in specs:
        for name in domain_measurements(spec):
            columns[name] = ("domain", (spec.name,))
        columns[f"marginal:{spec.name}"] = ("one-way", (spec.name,))
    for a, b in plan.pairs:
        columns[f"marginal:{names[a]},{names[b]}"] = ("two-way", (names[a], names[b]))
    gaussian = 1.0 - (config.discriminator_share if plan.dpsgd is not None else 0.0)
    precision = math.fsum(sigma**-2 for sigma in plan.sigma.values())
    lines = [
        BudgetLine(
            mechanism=name,
            stage=columns[name][0],
            columns=columns[name][1],
            noise_multiplier=sigma,
            share=gaussian * sigma**-2 / precision,
        )
        for name, sigma in plan.sigma.items()
    ]
    if plan.dpsgd is not None:
        lines.append(
            BudgetLine(
                mechanism=DPSGD_NAME,
                stage="dp-sgd",
                columns=tuple(names),
                noise_multiplier=plan.dpsgd.noise_multiplier,
                share=config.discriminator_share,
            )
        )
    return BudgetSplit(
        epsilon=config.epsilon,
        delta=delta,
        delta_partition_selection=ledger.delta_reserved,
        lines=lines,
    )

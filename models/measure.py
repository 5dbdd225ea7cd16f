"""Run the planned full-table mechanisms: domain discovery, then 1-way and 2-way marginals.

Every histogram is charged to the ledger inside the function that releases it; the
choices made between them (bins, groupings) use DP outputs only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from models.accounting import PrivacyLedger
from models.domain import Domain, discover_categorical, discover_numeric
from models.errors import FitCancelledError
from models.marginals import UNMEASURED, Marginal, group_map_for_pairs, measure, one_way_from_domain
from models.noise import PrivacyNoise
from models.plan import BudgetPlan
from models.schema import ColumnKind, ColumnSpec
from models.transform import TableEncoder

_MAX_PAIR_GROUPS = 10


def _check_stop(should_stop: Callable[[], bool] | None, ledger: PrivacyLedger) -> None:
    if should_stop is not None and should_stop():
        raise FitCancelledError("fit cancelled during measurement", epsilon_spent=ledger.epsilon_spent())


def discover_domains(
    df: pd.DataFrame,
    specs: list[ColumnSpec],
    plan: BudgetPlan,
    *,
    ledger: PrivacyLedger,
    noise: PrivacyNoise,
    should_stop: Callable[[], bool] | None = None,
) -> list[Domain]:
    """Public domains as declared; the rest discovered with the planned noise."""
    n_selected = sum(1 for s in specs if s.kind is ColumnKind.CATEGORICAL and s.categories is None)
    delta_select = ledger.delta_reserved / n_selected if n_selected else 0.0
    domains: list[Domain] = []
    for spec in specs:
        _check_stop(should_stop, ledger)
        if spec.kind.is_numeric:
            domains.append(
                discover_numeric(
                    spec,
                    df[spec.name],
                    sigma=plan.sigma[f"domain:{spec.name}:cells"],
                    sigma_bounds=plan.sigma.get(f"domain:{spec.name}:bounds"),
                    ledger=ledger,
                    noise=noise,
                )
            )
        else:
            sigma = plan.sigma.get(f"domain:{spec.name}:categories", 1.0)
            domains.append(
                discover_categorical(
                    spec, df[spec.name], sigma=sigma, delta_select=delta_select, ledger=ledger, noise=noise
                )
            )
    return domains


def measure_marginals(
    tokens: np.ndarray,
    encoder: TableEncoder,
    plan: BudgetPlan,
    *,
    ledger: PrivacyLedger,
    noise: PrivacyNoise,
    max_pair_groups: int | None,
    should_stop: Callable[[], bool] | None = None,
) -> list[Marginal]:
    """1-way marginals of every column (numeric ones re-use their domain), then the pairs."""
    names = encoder.columns
    one_way: list[Marginal] = []
    for j, dom in enumerate(encoder.domains):
        _check_stop(should_stop, ledger)
        reused = one_way_from_domain(j, dom)
        if reused is not None:
            one_way.append(reused)
        else:
            identity = np.arange(dom.n_tokens)
            sigma = plan.sigma[f"marginal:{dom.name}"]
            one_way.append(
                measure(
                    tokens,
                    (j,),
                    (identity,),
                    name=f"marginal:{dom.name}",
                    sigma=sigma,
                    ledger=ledger,
                    noise=noise,
                )
            )
    n_hat = estimated_rows(one_way)
    pair_sigmas = [plan.sigma[f"marginal:{names[a]},{names[b]}"] for a, b in plan.pairs]
    groups = max_pair_groups or _pair_groups(n_hat, float(np.median(pair_sigmas)) if pair_sigmas else 1.0)
    maps = group_map_for_pairs(encoder.domains, one_way, groups)
    two_way = []
    for (a, b), sigma in zip(plan.pairs, pair_sigmas, strict=True):
        _check_stop(should_stop, ledger)
        name = f"marginal:{names[a]},{names[b]}"
        two_way.append(
            measure(tokens, (a, b), (maps[a], maps[b]), name=name, sigma=sigma, ledger=ledger, noise=noise)
        )
    return one_way + two_way


def estimated_rows(marginals: list[Marginal]) -> float:
    """Row count estimated from noisy 1-way totals (post-processing), at least 1.

    Marginals with an unmeasured cell (DP-selected categories' "other") are left out
    when others exist: their total misses the unreleased values.
    """
    complete = [m for m in marginals if len(m.columns) == 1 and (m.variance < UNMEASURED).all()]
    totals = [m.counts.sum() for m in complete or [m for m in marginals if len(m.columns) == 1]]
    return max(float(np.median(totals)), 1.0) if totals else 1.0


def _pair_groups(n_hat: float, sigma: float) -> int:
    """Groups per column so that an average 2-way cell holds a few noise deviations of mass."""
    return int(np.clip(np.sqrt(n_hat / (3 * sigma)), 2, _MAX_PAIR_GROUPS))

"""DP-measured low-order marginals: the generator's strongest signal at small epsilon.

Each marginal is a Gaussian-noised histogram of token counts (L2 sensitivity 1: a row
falls in one cell). Two-way marginals are measured on coarsened tokens (at most a few
groups per column) so that each cell holds enough rows to stand above the noise; the
coarsening is chosen from DP outputs only. The generator is then fitted to all of them
by least squares weighted with each cell's noise variance (see ``fitting.py``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from models.accounting import Mechanism, PrivacyLedger
from models.domain import Domain, NumericDomain
from models.noise import PrivacyNoise


@dataclass(frozen=True)
class Marginal:
    """Noisy counts over the (coarsened) tokens of one or two columns.

    Attributes:
        columns: encoder column indices.
        maps: for each column, token index -> group index.
        counts: noisy counts, flattened in C order over the groups.
        variance: noise variance of each count.
    """

    columns: tuple[int, ...]
    maps: tuple[np.ndarray, ...]
    counts: np.ndarray
    variance: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        """Number of groups per column."""
        return tuple(int(m.max()) + 1 for m in self.maps)


# Variance standing for "not measured": such a cell gets (almost) no weight in the fit.
UNMEASURED = 1e18


def one_way_from_domain(j: int, dom: Domain) -> Marginal | None:
    """A column's 1-way marginal re-using the counts its domain discovery already paid for.

    Numeric columns: the cell counts summed per bin. DP-selected categorical columns: the
    selection counts; the "other" token (unreleased values) was not measured. None when
    the domain was public and the 1-way marginal must be measured.
    """
    identity = np.arange(dom.n_tokens)
    if isinstance(dom, NumericDomain):
        counts, cells = dom.one_way()
        return Marginal((j,), (identity,), counts, cells * dom.sigma**2)
    if dom.counts is None or dom.sigma is None:
        return None
    counts = list(dom.counts) + [0.0] + ([dom.null_count or 0.0] if dom.nullable else [])
    variance = [dom.sigma**2] * len(dom.counts) + [UNMEASURED] + ([dom.sigma**2] if dom.nullable else [])
    return Marginal((j,), (identity,), np.asarray(counts), np.asarray(variance))


def measure(
    tokens: np.ndarray,
    columns: tuple[int, ...],
    maps: tuple[np.ndarray, ...],
    *,
    name: str,
    sigma: float,
    ledger: PrivacyLedger,
    noise: PrivacyNoise,
) -> Marginal:
    """Charge, then release the Gaussian-noised histogram of the grouped tokens."""
    shape = tuple(int(m.max()) + 1 for m in maps)
    grouped = [maps[i][tokens[:, c]] for i, c in enumerate(columns)]
    flat = np.ravel_multi_index(grouped, shape)
    counts = np.bincount(flat, minlength=int(np.prod(shape))).astype(np.float64)
    ledger.charge(
        Mechanism(name=name, noise_multiplier=sigma, details={"l2_sensitivity": 1, "cells": len(counts)})
    )
    noisy = counts + noise.gaussian(len(counts), sigma).numpy()
    return Marginal(columns, maps, noisy, np.full(len(counts), sigma**2))


def coarsen(counts: np.ndarray, max_groups: int, *, ordered: bool) -> np.ndarray:
    """Token -> group map with at most ``max_groups`` groups, from noisy (DP) counts.

    Ordered tokens (numeric bins) merge into runs of about equal mass; unordered ones
    keep the largest ``max_groups - 1`` tokens apart and pool the rest.
    """
    k = len(counts)
    if k <= max_groups:
        return np.arange(k)
    mass = np.clip(counts, 0, None) + 1e-9
    if ordered:
        cdf = np.cumsum(mass) / mass.sum()
        groups = np.minimum((cdf * max_groups - 1e-9).astype(int), max_groups - 1)
        return np.unique(groups, return_inverse=True)[1]
    keep = np.argsort(-mass)[: max_groups - 1]
    out = np.full(k, max_groups - 1)
    out[np.sort(keep)] = np.arange(len(keep))
    return out


def pair_workload(n_columns: int, target: int | None) -> list[tuple[int, int]]:
    """All column pairs, those with the target first (they get more budget)."""
    pairs = list(itertools.combinations(range(n_columns), 2))
    return sorted(pairs, key=lambda p: target not in p)


def group_map_for_pairs(domains: list[Domain], one_way: list[Marginal], max_groups: int) -> list[np.ndarray]:
    """Per column, the token grouping used in its 2-way marginals."""
    maps = []
    for dom, marg in zip(domains, one_way, strict=True):
        counts = marg.counts
        if isinstance(dom, NumericDomain):
            bins = len(dom.bin_starts) - 1
            m = coarsen(counts[:bins], max_groups - int(dom.nullable), ordered=True)
            maps.append(np.append(m, m.max() + 1) if dom.nullable else m)
        else:
            maps.append(coarsen(counts, max_groups, ordered=False))
    return maps

"""Column domains: declared public, or discovered with a Gaussian mechanism and charged.

A numeric domain is a grid of *cells* over bounds (public, or found from a noisy
histogram over fixed signed powers of two), noisy cell counts measured with the Gaussian
mechanism, and *bins*: runs of consecutive cells holding roughly equal noisy mass
(DP quantile bins). The generator works on bins; decoding draws a cell inside the bin
by its noisy weight and a value inside the cell, which keeps the fine shape.

A categorical domain is the declared list, or the categories whose Gaussian-noised
count clears a threshold (partition selection): a value held by few rows is not
released, and the chance that a value held by one row is released is the
``delta_select`` that the ledger reserves outside the accountant.

Every histogram is charged to the ledger *before* its noisy counts exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm

from models.accounting import Mechanism, PrivacyLedger
from models.errors import SchemaError
from models.noise import PrivacyNoise
from models.schema import ColumnKind, ColumnSpec

# Signed powers of two from 2^-10 to 2^63 cover every float64 a table is likely to hold.
_MIN_EXP, _MAX_EXP = -10, 63
_N_BUCKETS = 2 * (_MAX_EXP - _MIN_EXP + 1) + 1
_GRID_CELLS = 64  # cells of a numeric grid; more cells only add noise to the CDF
_MAX_BINS = 24
_BOUND_THRESHOLD = 4.0  # noise deviations a bounds bucket must clear


@dataclass(frozen=True, kw_only=True)
class NumericDomain:
    """DP or public description of a numeric column; holds no raw value."""

    name: str
    kind: ColumnKind
    bounds: tuple[float, float]
    bounds_public: bool
    log_space: bool
    cell_edges: np.ndarray  # in value space, len M + 1
    cell_weights: np.ndarray  # noisy counts per cell, len M
    bin_starts: np.ndarray  # first cell of each bin, plus M at the end
    nullable: bool
    null_weight: float  # noisy count of missing values
    sigma: float = 0.0  # noise std of each cell count

    def decode_weights(self) -> np.ndarray:
        """Cell weights for drawing values inside a bin: counts under one noise std count as 0.

        A cell that holds no row is pure noise; without the threshold, the many empty cells
        of loose bounds would pull values into ranges the data never had.
        """
        return np.where(self.cell_weights > self.sigma, self.cell_weights, 0.0)

    def one_way(self) -> tuple[np.ndarray, np.ndarray]:
        """Noisy token counts and their noise variances in units of sigma^2 (free: already paid)."""
        counts = np.add.reduceat(self.cell_weights, self.bin_starts[:-1])
        cells = np.diff(self.bin_starts).astype(np.float64)
        if self.nullable:
            counts, cells = np.append(counts, self.null_weight), np.append(cells, 1.0)
        return counts, cells

    @property
    def n_tokens(self) -> int:
        """Bins, plus one token for missing values when the column is nullable."""
        return len(self.bin_starts) - 1 + int(self.nullable)


@dataclass(frozen=True, kw_only=True)
class CategoricalDomain:
    """Released categories (declared, or DP-selected) of a categorical or boolean column."""

    name: str
    kind: ColumnKind
    categories: tuple[object, ...]
    categories_public: bool
    has_other: bool  # rows whose value was not released share one "other" token
    nullable: bool
    # Noisy counts of the released categories and of nulls from partition selection
    # (None for a public list): they double as the column's 1-way marginal.
    counts: tuple[float, ...] | None = None
    null_count: float | None = None
    sigma: float | None = None

    @property
    def n_tokens(self) -> int:
        """Categories, then "other" if any, then "missing" if nullable."""
        return len(self.categories) + int(self.has_other) + int(self.nullable)


Domain = NumericDomain | CategoricalDomain


def _to_datetime(col: pd.Series) -> pd.Series:
    """Datetimes from a datetime or text column; unparseable cells become NaT.

    ISO 8601 text is parsed fast; cells in other formats get a per-cell parse, so that one
    format on the first row does not turn every differently written date into a null.
    """
    if pd.api.types.is_datetime64_any_dtype(col):
        return pd.Series(col)
    stamps = pd.Series(pd.to_datetime(col, errors="coerce", format="ISO8601"), index=col.index)
    missed = stamps.isna() & col.notna()
    if missed.any():
        stamps[missed] = pd.to_datetime(col[missed], errors="coerce", format="mixed")
    return stamps


def as_numbers(col: pd.Series, kind: ColumnKind) -> np.ndarray:
    """Float values of a numeric column; datetimes become seconds since the epoch."""
    if kind is ColumnKind.DATETIME:
        stamps = _to_datetime(col)
        if stamps.dt.tz is not None:
            stamps = stamps.dt.tz_convert(None)  # UTC wall time
        # Resolution-agnostic: pandas parses strings to s/ms/us units, not always ns.
        seconds = (stamps - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
        return seconds.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def domain_measurements(spec: ColumnSpec) -> list[str]:
    """Names of the histograms discovering ``spec``'s domain needs (each has sensitivity 1)."""
    if spec.kind.is_numeric:
        return ([] if spec.bounds else [f"domain:{spec.name}:bounds"]) + [f"domain:{spec.name}:cells"]
    if spec.kind is ColumnKind.CATEGORICAL and spec.categories is None:
        return [f"domain:{spec.name}:categories"]
    return []


def _noisy_histogram(
    name: str, counts: np.ndarray, sigma: float, ledger: PrivacyLedger, noise: PrivacyNoise
) -> np.ndarray:
    ledger.charge(
        Mechanism(name=name, noise_multiplier=sigma, details={"l2_sensitivity": 1, "cells": len(counts)})
    )
    return counts + noise.gaussian(len(counts), sigma).numpy()


def _bucket_of(x: np.ndarray) -> np.ndarray:
    """Index in [0, _N_BUCKETS) of the signed power-of-two bucket holding each value."""
    mag = np.abs(x)
    exp = np.clip(np.floor(np.log2(np.maximum(mag, 2.0**_MIN_EXP))), _MIN_EXP, _MAX_EXP).astype(int)
    offset = exp - _MIN_EXP + 1
    signed = np.where(mag < 2.0**_MIN_EXP, 0, np.sign(x).astype(int) * offset)
    return signed + (_N_BUCKETS // 2)


def _bucket_edges(index: int) -> tuple[float, float]:
    signed = index - _N_BUCKETS // 2
    if signed == 0:
        # Values within 2^-10 of zero: the bound is zero itself, so that a non-negative
        # column keeps a non-negative (and, when wide, log-spaced) grid.
        return 0.0, 0.0
    low, high = 2.0 ** (abs(signed) - 1 + _MIN_EXP), 2.0 ** (abs(signed) + _MIN_EXP)
    return (low, high) if signed > 0 else (-high, -low)


def _dp_bounds(values: np.ndarray, name: str, sigma: float, ledger: PrivacyLedger, noise: PrivacyNoise):
    """Bounds from a noisy histogram over signed powers of two (post-processing below).

    Starting at the fullest bucket, the bounds grow outwards through buckets whose noisy
    count clears ``_BOUND_THRESHOLD`` noise deviations, across at most one quiet bucket;
    buckets of magnitude below 1 do not break the walk, so integer data keeps 0 next to 1.
    An isolated bucket that only noise lifted (one in hundreds of empty buckets) is thus
    never reached: a single such bucket far away would otherwise stretch the grid to 2^50.
    """
    counts = np.bincount(_bucket_of(values), minlength=_N_BUCKETS).astype(np.float64)
    noisy = _noisy_histogram(name, counts, sigma, ledger, noise)
    above = noisy > _BOUND_THRESHOLD * sigma
    start = int(np.argmax(noisy))
    lo = hi = start
    for step in (-1, 1):
        quiet, i = 0, start + step
        while 0 <= i < _N_BUCKETS and quiet <= 1:
            if above[i]:
                lo, hi, quiet = min(lo, i), max(hi, i), 0
            elif not _fractional(i):
                quiet += 1
            i += step
    low, high = _bucket_edges(lo)[0], _bucket_edges(hi)[1]
    return (low, high) if high > low else (low, low + 1.0)


def _fractional(index: int) -> bool:
    """Whether a bucket holds magnitudes in [2^-10, 1), which integer data never has."""
    signed = abs(index - _N_BUCKETS // 2)
    return 0 < signed <= -_MIN_EXP


def _grid(lo: float, hi: float, kind: ColumnKind) -> tuple[np.ndarray, bool]:
    """Cell edges over [lo, hi]: one cell per integer when few, log-spaced when wide."""
    if kind is ColumnKind.INTEGER and math.floor(hi) - math.ceil(lo) + 1 <= _GRID_CELLS:
        first, last = math.ceil(lo), math.floor(hi)
        if last < first:  # no integer inside narrow (noisy) bounds: keep the nearest one
            first = last = round((lo + hi) / 2)
        return np.arange(first - 0.5, last + 1.0, 1.0), False
    log_space = lo >= 0 and hi >= 64 * max(lo, 1.0)
    if log_space:
        return np.expm1(np.linspace(math.log1p(lo), math.log1p(hi), _GRID_CELLS + 1)), True
    return np.linspace(lo, hi, _GRID_CELLS + 1), False


def _bins(weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Merge consecutive cells into about ``n_bins`` runs of equal noisy mass (DP quantiles)."""
    mass = np.clip(weights, 0, None)
    if mass.sum() <= 0:
        mass = np.ones_like(mass)
    cdf = np.cumsum(mass) / mass.sum()
    cuts = np.searchsorted(cdf, np.arange(1, n_bins) / n_bins, side="left") + 1
    starts = np.unique(np.concatenate([[0], cuts[cuts < len(weights)], [len(weights)]]))
    return starts


def discover_numeric(
    spec: ColumnSpec,
    col: pd.Series,
    *,
    sigma: float,
    sigma_bounds: float | None,
    ledger: PrivacyLedger,
    noise: PrivacyNoise,
) -> NumericDomain:
    """Bounds (unless public), noisy cell counts and DP quantile bins of one numeric column.

    ``sigma`` is the cell histogram's noise multiplier, ``sigma_bounds`` the bounds one
    (unused when the bounds are public).
    """
    values = as_numbers(col, spec.kind)
    missing = np.isnan(values)
    present = values[~missing]
    if spec.nullable is False and missing.any():
        raise SchemaError(f"column {spec.name!r} has missing values but the schema declares nullable: false")
    if spec.bounds is not None:
        lo, hi = spec.bounds
    elif sigma_bounds is None:
        raise ValueError(f"column {spec.name!r}: bounds are not public, so sigma_bounds is needed")
    else:
        lo, hi = _dp_bounds(present, f"domain:{spec.name}:bounds", sigma_bounds, ledger, noise)
    edges, log_space = _grid(lo, hi, spec.kind)
    clipped = np.clip(present, edges[0], edges[-1])
    cells = np.clip(np.searchsorted(edges, clipped, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(cells, minlength=len(edges) - 1).astype(np.float64)
    counts = np.append(counts, missing.sum())  # the null cell is a public key: always measured
    noisy = _noisy_histogram(f"domain:{spec.name}:cells", counts, sigma, ledger, noise)
    weights, null_weight = noisy[:-1], noisy[-1]
    total = max(float(np.clip(weights, 0, None).sum()), 1.0)
    # Each bin must hold several noise standard deviations of mass to be worth a token.
    n_bins = int(np.clip(total / (8 * sigma), 3, _MAX_BINS))
    nullable = spec.nullable if spec.nullable is not None else bool(null_weight > 3 * sigma)
    return NumericDomain(
        name=spec.name,
        kind=spec.kind,
        bounds=(float(lo), float(hi)),
        bounds_public=spec.bounds is not None,
        log_space=log_space,
        cell_edges=edges,
        cell_weights=weights,
        bin_starts=_bins(weights, n_bins),
        nullable=nullable,
        null_weight=float(null_weight),
        sigma=sigma,
    )


def discover_categorical(
    spec: ColumnSpec,
    col: pd.Series,
    *,
    sigma: float,
    delta_select: float,
    ledger: PrivacyLedger,
    noise: PrivacyNoise,
) -> CategoricalDomain:
    """Declared categories, or those whose noisy count clears the partition-selection threshold."""
    missing = col.isna()
    if spec.nullable is False and missing.any():
        raise SchemaError(f"column {spec.name!r} has missing values but the schema declares nullable: false")
    if spec.kind is ColumnKind.BOOLEAN and spec.categories is None:
        categories: tuple[object, ...] = (False, True)
    elif spec.categories is not None:
        categories = spec.categories
        unknown = set(col[~missing].astype(str)) - set(map(str, categories))
        if unknown:
            shown = sorted(unknown)[:5]
            raise SchemaError(
                f"column {spec.name!r} has values outside its declared categories, e.g. {shown}; "
                "add them to the schema or clean the table"
            )
    else:
        counts = col[~missing].value_counts(sort=False)
        keys = np.array(counts.index.tolist() + [None], dtype=object)
        noisy = _noisy_histogram(
            f"domain:{spec.name}:categories",
            np.append(counts.to_numpy(dtype=np.float64), missing.sum()),
            sigma,
            ledger,
            noise,
        )
        # A value held by one row is released only if 1 + N(0, sigma^2) clears this,
        # which happens with probability delta_select.
        threshold = 1 + sigma * norm.isf(delta_select)
        chosen = sorted(
            ((k, c) for k, c in zip(keys[:-1], noisy[:-1], strict=True) if c > threshold),
            key=lambda kc: str(kc[0]),
        )
        return CategoricalDomain(
            name=spec.name,
            kind=spec.kind,
            categories=tuple(k for k, _ in chosen),
            categories_public=False,
            has_other=True,
            nullable=bool(noisy[-1] > 3 * sigma) if spec.nullable is None else spec.nullable,
            counts=tuple(float(c) for _, c in chosen),
            null_count=float(noisy[-1]),
            sigma=sigma,
        )
    return CategoricalDomain(
        name=spec.name,
        kind=spec.kind,
        categories=categories,
        categories_public=True,
        has_other=False,
        nullable=bool(spec.nullable) if spec.nullable is not None else True,
    )

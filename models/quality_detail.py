"""The pictures behind the quality numbers: per-column marginals and association matrices.

``marginal_comparison`` bins each column exactly as ``evaluate_quality`` does for its
1-way TVD (20 quantile bins of the real column, one bin per value when there are few,
null its own bin) and returns the real and synthetic share of each bin with a label.
``association_matrix`` holds the pairwise associations whose gaps ``association_diff``
averages (Pearson r, correlation ratio eta, Cramér's V).

Both describe raw data (bin edges are real quantiles, labels are real categories), so
like the rest of the quality report they are for the custodian only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from models.quality import _association, _codes, _inner_edges, _is_numeric, _to_float, _to_str

MISSING = "(missing)"


def _number(value: float) -> str:
    """A short, readable label: 0.25, 37, 1,250, 12.5k, 3.4M."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 1e3:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _numeric_labels(train_col: pd.Series) -> list[str]:
    inner, one_per_value = _inner_edges(train_col)
    if one_per_value:
        ref = _to_float(train_col)
        distinct = np.unique(ref[~np.isnan(ref)])
        labels = [_number(v) for v in distinct] or ["(none)"]
    elif inner.size == 0:
        labels = ["all values"]
    else:
        edges = [_number(v) for v in inner]
        labels = [f"< {edges[0]}", *(f"{lo} – {hi}" for lo, hi in zip(edges, edges[1:], strict=False))]
        labels.append(f"≥ {edges[-1]}")
    return [*labels, MISSING]


def _shares(codes: np.ndarray, width: int) -> np.ndarray:
    return np.bincount(codes, minlength=width)[:width] / max(codes.size, 1)


def marginal_comparison(
    train: pd.DataFrame, synthetic: pd.DataFrame, *, max_categories: int = 12
) -> list[dict[str, Any]]:
    """Per column of ``train``: bin labels and the real and synthetic share of each bin.

    Numeric columns keep their bins in order; empty bins (in both tables) are left out.
    Categorical columns show the ``max_categories`` most common real categories, then
    missing values (when either table has any), then one bar for the rest: ``other (k more)``,
    or ``not in the real data`` when only synthetic values are left.

    Returns:
        ``[{"column", "numeric", "labels", "real", "synthetic"}, ...]`` in column order.

    Raises:
        ValueError: ``synthetic`` lacks a column of ``train``, or either is empty.
    """
    if missing := [c for c in train.columns if c not in synthetic.columns]:
        raise ValueError(f"synthetic is missing columns present in train: {missing}")
    if len(train) == 0 or len(synthetic) == 0:
        raise ValueError("train and synthetic need at least one row")
    out = []
    for col in train.columns:
        numeric = _is_numeric(train[col])
        real_codes, syn_codes = _codes(col, numeric, train, [train, synthetic])
        if numeric:
            labels = _numeric_labels(train[col])
            real, syn = _shares(real_codes, len(labels)), _shares(syn_codes, len(labels))
            keep = (real > 0) | (syn > 0)
            labels = [label for label, k in zip(labels, keep, strict=True) if k]
            real, syn = real[keep], syn[keep]
        else:
            labels, real, syn = _categories(train[col], synthetic[col], max_categories)
        out.append(
            {
                "column": str(col),
                "numeric": numeric,
                "labels": labels,
                "real": [round(float(v), 5) for v in real],
                "synthetic": [round(float(v), 5) for v in syn],
            }
        )
    return out


def _categories(
    real_col: pd.Series, syn_col: pd.Series, top: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The most common real categories, missing values if either table has any, then the rest."""
    real = pd.Series(_to_str(real_col), dtype=object).fillna(MISSING).value_counts(normalize=True)
    syn = pd.Series(_to_str(syn_col), dtype=object).fillna(MISSING).value_counts(normalize=True)
    shown = [v for v in real.index if v != MISSING][:top]
    if MISSING in real.index or MISSING in syn.index:
        shown.append(MISSING)
    real_shares = real.reindex(shown, fill_value=0.0).to_numpy(dtype=float)
    syn_shares = syn.reindex(shown, fill_value=0.0).to_numpy(dtype=float)
    rest = (max(0.0, 1.0 - real_shares.sum()), max(0.0, 1.0 - syn_shares.sum()))
    labels = [str(v) for v in shown]
    if rest[0] > 1e-12 or rest[1] > 1e-12:
        hidden = len([v for v in real.index if v not in shown])
        labels.append(f"other ({hidden} more)" if hidden else "not in the real data")
        real_shares, syn_shares = np.append(real_shares, rest[0]), np.append(syn_shares, rest[1])
    return labels, real_shares, syn_shares


def association_matrix(frame: pd.DataFrame, *, reference: pd.DataFrame) -> dict[str, Any]:
    """Pairwise associations of ``frame``'s columns (those of ``reference``), 1 on the diagonal.

    A column is numeric when it is in ``reference`` (the real table), as in
    ``evaluate_quality``: Pearson r for two numerics (signed), eta for a numeric and a
    category, Cramér's V for two categories (both in [0, 1]).

    Returns:
        ``{"columns": [...], "values": [[...], ...]}`` (rows and columns in that order).
    """
    cols = list(reference.columns)
    numeric = {c: _is_numeric(reference[c]) for c in cols}
    inputs = {c: _to_float(frame[c]) if numeric[c] else _codes(c, False, reference, [frame])[0] for c in cols}
    values = np.eye(len(cols))
    for i, a in enumerate(cols):
        for j in range(i + 1, len(cols)):
            b = cols[j]
            values[i, j] = values[j, i] = _association(inputs[a], inputs[b], numeric[a], numeric[b])
    return {
        "columns": [str(c) for c in cols],
        "values": [[round(float(v), 4) for v in row] for row in values],
    }

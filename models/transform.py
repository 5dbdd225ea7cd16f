"""Encode a table into one token per column, and decode tokens back into values.

Every column becomes a categorical variable over its domain's tokens (numeric bins,
categories, "other", "missing"). The generator emits one softmax span per column
(``SpanInfo``); the discriminator sees the same spans one-hot. Decoding only uses the
domains, which are public or DP, so it is post-processing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from models.domain import CategoricalDomain, Domain, NumericDomain, as_numbers
from models.schema import ColumnKind

OTHER_LABEL = "(other)"  # stands for values whose category was not released


@dataclass(frozen=True)
class SpanInfo:
    """One column's slice of the generator output: its width and activation."""

    dim: int
    activation_fn: Literal["softmax"] = "softmax"


class TableEncoder:
    """Maps rows to token indices and back, using only public or DP domains."""

    def __init__(self, domains: list[Domain]) -> None:
        self.domains = domains
        self.spans = [SpanInfo(d.n_tokens) for d in domains]
        self.columns = [d.name for d in domains]

    @property
    def output_dim(self) -> int:
        """Width of the one-hot encoding of a row."""
        return sum(s.dim for s in self.spans)

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """Token index of every cell, shape (rows, columns), int64."""
        out = np.empty((len(df), len(self.domains)), dtype=np.int64)
        for j, dom in enumerate(self.domains):
            if isinstance(dom, NumericDomain):
                out[:, j] = _encode_numeric(dom, df[dom.name])
            else:
                out[:, j] = _encode_categorical(dom, df[dom.name])
        return out

    def decode(self, tokens: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
        """Values for token rows; numbers are drawn inside their bin by the noisy cell weights."""
        data = {}
        for j, dom in enumerate(self.domains):
            if isinstance(dom, NumericDomain):
                data[dom.name] = _decode_numeric(dom, tokens[:, j], rng)
            else:
                data[dom.name] = _decode_categorical(dom, tokens[:, j])
        return pd.DataFrame(data)


def _encode_numeric(dom: NumericDomain, col: pd.Series) -> np.ndarray:
    values = as_numbers(col, dom.kind)
    edges = dom.cell_edges
    cells = np.clip(np.searchsorted(edges, np.nan_to_num(values), side="right") - 1, 0, len(edges) - 2)
    bins = np.searchsorted(dom.bin_starts, cells, side="right") - 1
    missing = np.isnan(values)
    if missing.any() and not dom.nullable:
        # The DP null count said "no nulls": such rows join the first bin rather than leak.
        return np.where(missing, 0, bins)
    return np.where(missing, dom.n_tokens - 1, bins)


def _encode_categorical(dom: CategoricalDomain, col: pd.Series) -> np.ndarray:
    index = {str(c): i for i, c in enumerate(dom.categories)}
    other = len(dom.categories)
    missing = col.isna().to_numpy()
    keys = col.astype(str).to_numpy()
    # Unreleased values go to "other"; with a public list there are none (checked earlier).
    tokens = np.fromiter((index.get(k, other) for k in keys), dtype=np.int64, count=len(keys))
    if not dom.has_other:
        tokens = np.minimum(tokens, max(other - 1, 0))
    null_token = dom.n_tokens - 1 if dom.nullable else (other if dom.has_other else 0)
    return np.where(missing, null_token, tokens)


def _decode_numeric(dom: NumericDomain, tokens: np.ndarray, rng: np.random.Generator) -> pd.Series:
    edges, starts = dom.cell_edges, dom.bin_starts
    n_bins = len(starts) - 1
    cells = np.zeros(len(tokens), dtype=np.int64)
    weights = dom.decode_weights() + 1e-9
    for b in range(n_bins):
        rows = np.flatnonzero(tokens == b)
        if len(rows) == 0:
            continue
        w = weights[starts[b] : starts[b + 1]]
        cum = np.cumsum(w) / w.sum()
        pick = np.searchsorted(cum, rng.random(len(rows)), side="right")
        cells[rows] = starts[b] + np.minimum(pick, len(w) - 1)
    lo, hi = edges[cells], edges[cells + 1]
    u = rng.random(len(tokens))
    if dom.log_space:
        values = np.expm1(np.log1p(lo) + u * (np.log1p(hi) - np.log1p(lo)))
    else:
        values = lo + u * (hi - lo)
    values = np.clip(values, dom.bounds[0], dom.bounds[1])
    missing = tokens >= n_bins
    if dom.kind is ColumnKind.INTEGER:
        values = np.clip(np.round(values), np.ceil(dom.bounds[0]), np.floor(dom.bounds[1]))
        series = pd.Series(values, dtype="Float64").round().astype("Int64")
        series[missing] = pd.NA
        return series if dom.nullable else series.astype("int64")
    if dom.kind is ColumnKind.DATETIME:
        stamps = pd.to_datetime(values, unit="s")
        return pd.Series(stamps).where(~missing)
    return pd.Series(np.where(missing, np.nan, values))


def _decode_categorical(dom: CategoricalDomain, tokens: np.ndarray) -> pd.Series:
    cats = list(dom.categories)
    strings = all(isinstance(c, str) for c in cats)
    other = OTHER_LABEL if strings else None
    lookup = np.array(
        cats + ([other] if dom.has_other else []) + ([None] if dom.nullable else []), dtype=object
    )
    values = lookup[tokens]
    if dom.kind is ColumnKind.BOOLEAN:
        return pd.Series(values, dtype="boolean")
    if strings:
        return pd.Series(values, dtype="str") if pd.notna(values).all() else pd.Series(values, dtype=object)
    return pd.Series(values, dtype=object).infer_objects()

"""Fidelity, utility and privacy-sanity metrics for a synthetic table.

``evaluate_quality`` compares synthetic rows with the real ``train`` rows they were
fitted on and real ``holdout`` rows never seen: marginal TVDs and association gaps
(fidelity), train-on-synthetic vs train-on-real AUC (utility), and distances to the
closest train record, exact copies and a membership attack (privacy sanity). The
privacy numbers are heuristics that catch gross memorisation, not a DP guarantee.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

_N_BINS = 20
_MAX_TARGET_CLASSES = 20  # a numeric target with more distinct values is binarized
_MAX_HGB_CATEGORIES = 255  # HistGradientBoosting's limit for native categoricals
_DENSE_WIDTH_LIMIT = 256  # wider privacy encodings stay sparse (high-cardinality one-hot)


@dataclass(frozen=True)
class QualityReport:
    """Quality metrics of one synthetic table; see ``evaluate_quality`` for definitions.

    Attributes:
        one_way_tvd: mean total variation distance over 1-way marginals (0 is best).
        two_way_tvd: mean TVD over the 2-way marginals of all column pairs (0 is best).
        association_diff: mean |association_real - association_synthetic| over pairs.
        tstr_auc: ROC AUC on holdout of a model trained on synthetic; None without target.
        trtr_auc: ROC AUC on holdout of a model trained on train; None without target.
        dcr_synthetic: median distance from a synthetic row to its closest train row.
        dcr_holdout: median distance from a holdout row to its closest train row.
        exact_copy_share: share of synthetic rows that exactly equal some train row.
        membership_auc: AUC of a distance-based membership attack (0.5 is no signal).
        target: the target column, or None.
    """

    one_way_tvd: float
    two_way_tvd: float
    association_diff: float
    tstr_auc: float | None
    trtr_auc: float | None
    dcr_synthetic: float
    dcr_holdout: float
    exact_copy_share: float
    membership_auc: float
    target: str | None

    def to_dict(self) -> dict[str, float | str | None]:
        """Returns the report as a flat, JSON-serialisable dict."""
        return asdict(self)

    def summary(self) -> str:
        """Returns a short multi-line text table of the metrics."""
        rows = [
            ("1-way TVD", self.one_way_tvd, "lower"),
            ("2-way TVD", self.two_way_tvd, "lower"),
            ("association diff", self.association_diff, "lower"),
            ("TSTR AUC", self.tstr_auc, "close to TRTR"),
            ("TRTR AUC", self.trtr_auc, "reference"),
            ("DCR synthetic", self.dcr_synthetic, "close to holdout"),
            ("DCR holdout", self.dcr_holdout, "reference"),
            ("exact copy share", self.exact_copy_share, "lower"),
            ("membership AUC", self.membership_auc, "close to 0.5"),
        ]
        lines = [f"Synthetic data quality (target: {self.target or 'none'})"]
        lines.append(f"  {'metric':<18}{'value':>8}  better")
        for name, value, better in rows:
            shown = "n/a" if value is None else f"{value:.4f}"
            lines.append(f"  {name:<18}{shown:>8}  {better}")
        return "\n".join(lines)


def evaluate_quality(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    synthetic: pd.DataFrame,
    *,
    target: str | None = None,
    seed: int = 0,
    max_rows: int = 20000,
) -> QualityReport:
    """Scores a synthetic table against the real data it was fitted on.

    Columns are those of ``train``. A column is numeric if its train dtype is numeric
    and not bool; other frames' values are coerced to float (junk and inf become null).
    Other columns compare as strings. Nulls and unseen categories are allowed.

    Fidelity (real = train): numerics are cut into 20 quantile bins of train (unique
    edges, out-of-range values in the end bins; at most 20 distinct train values get one
    bin each, which quantile edges would merge); null is its own bin or category.
    Association: Pearson r (numeric pair, complete rows), bias-uncorrected Cramér's V
    (categorical pair) or eta of the numeric on the categorical; 0 for constant columns.
    With one column, the pairwise metrics are 0.

    Utility (null-target rows dropped): HistGradientBoosting trained on synthetic (TSTR)
    or train (TRTR), ROC AUC on holdout (one-vs-rest macro for >2 classes). A numeric
    target with >20 distinct train values is binarized as ``value > train median``. A
    one-class training set scores 0.5; a one-class holdout gives None (AUC undefined).

    Privacy (frames subsampled to ``max_rows``): numerics embed as ``(x - median) /
    (q95 - q05)`` of train (std, then 1, if 0), null as 0 plus a 0/1 missing flag;
    categories one-hot scaled by ``1/sqrt(2)`` so a mismatch costs distance 1. The
    membership attack scores a row by minus its distance to the nearest synthetic row,
    members being train rows and non-members as many holdout rows. ``exact_copy_share``
    uses full frames and compares numerics as floats (5 equals 5.0).

    Args:
        train: real rows the generator was fitted on.
        holdout: real rows from the same population that the generator never saw.
        synthetic: generated rows.
        target: optional label column for TSTR/TRTR.
        seed: seed for subsampling and the classifier; results are deterministic.
        max_rows: cap on rows per frame for the nearest-neighbour metrics.

    Returns:
        The quality report.

    Raises:
        ValueError: missing columns, an empty frame, an unknown target or bad max_rows.
    """
    cols = list(train.columns)
    for name, frame in (("holdout", holdout), ("synthetic", synthetic)):
        if missing := [c for c in cols if c not in frame.columns]:
            raise ValueError(f"{name} is missing columns present in train: {missing}")
    if not cols or min(len(train), len(holdout), len(synthetic)) == 0:
        raise ValueError("train, holdout and synthetic need at least one row and column")
    if target is not None and target not in cols:
        raise ValueError(f"target {target!r} is not a column of train")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    numeric = {c: _is_numeric(train[c]) for c in cols}
    frames = [train, holdout, synthetic]
    utility = (None, None) if target is None else _utility(cols, numeric, target, frames, seed)
    return QualityReport(
        *_fidelity(cols, numeric, train, synthetic),
        *utility,
        *_privacy(cols, numeric, frames, seed, max_rows),
        target=target,
    )


def _privacy(
    cols: list[str], numeric: dict[str, bool], frames: list[pd.DataFrame], seed: int, max_rows: int
) -> tuple[float, float, float, float]:
    """Returns (dcr_synthetic, dcr_holdout, exact_copy_share, membership_auc)."""
    train, _, synthetic = frames
    rng = np.random.default_rng(seed)
    tr_x, ho_x, sy_x = _embed(cols, numeric, train, [_subsample(f, max_rows, rng) for f in frames])
    nn_train = NearestNeighbors(n_neighbors=1).fit(tr_x)
    dcr_syn, dcr_ho = (float(np.median(nn_train.kneighbors(x)[0])) for x in (sy_x, ho_x))
    n = min(tr_x.shape[0], ho_x.shape[0])
    members = tr_x[np.sort(rng.choice(tr_x.shape[0], size=n, replace=False))]
    others = ho_x[np.sort(rng.choice(ho_x.shape[0], size=n, replace=False))]
    nn_syn = NearestNeighbors(n_neighbors=1).fit(sy_x)
    scores = -np.concatenate([nn_syn.kneighbors(x)[0][:, 0] for x in (members, others)])
    mia = float(roc_auc_score(np.r_[np.ones(n), np.zeros(n)], scores))
    copies = np.isin(_row_hash(cols, numeric, synthetic), _row_hash(cols, numeric, train))
    return dcr_syn, dcr_ho, float(copies.mean()), mia


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _to_float(s: pd.Series) -> np.ndarray:
    """Coerces to float64 with NaN for null, unparseable and infinite values."""
    values = s if pd.api.types.is_numeric_dtype(s.dtype) else s.astype(object)
    arr = pd.Series(pd.to_numeric(values, errors="coerce")).to_numpy("float64", na_value=np.nan)
    # np.where copies (never mutates the caller's data) and canonicalises NaN and -0.0
    return np.where(np.isfinite(arr), arr + 0.0, np.nan)


def _to_str(s: pd.Series) -> np.ndarray:
    """Returns an object array of strings with None for null."""
    obj = s.astype(object).to_numpy()
    out = np.full(obj.size, None, dtype=object)
    known = ~pd.isna(obj)
    # per-value str(): obj.astype(str) would pad every value to the longest string
    out[known] = [str(v) for v in obj[known]]
    return out


def _inner_edges(train_col: pd.Series) -> tuple[np.ndarray, bool]:
    """Inner bin edges of a numeric train column, and whether each bin is one distinct value.

    Code 0 is below ``inner[0]``, code i is ``[inner[i-1], inner[i])``, code ``inner.size``
    is at or above the last edge, and ``inner.size + 1`` is null.
    """
    ref = _to_float(train_col)
    ref = ref[~np.isnan(ref)]
    distinct = np.unique(ref)
    if distinct.size <= _N_BINS:
        return distinct[1:], True  # one bin per value: the quantile edges would merge them
    return np.unique(np.quantile(ref, np.linspace(0, 1, _N_BINS + 1)))[1:-1], False


def _codes(col: str, numeric: bool, train: pd.DataFrame, frames: list[pd.DataFrame]) -> list:
    """Bins or factorizes one column of each frame into shared integer codes."""
    if numeric:
        inner, _ = _inner_edges(train[col])
        values = [_to_float(f[col]) for f in frames]
        return [np.where(np.isnan(x), inner.size + 1, np.searchsorted(inner, x, "right")) for x in values]
    strs = [_to_str(f[col]) for f in frames]
    codes = pd.factorize(np.concatenate(strs), use_na_sentinel=False)[0]
    return np.split(codes, np.cumsum([len(s) for s in strs])[:-1])


def _tvd(real: np.ndarray, syn: np.ndarray) -> float:
    uniq, inv = np.unique(np.concatenate([real, syn]), return_inverse=True)
    p = np.bincount(inv[: real.size], minlength=uniq.size) / real.size
    q = np.bincount(inv[real.size :], minlength=uniq.size) / syn.size
    return float(0.5 * np.abs(p - q).sum())


def _fidelity(
    cols: list[str], numeric: dict[str, bool], train: pd.DataFrame, synthetic: pd.DataFrame
) -> tuple[float, float, float]:
    codes = {c: _codes(c, numeric[c], train, [train, synthetic]) for c in cols}
    values = {c: [_to_float(f[c]) for f in (train, synthetic)] for c in cols if numeric[c]}
    one_way = float(np.mean([_tvd(*codes[c]) for c in cols]))
    tvds, diffs = [], []
    for a, b in itertools.combinations(cols, 2):
        width = max(codes[b][0].max(), codes[b][1].max()) + 1
        tvds.append(_tvd(*(codes[a][i] * width + codes[b][i] for i in (0, 1))))
        inputs = {c: values[c] if numeric[c] else codes[c] for c in (a, b)}
        assoc = [_association(inputs[a][i], inputs[b][i], numeric[a], numeric[b]) for i in (0, 1)]
        diffs.append(abs(assoc[0] - assoc[1]))
    if not tvds:  # a single column has no pairs to disagree on
        return one_way, 0.0, 0.0
    return one_way, float(np.mean(tvds)), float(np.mean(diffs))


def _association(x: np.ndarray, y: np.ndarray, x_numeric: bool, y_numeric: bool) -> float:
    """Pearson r (two numerics, as floats), eta (numeric on category codes) or Cramér's V (codes)."""
    if x_numeric and y_numeric:
        return _pearson(x, y)
    if x_numeric or y_numeric:
        return _eta(x, y) if x_numeric else _eta(y, x)
    return _cramers_v(x, y)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    # ptp, not variance: the mean of a constant array can be off by one ulp
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    return float(np.clip(xc @ yc / np.sqrt((xc @ xc) * (yc @ yc)), -1.0, 1.0))


def _eta(x: np.ndarray, groups: np.ndarray) -> float:
    keep = ~np.isnan(x)
    x, groups = x[keep], groups[keep]
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    counts = np.bincount(groups)
    used = counts > 0
    if used.sum() < 2:  # one group: exactly 0, not a rounding residue
        return 0.0
    means = np.bincount(groups, weights=x)[used] / counts[used]
    between = float(counts[used] @ (means - x.mean()) ** 2)
    total = float(((x - x.mean()) ** 2).sum())
    return float(np.sqrt(np.clip(between / total, 0.0, 1.0)))


def _cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    rows, cols = np.bincount(a), np.bincount(b)
    k = min(int((rows > 0).sum()), int((cols > 0).sum()))
    if k < 2:
        return 0.0
    # chi2 = n * (sum O^2 / (R C) - 1) over observed cells: no dense r x c table needed
    cells, observed = np.unique(a.astype(np.int64) * cols.size + b, return_counts=True)
    ratio = observed.astype(float) ** 2 / (rows[cells // cols.size] * cols[cells % cols.size])
    n = a.size
    chi2 = n * (ratio.sum() - 1.0)
    return float(np.sqrt(np.clip(chi2 / (n * (k - 1)), 0.0, 1.0)))


def _features(cols: list[str], numeric: dict[str, bool], frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Builds classifier inputs with category dtypes shared by all frames."""
    data: list[dict[str, Any]] = [{} for _ in frames]
    for j, col in enumerate(cols):
        name = f"f{j}"  # generic names: sklearn rejects non-string feature names
        if numeric[col]:
            for d, f in zip(data, frames, strict=True):
                d[name] = _to_float(f[col])
            continue
        strs = [_to_str(f[col]) for f in frames]
        cats = np.unique([v for s in strs for v in s if v is not None])
        for d, s in zip(data, strs, strict=True):
            cat = pd.Categorical(s, categories=cats)
            # beyond HGB's native-categorical limit, fall back to ordinal codes
            big = cats.size > _MAX_HGB_CATEGORIES
            d[name] = np.where(cat.codes < 0, np.nan, cat.codes.astype(float)) if big else cat
    return [pd.DataFrame(d, index=pd.RangeIndex(len(f))) for d, f in zip(data, frames, strict=True)]


def _utility(
    cols: list[str], numeric: dict[str, bool], target: str, frames: list[pd.DataFrame], seed: int
) -> tuple[float | None, float | None]:
    """Returns (TSTR AUC, TRTR AUC); ``frames`` are train, holdout, synthetic."""
    if numeric[target]:
        values = [_to_float(f[target]) for f in frames]
        ref = values[0][~np.isnan(values[0])]
        if np.unique(ref).size > _MAX_TARGET_CLASSES:  # continuous: binarize at the median
            values = [np.where(np.isnan(v), np.nan, v > np.median(ref)) for v in values]
        labels = [_to_str(pd.Series(v)) for v in values]
    else:
        labels = [_to_str(f[target]) for f in frames]
    feats = _features([c for c in cols if c != target], numeric, frames)
    keep = [pd.notna(y) for y in labels]
    x_tr, x_ho, x_sy = (x[k] for x, k in zip(feats, keep, strict=True))
    y_tr, y_ho, y_sy = (y[k].astype(str) for y, k in zip(labels, keep, strict=True))
    return _auc(x_sy, y_sy, x_ho, y_ho, seed), _auc(x_tr, y_tr, x_ho, y_ho, seed)


def _auc(
    x_fit: pd.DataFrame, y_fit: np.ndarray, x_test: pd.DataFrame, y_test: np.ndarray, seed: int
) -> float | None:
    classes = np.unique(y_test)
    if classes.size < 2:
        return None
    # all-null features carry nothing, and HGB's binning crashes on them
    used = [c for c in x_fit.columns if x_fit[c].notna().any()]
    if np.unique(y_fit).size < 2 or not used:
        return 0.5
    x_fit, x_test = x_fit[used], x_test[used]
    # no early stopping: its stratified split fails on classes with a single row
    model = HistGradientBoostingClassifier(
        random_state=seed, categorical_features="from_dtype", early_stopping=False
    ).fit(x_fit, y_fit)
    proba = model.predict_proba(x_test)
    # align to the holdout classes; classes the model never saw get probability 0
    scores = pd.DataFrame(proba, columns=model.classes_).reindex(columns=classes, fill_value=0.0)
    scores = scores.to_numpy()
    total = scores.sum(axis=1, keepdims=True)
    scores = np.divide(scores, total, out=np.full_like(scores, 1 / classes.size), where=total > 0)
    if classes.size == 2:
        return float(roc_auc_score(y_test == classes[1], scores[:, 1]))
    return float(roc_auc_score(y_test, scores, multi_class="ovr", average="macro", labels=classes))


def _subsample(frame: pd.DataFrame, max_rows: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(frame) <= max_rows:
        return frame
    return frame.iloc[np.sort(rng.choice(len(frame), size=max_rows, replace=False))]


def _embed(
    cols: list[str], numeric: dict[str, bool], train: pd.DataFrame, frames: list[pd.DataFrame]
) -> list[Any]:
    """Embeds rows for Euclidean nearest-neighbour search (see ``evaluate_quality``)."""
    blocks: list[list[sparse.csr_matrix]] = [[] for _ in frames]
    for col in cols:
        if numeric[col]:
            ref = _to_float(train[col])
            ref = ref[~np.isnan(ref)]
            q05, center, q95 = np.quantile(ref, [0.05, 0.5, 0.95]) if ref.size else (0.0, 0.0, 0.0)
            scale = next((float(s) for s in (q95 - q05, ref.std() if ref.size else 0.0) if s > 0), 1.0)
            vals = [(_to_float(f[col]) - center) / scale for f in frames]
            add_flag = any(np.isnan(v).any() for v in vals)
            for block, v in zip(blocks, vals, strict=True):
                block.append(sparse.csr_matrix(np.nan_to_num(v, nan=0.0)[:, None]))
                if add_flag:
                    block.append(sparse.csr_matrix(np.isnan(v).astype(float)[:, None]))
            continue
        codes = _codes(col, False, train, frames)
        width = max(int(c.max()) for c in codes) + 1
        if width < 2:  # one shared value carries no distance
            continue
        for block, c in zip(blocks, codes, strict=True):
            ones = np.full(c.size, np.sqrt(0.5))
            block.append(sparse.csr_matrix((ones, (np.arange(c.size), c)), (c.size, width)))
    out = []
    for block, frame in zip(blocks, frames, strict=True):
        x = sparse.hstack(block, format="csr") if block else sparse.csr_matrix((len(frame), 1))
        out.append(x.toarray() if x.shape[1] <= _DENSE_WIDTH_LIMIT else x)
    return out


def _row_hash(cols: list[str], numeric: dict[str, bool], frame: pd.DataFrame) -> np.ndarray:
    data = {
        f"c{j}": _to_float(frame[c]) if numeric[c] else pd.Series(_to_str(frame[c]), dtype=object)
        for j, c in enumerate(cols)
    }
    return pd.util.hash_pandas_object(pd.DataFrame(data), index=False).to_numpy()

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from models.quality import QualityReport, evaluate_quality


@pytest.fixture(autouse=True)
def _single_openmp_thread():
    # OpenMP spin-waits stall for seconds on busy 2-core runners; the data here is tiny
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def _table(n: int, seed: int) -> pd.DataFrame:
    """Correlated mixed table: x2 follows x1, grp is a band of x1, y is learnable from x1."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = 0.8 * x1 + 0.6 * rng.normal(size=n)
    grp = np.where(x1 > 0.5, "a", np.where(x1 < -0.5, "b", "c"))
    flag = rng.random(n) < 0.3
    y = (x1 + rng.normal(scale=0.5, size=n) > 0).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "grp": grp, "flag": flag, "y": y})


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return _table(2000, 1), _table(2000, 2), _table(2000, 3)


def _shuffle_columns(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({c: df[c].to_numpy()[rng.permutation(len(df))] for c in df.columns})


def test_evaluate_quality_identical_frames_score_perfect_fidelity(frames):
    train, holdout, _ = frames
    report = evaluate_quality(train, holdout, train.copy())
    assert report.one_way_tvd == pytest.approx(0.0, abs=1e-12)
    assert report.two_way_tvd == pytest.approx(0.0, abs=1e-12)
    assert report.association_diff == pytest.approx(0.0, abs=1e-12)
    assert report.exact_copy_share == 1.0
    assert report.dcr_synthetic == 0.0
    assert report.dcr_holdout > 0.0
    assert report.tstr_auc is None and report.trtr_auc is None


def test_evaluate_quality_independent_columns_keep_marginals_but_lose_joints(frames):
    train, holdout, _ = frames
    report = evaluate_quality(train, holdout, _shuffle_columns(train, seed=7))
    assert report.one_way_tvd == pytest.approx(0.0, abs=1e-12)
    assert report.two_way_tvd > 0.1
    assert report.association_diff > 0.1


def test_evaluate_quality_one_way_tvd_known_value():
    real = pd.DataFrame({"c": ["a", "b"] * 500})
    report = evaluate_quality(real, real, pd.DataFrame({"c": ["a"] * 300}))
    assert report.one_way_tvd == pytest.approx(0.5)
    # a single column has no pairs
    assert report.two_way_tvd == 0.0 and report.association_diff == 0.0


def test_evaluate_quality_out_of_range_and_null_numerics_use_end_and_null_bins():
    real = pd.DataFrame({"x": np.random.default_rng(0).uniform(size=2000)})
    shifted = evaluate_quality(real, real, real + 10.0)
    # everything lands in the top quantile bin, which holds 1/20 of the real rows
    assert shifted.one_way_tvd == pytest.approx(0.95, abs=0.01)
    all_null = evaluate_quality(real, real, pd.DataFrame({"x": [np.nan] * 100}))
    assert all_null.one_way_tvd == pytest.approx(1.0)


def test_evaluate_quality_low_cardinality_numeric_gets_one_bin_per_value():
    real = pd.DataFrame({"k": np.r_[np.zeros(900), np.ones(100)].astype(int)})
    syn = pd.DataFrame({"k": np.r_[np.zeros(100), np.ones(900)].astype(int)})
    assert evaluate_quality(real, real, syn).one_way_tvd == pytest.approx(0.8)


def test_evaluate_quality_association_diff_pearson_sign_flip():
    rng = np.random.default_rng(3)
    x = rng.normal(size=2000)
    real = pd.DataFrame({"a": x, "b": 0.6 * x + rng.normal(size=2000)})
    syn = real.assign(b=-real["b"])
    r = np.corrcoef(real["a"], real["b"])[0, 1]
    assert evaluate_quality(real, real, syn).association_diff == pytest.approx(2 * r)


def test_evaluate_quality_association_diff_cramers_v_and_eta():
    rng = np.random.default_rng(4)
    a = rng.choice(["p", "q", "r"], size=3000)
    real = pd.DataFrame({"a": a, "b": a, "num": pd.Series(a).map({"p": 0.0, "q": 1.0, "r": 5.0})})
    syn = pd.DataFrame({"a": a, "b": rng.choice(["p", "q", "r"], size=3000), "num": rng.normal(size=3000)})
    # pairs: (a,b) V 1 -> ~0; (a,num) eta 1 -> ~0; (b,num) eta 1 -> ~0
    assert evaluate_quality(real, real, syn).association_diff == pytest.approx(1.0, abs=0.06)


def test_evaluate_quality_constant_columns_have_zero_association():
    rng = np.random.default_rng(5)
    real = pd.DataFrame({"const": 1.0, "label": "same", "x": rng.normal(size=500)})
    syn = pd.DataFrame({"const": 1.0, "label": "same", "x": rng.normal(size=500) ** 3})
    assert evaluate_quality(real, real, syn).association_diff == 0.0


def test_evaluate_quality_tstr_equals_trtr_when_synthetic_is_train(frames):
    train, holdout, _ = frames
    report = evaluate_quality(train, holdout, train, target="y")
    assert report.trtr_auc > 0.85
    assert report.tstr_auc == pytest.approx(report.trtr_auc)
    assert report.target == "y"


def test_evaluate_quality_shuffled_synthetic_target_gives_chance_tstr(frames):
    train, holdout, _ = frames
    syn = train.assign(y=np.random.default_rng(8).permutation(train["y"].to_numpy()))
    report = evaluate_quality(train, holdout, syn, target="y")
    assert abs(report.tstr_auc - 0.5) < 0.08
    assert report.trtr_auc > 0.85


def test_evaluate_quality_single_class_synthetic_target_scores_half(frames):
    train, holdout, fresh = frames
    report = evaluate_quality(train, holdout, fresh.assign(y=1), target="y")
    assert report.tstr_auc == 0.5
    assert report.trtr_auc > 0.85


def test_evaluate_quality_single_class_holdout_gives_no_auc(frames):
    train, holdout, fresh = frames
    report = evaluate_quality(train, holdout.assign(y=0), fresh, target="y")
    assert report.tstr_auc is None and report.trtr_auc is None


def test_evaluate_quality_all_null_feature_with_target(frames):
    train, holdout, fresh = (f.assign(empty=np.nan) for f in frames)
    report = evaluate_quality(train, holdout, fresh, target="y")
    assert report.trtr_auc > 0.85
    assert report.one_way_tvd < 0.05


def test_evaluate_quality_multiclass_target_with_unseen_synthetic_class(frames):
    train, holdout, fresh = frames
    syn = fresh.copy()
    syn.loc[:9, "grp"] = "zzz"  # a class the holdout never has
    report = evaluate_quality(train, holdout, syn, target="grp")
    assert report.trtr_auc > 0.9
    assert report.tstr_auc > 0.9


def test_evaluate_quality_continuous_target_is_binarized_at_median(frames):
    train, holdout, fresh = frames
    report = evaluate_quality(train, holdout, fresh, target="x2")
    assert 0.75 < report.trtr_auc <= 1.0
    assert abs(report.tstr_auc - report.trtr_auc) < 0.05


def test_evaluate_quality_membership_auc_detects_copies(frames):
    train, holdout, fresh = frames
    assert evaluate_quality(train, holdout, train).membership_auc > 0.8
    assert abs(evaluate_quality(train, holdout, fresh).membership_auc - 0.5) < 0.07


def test_evaluate_quality_dcr_of_fresh_draw_matches_holdout(frames):
    train, holdout, fresh = frames
    report = evaluate_quality(train, holdout, fresh)
    assert report.dcr_synthetic == pytest.approx(report.dcr_holdout, rel=0.3)
    assert report.exact_copy_share == 0.0


def test_evaluate_quality_exact_copy_share_counts_copied_rows():
    train = pd.DataFrame({"k": np.arange(1000), "c": ["u", "v"] * 500})
    # half copied (as floats: 5 equals 5.0), half new
    syn = pd.DataFrame({"k": np.arange(500, 1500, dtype=float), "c": ["u", "v"] * 500})
    assert evaluate_quality(train, train, syn).exact_copy_share == pytest.approx(0.5)


def test_evaluate_quality_distance_units():
    cat = pd.DataFrame({"c": ["a", "b"] * 500})
    # an unseen category is one mismatch away from every train row
    assert evaluate_quality(cat, cat, pd.DataFrame({"c": ["zzz"] * 10})).dcr_synthetic == pytest.approx(1.0)
    num = pd.DataFrame({"x": np.arange(1000.0)})
    q05, q95 = np.quantile(num["x"], [0.05, 0.95])
    far = evaluate_quality(num, num, pd.DataFrame({"x": [2000.0]}))
    assert far.dcr_synthetic == pytest.approx((2000.0 - 999.0) / (q95 - q05))
    # null: value 0 (the median) plus a missing flag of 1
    null = evaluate_quality(num, num, pd.DataFrame({"x": [np.nan]}))
    assert null.dcr_synthetic == pytest.approx(1.0, abs=1e-3)


def test_evaluate_quality_max_rows_subsamples_before_distances(frames):
    train, holdout, _ = frames
    # the two independent 200-row subsamples of train share few rows
    assert evaluate_quality(train, holdout, train, max_rows=200).dcr_synthetic > 0.0


@pytest.mark.parametrize("missing_from", ["holdout", "synthetic"])
def test_evaluate_quality_missing_column_raises(frames, missing_from):
    train, holdout, fresh = frames
    kwargs = {"holdout": holdout, "synthetic": fresh}
    kwargs[missing_from] = kwargs[missing_from].drop(columns=["x2"])
    with pytest.raises(ValueError, match=f"{missing_from}.*x2"):
        evaluate_quality(train, kwargs["holdout"], kwargs["synthetic"])


def test_evaluate_quality_rejects_bad_arguments(frames):
    train, holdout, fresh = frames
    with pytest.raises(ValueError, match="nope"):
        evaluate_quality(train, holdout, fresh, target="nope")
    with pytest.raises(ValueError, match="row"):
        evaluate_quality(train, holdout, fresh.iloc[:0])
    with pytest.raises(ValueError, match="max_rows"):
        evaluate_quality(train, holdout, fresh, max_rows=0)


def test_evaluate_quality_handles_nulls_unseen_categories_and_junk(frames):
    train, holdout, fresh = frames
    syn = fresh.astype({"grp": object, "x1": object, "flag": object, "y": float})
    syn.loc[::7, "grp"] = None
    syn.loc[::5, "grp"] = "never-seen"
    syn.loc[::3, "x1"] = np.nan
    syn.loc[::11, "x1"] = "not a number"
    syn.loc[::4, "flag"] = None
    syn.loc[::13, "y"] = np.nan
    report = evaluate_quality(train, holdout, syn, target="y")
    values = [v for v in report.to_dict().values() if not isinstance(v, str)]
    assert all(math.isfinite(v) for v in values)
    assert report.one_way_tvd > 0.05
    assert report.tstr_auc > 0.8  # x2 still carries the signal


def test_evaluate_quality_high_cardinality_categorical(frames):
    train, holdout, _ = frames
    train = train.assign(uid=[f"id{i}" for i in range(len(train))])
    holdout = holdout.assign(uid=[f"h{i}" for i in range(len(holdout))])
    report = evaluate_quality(train, holdout, train, target="y")
    assert report.dcr_synthetic == 0.0
    assert report.membership_auc > 0.8
    assert report.tstr_auc == pytest.approx(report.trtr_auc)


def test_evaluate_quality_is_deterministic_given_seed(frames):
    train, holdout, fresh = frames
    first = evaluate_quality(train, holdout, fresh, target="y", seed=3, max_rows=500)
    second = evaluate_quality(train, holdout, fresh, target="y", seed=3, max_rows=500)
    assert first == second


def test_quality_report_to_dict_and_summary(frames):
    train, holdout, fresh = frames
    report = evaluate_quality(train, holdout, fresh)
    as_dict = report.to_dict()
    assert list(as_dict) == [f.name for f in dataclasses.fields(QualityReport)]
    assert as_dict["membership_auc"] == report.membership_auc
    text = report.summary()
    assert "target: none" in text
    assert "n/a" in text  # TSTR/TRTR without a target
    assert f"{report.two_way_tvd:.4f}" in text
    assert len(text.splitlines()) == 11

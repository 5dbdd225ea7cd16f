import numpy as np
import pandas as pd
import pytest

from models.quality import evaluate_quality
from models.quality_detail import MISSING, association_matrix, marginal_comparison
from tests.conftest import make_table


@pytest.fixture(scope="module")
def frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    real = make_table(600, seed=0)
    synthetic = make_table(500, seed=1)
    synthetic["age"] = synthetic["age"].sample(frac=1, random_state=0).to_numpy()  # break age's links
    return real.iloc[:400], real.iloc[400:], synthetic


def test_marginals_are_the_bins_behind_the_one_way_tvd(frames):
    train, holdout, synthetic = frames
    marginals = marginal_comparison(train, synthetic)
    assert [m["column"] for m in marginals] == list(train.columns)
    for m in marginals:
        assert len(m["labels"]) == len(m["real"]) == len(m["synthetic"])
        assert sum(m["real"]) == pytest.approx(1, abs=1e-3) and sum(m["synthetic"]) == pytest.approx(
            1, abs=1e-3
        )
    tvd = np.mean([0.5 * np.abs(np.subtract(m["real"], m["synthetic"])).sum() for m in marginals])
    assert tvd == pytest.approx(evaluate_quality(train, holdout, synthetic).one_way_tvd, abs=1e-3)


def test_numeric_labels_are_ranges_or_values(frames):
    train, _, synthetic = frames
    by_name = {m["column"]: m for m in marginal_comparison(train, synthetic)}
    income = by_name["income"]
    assert (
        income["numeric"] and income["labels"][0].startswith("< ") and income["labels"][-1].startswith("≥ ")
    )
    assert len(income["labels"]) == 20
    children = by_name["children"]  # few distinct values: one bar each
    assert children["labels"][:3] == ["0", "1", "2"]
    assert by_name["region"]["labels"][0] == "north"  # most common first
    assert not by_name["region"]["numeric"]


def test_many_categories_end_in_one_other_bar_and_nulls_are_a_bar():
    train = pd.DataFrame({"c": [f"v{i % 30}" for i in range(300)] + [None] * 30})
    synthetic = pd.DataFrame({"c": ["v1"] * 50 + ["never seen"] * 50})
    (m,) = marginal_comparison(train, synthetic, max_categories=5)
    assert len(m["labels"]) == 7 and m["labels"][-1] == "other (25 more)"
    assert m["labels"][5] == MISSING and m["real"][5] == pytest.approx(30 / 330, abs=1e-4)  # its own bar
    assert m["synthetic"][-1] == pytest.approx(0.5)  # "never seen" is no real category: it is "other"
    only_new = marginal_comparison(pd.DataFrame({"c": ["a", "b"]}), pd.DataFrame({"c": ["a", None, "z"]}))[0]
    assert only_new["labels"] == ["a", "b", MISSING, "not in the real data"]
    assert only_new["synthetic"] == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3], abs=1e-4)
    numeric = pd.DataFrame({"x": [1.0, 2.0, np.nan, 2.0]})
    (n,) = marginal_comparison(numeric, pd.DataFrame({"x": [2.0, 2.0]}))
    assert n["labels"] == ["1", "2", MISSING] and n["synthetic"] == [0.0, 1.0, 0.0]


def test_association_matrices_are_behind_the_association_diff(frames):
    train, holdout, synthetic = frames
    real = association_matrix(train, reference=train)
    syn = association_matrix(synthetic, reference=train)
    assert real["columns"] == list(train.columns)
    values = np.array(real["values"])
    assert np.allclose(np.diag(values), 1) and np.allclose(values, values.T)
    upper = np.triu_indices(len(real["columns"]), 1)
    gap = np.abs(values - np.array(syn["values"]))[upper].mean()
    assert gap == pytest.approx(evaluate_quality(train, holdout, synthetic).association_diff, abs=1e-3)
    age, income = real["columns"].index("age"), real["columns"].index("income")
    assert values[age, income] > 0.1 and abs(syn["values"][age][income]) < values[age, income]


def test_missing_columns_and_empty_frames_are_refused():
    with pytest.raises(ValueError, match="missing columns"):
        marginal_comparison(pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [1]}))
    with pytest.raises(ValueError, match="at least one row"):
        marginal_comparison(pd.DataFrame({"a": [1]}), pd.DataFrame({"a": []}))

import numpy as np
import pandas as pd
import pytest

from models.accounting import PrivacyLedger
from models.domain import as_numbers, discover_categorical, discover_numeric
from models.errors import SchemaError
from models.noise import PrivacyNoise
from models.schema import ColumnKind, ColumnSpec


def _ledger() -> PrivacyLedger:
    return PrivacyLedger(epsilon=100.0, delta=1e-6, delta_reserved=1e-7)


def test_discover_numeric_bounds_ignore_a_lone_outlier():
    values = np.random.default_rng(0).normal(50, 10, 5000)
    values[0] = 1e9
    spec = ColumnSpec(name="x", kind=ColumnKind.CONTINUOUS)
    ledger = _ledger()
    dom = discover_numeric(
        spec, pd.Series(values), sigma=20.0, sigma_bounds=20.0, ledger=ledger, noise=PrivacyNoise()
    )
    assert dom.bounds[0] <= 20 and 80 <= dom.bounds[1] <= 128
    assert [m.name for m in ledger.spent] == ["domain:x:bounds", "domain:x:cells"]


def test_discover_numeric_bins_hold_about_equal_mass():
    values = np.random.default_rng(1).exponential(1000, 20000)
    spec = ColumnSpec(name="x", kind=ColumnKind.CONTINUOUS, bounds=(0.0, 20000.0))
    ledger = _ledger()
    dom = discover_numeric(
        spec, pd.Series(values), sigma=5.0, sigma_bounds=None, ledger=ledger, noise=PrivacyNoise()
    )
    assert [m.name for m in ledger.spent] == ["domain:x:cells"]  # public bounds cost nothing
    assert dom.log_space
    cells = np.clip(np.searchsorted(dom.cell_edges, values, side="right") - 1, 0, len(dom.cell_edges) - 2)
    bins = np.searchsorted(dom.bin_starts, cells, side="right") - 1
    shares = np.bincount(bins) / len(values)
    assert len(shares) >= 10
    assert shares.max() < 3 / len(shares)


def test_discover_numeric_integers_get_one_cell_per_value():
    spec = ColumnSpec(name="k", kind=ColumnKind.INTEGER, bounds=(0.0, 10.0))
    values = pd.Series(np.random.default_rng(2).integers(0, 11, 3000))
    dom = discover_numeric(spec, values, sigma=1.0, sigma_bounds=None, ledger=_ledger(), noise=PrivacyNoise())
    assert np.allclose(dom.cell_edges, np.arange(-0.5, 11.0, 1.0))


def test_discover_numeric_refuses_nulls_declared_impossible():
    spec = ColumnSpec(name="x", kind=ColumnKind.CONTINUOUS, bounds=(0.0, 1.0), nullable=False)
    with pytest.raises(SchemaError, match="nullable: false"):
        discover_numeric(
            spec, pd.Series([0.5, None]), sigma=1.0, sigma_bounds=None, ledger=_ledger(), noise=PrivacyNoise()
        )


def test_partition_selection_drops_rare_categories_at_every_noise_draw():
    col = pd.Series(["common"] * 3000 + ["medium"] * 800 + ["ZZZ_CANARY"] * 2)
    spec = ColumnSpec(name="c", kind=ColumnKind.CATEGORICAL)
    for seed in range(20):
        dom = discover_categorical(
            spec, col, sigma=10.0, delta_select=1e-7, ledger=_ledger(), noise=PrivacyNoise(noise_seed=seed)
        )
        assert dom.categories == ("common", "medium")
        assert dom.has_other and not dom.categories_public


def test_public_categories_cost_nothing_and_refuse_unknown_values():
    spec = ColumnSpec(name="c", kind=ColumnKind.CATEGORICAL, categories=("a", "b"))
    ledger = _ledger()
    dom = discover_categorical(
        spec, pd.Series(["a", "b", None]), sigma=1.0, delta_select=1e-7, ledger=ledger, noise=PrivacyNoise()
    )
    assert dom.categories == ("a", "b") and not dom.has_other and dom.nullable
    assert ledger.spent == []
    with pytest.raises(SchemaError, match="outside its declared categories"):
        discover_categorical(
            spec, pd.Series(["a", "q"]), sigma=1.0, delta_select=1e-7, ledger=ledger, noise=PrivacyNoise()
        )


def test_discover_numeric_zero_inflated_counts_keep_zero_as_the_lower_bound():
    rng = np.random.default_rng(3)
    values = np.where(rng.random(5000) < 0.6, 0, rng.geometric(0.1, 5000))
    spec = ColumnSpec(name="visits", kind=ColumnKind.INTEGER)
    dom = discover_numeric(
        spec, pd.Series(values), sigma=2.0, sigma_bounds=2.0, ledger=_ledger(), noise=PrivacyNoise()
    )
    assert dom.bounds[0] == 0.0
    # Zero gets a cell of its own: no decoded value drifts from 0 to 1, 2 or 3.
    assert dom.cell_edges[0] <= 0 < dom.cell_edges[1] <= 1


def test_dp_bounds_never_jump_to_a_far_bucket_lifted_by_noise():
    # Small counts, large noise, many fits: an empty bucket far out clears the threshold
    # now and then; the walk from the mode must never reach it.
    values = pd.Series(np.random.default_rng(4).integers(1, 9, 800))
    spec = ColumnSpec(name="family", kind=ColumnKind.INTEGER)
    for seed in range(200):
        dom = discover_numeric(
            spec, values, sigma=40.0, sigma_bounds=40.0, ledger=_ledger(), noise=PrivacyNoise(noise_seed=seed)
        )
        assert -4 <= dom.bounds[0] and dom.bounds[1] <= 64, (seed, dom.bounds)


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["2020-01-01", "2021-06-30 12:00:00", None]),
        pd.Series(["2020-01-01", "30 June 2021 12:00", None]),
        pd.Series(pd.to_datetime(["2020-01-01 00:00", "2021-06-30 12:00", None])).astype("datetime64[s]"),
        pd.Series(pd.to_datetime(["2020-01-01 01:00", "2021-06-30 14:00", None])).dt.tz_localize(
            "Europe/Berlin"
        ),
    ],
)
def test_as_numbers_gives_epoch_seconds_whatever_the_datetime_unit(column):
    seconds = as_numbers(column, ColumnKind.DATETIME)
    assert seconds[:2].tolist() == [1577836800.0, 1625054400.0]
    assert np.isnan(seconds[2])


@pytest.mark.parametrize("bounds", [(0.2, 0.8), (0.5, 0.9), (3.1, 3.4)])
def test_discover_numeric_integers_within_bounds_holding_no_integer(bounds):
    """Narrow (e.g. noisy) bounds with no integer inside still give a one-cell grid, not a crash."""
    spec = ColumnSpec(name="x", kind=ColumnKind.INTEGER, bounds=bounds)
    dom = discover_numeric(
        spec,
        pd.Series([0, 1, 3, 4] * 50),
        sigma=5.0,
        sigma_bounds=None,
        ledger=_ledger(),
        noise=PrivacyNoise(),
    )
    assert len(dom.cell_edges) == 2
    assert dom.cell_edges[1] - dom.cell_edges[0] == 1.0

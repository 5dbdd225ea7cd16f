import numpy as np
import pandas as pd

from models.domain import CategoricalDomain, NumericDomain
from models.schema import ColumnKind
from models.transform import OTHER_LABEL, TableEncoder


def _numeric(kind: ColumnKind = ColumnKind.CONTINUOUS) -> NumericDomain:
    edges = np.linspace(0, 100, 11)
    return NumericDomain(
        name="x",
        kind=kind,
        bounds=(0.0, 100.0),
        bounds_public=True,
        log_space=False,
        cell_edges=edges,
        cell_weights=np.array([5, 5, 5, 0, 5, 5, 5, 5, 5, -3.0]),
        bin_starts=np.array([0, 3, 6, 10]),
        nullable=True,
        null_weight=4.0,
    )


def _categorical() -> CategoricalDomain:
    return CategoricalDomain(
        name="c",
        kind=ColumnKind.CATEGORICAL,
        categories=("a", "b"),
        categories_public=False,
        has_other=True,
        nullable=True,
    )


def test_encode_maps_values_to_bins_other_and_missing():
    enc = TableEncoder([_numeric(), _categorical()])
    df = pd.DataFrame({"x": [1.0, 35.0, 99.0, 500.0, None], "c": ["a", "b", "rare", None, "a"]})
    tokens = enc.encode(df)
    assert tokens[:, 0].tolist() == [0, 1, 2, 2, 3]
    assert tokens[:, 1].tolist() == [0, 1, 2, 3, 0]
    assert [s.dim for s in enc.spans] == [4, 4]


def test_decode_draws_inside_the_bin_and_skips_empty_cells():
    enc = TableEncoder([_numeric(), _categorical()])
    rng = np.random.default_rng(0)
    tokens = np.array([[0, 0], [1, 1], [2, 2], [3, 3]] * 500)
    out = enc.decode(tokens, rng)
    x = out["x"].to_numpy()
    assert ((x[0::4] >= 0) & (x[0::4] <= 30)).all()
    middle = x[1::4]
    assert ((middle >= 30) & (middle <= 60)).all()
    assert not ((middle > 30) & (middle < 40)).any()  # that cell's noisy weight is 0
    assert ((x[2::4] >= 60) & (x[2::4] <= 90)).all()  # the negative-weight cell is never drawn
    assert np.isnan(x[3::4]).all()
    assert out["c"].iloc[:4].tolist()[:3] == ["a", "b", OTHER_LABEL]
    assert pd.isna(out["c"].iloc[3])


def test_decode_integers_are_whole_numbers():
    enc = TableEncoder([_numeric(ColumnKind.INTEGER)])
    out = enc.decode(np.array([[0], [1], [2]] * 100), np.random.default_rng(0))
    values = out["x"].dropna().to_numpy(dtype=float)
    assert np.array_equal(values, np.round(values))

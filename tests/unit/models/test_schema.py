import numpy as np
import pandas as pd
import pytest

from models.errors import SchemaError
from models.schema import ColumnKind, Schema, infer_schema


def test_from_json_reads_kinds_and_public_domains(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        '{"target": "y", "columns": {"age": {"kind": "integer", "bounds": [0, 120], "nullable": false},'
        ' "sex": {"kind": "categorical", "categories": ["f", "m"]}, "id": {"kind": "identifier"}}}'
    )
    schema = Schema.from_json(path)
    assert schema.target == "y"
    assert schema.columns["age"].bounds == (0.0, 120.0) and schema.columns["age"].domain_is_public
    assert schema.columns["sex"].categories == ("f", "m")
    assert schema.columns["id"].kind is ColumnKind.IDENTIFIER
    assert Schema.from_json(schema.to_dict()).to_dict() == schema.to_dict()


def test_from_json_reports_every_problem_at_once():
    with pytest.raises(SchemaError) as info:
        Schema.from_json(
            {
                "columns": {
                    "a": {"kind": "number"},
                    "b": {"kind": "integer", "bounds": [5, 1]},
                    "c": {"kind": "categorical", "categories": []},
                    "d": {"kind": "integer", "colour": "red"},
                },
                "extra": 1,
            }
        )
    message = str(info.value)
    for part in (
        "'a': kind 'number'",
        "'b': bounds must be",
        "'c': categories must be",
        "'d': unknown keys",
        "extra",
    ):
        assert part in message


def test_from_json_missing_file_and_bad_json(tmp_path):
    with pytest.raises(SchemaError, match="does not exist"):
        Schema.from_json(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SchemaError, match="not valid JSON"):
        Schema.from_json(bad)


def test_infer_schema_kinds_from_dtypes():
    n = 100
    df = pd.DataFrame(
        {
            "i": np.arange(n) % 7,
            "f": np.linspace(0, 1, n),
            "fi": (np.arange(n) % 5).astype(float),
            "b": np.arange(n) % 2 == 0,
            "c": ["x", "y"] * (n // 2),
            "t": pd.date_range("2020-01-01", periods=n, freq="D"),
            "text": [f"a long free text answer number {i % 70} written by a person" for i in range(n)],
        }
    )
    with pytest.warns(UserWarning, match="'text' looks like free text"):
        kinds = {k: v.kind for k, v in infer_schema(df).columns.items()}
    assert kinds == {
        "i": ColumnKind.INTEGER,
        "f": ColumnKind.CONTINUOUS,
        "fi": ColumnKind.INTEGER,
        "b": ColumnKind.BOOLEAN,
        "c": ColumnKind.CATEGORICAL,
        "t": ColumnKind.DATETIME,
        "text": ColumnKind.TEXT,
    }


def test_infer_schema_declared_identifier_is_kept_silently():
    df = pd.DataFrame({"code": [f"c{i}" for i in range(50)]})
    declared = Schema.from_json({"columns": {"code": {"kind": "categorical"}}})
    schema = infer_schema(df, declared)
    assert schema.columns["code"].kind is ColumnKind.CATEGORICAL and schema.columns["code"].declared


def test_infer_schema_unknown_target():
    with pytest.raises(SchemaError, match="target 'y' is not a column"):
        infer_schema(pd.DataFrame({"a": [1, 2]}), Schema(target="y"))

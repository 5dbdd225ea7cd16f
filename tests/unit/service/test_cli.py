import json
import subprocess
import sys

import pandas as pd
import pytest

from service.cli import main
from tests.conftest import make_table

FAST_ARGS = ["--seed", "0", "--quiet", "--generator-steps", "100"]


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "in.csv"
    make_table(1500).to_csv(path, index=False)
    return path


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_synthesize_writes_rows_and_certificate(csv, tmp_path, capsys):
    out, cert, model = tmp_path / "out.parquet", tmp_path / "cert.json", tmp_path / "m.pt"
    code = main(
        [
            "synthesize",
            str(csv),
            "--epsilon",
            "1",
            "--rows",
            "321",
            "-o",
            str(out),
            "--certificate",
            str(cert),
            "--model",
            str(model),
            "--target",
            "outcome",
            *FAST_ARGS,
        ]
    )
    assert code == 0
    syn = pd.read_parquet(out)
    assert len(syn) == 321 and list(syn.columns) == list(pd.read_csv(csv).columns)
    data = json.loads(cert.read_text())
    assert data["epsilon"] <= 1.0 and data["schema"]["target"] == "outcome"
    assert data["input_sha256"] == __import__("hashlib").sha256(csv.read_bytes()).hexdigest()
    assert model.exists()
    assert "privacy: epsilon" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.csv", "--epsilon", "1"], "'missing.csv' does not exist"),
        (["{csv}", "--epsilon", "0"], "argument --epsilon: must be a finite number > 0, got 0"),
        (["{csv}", "--epsilon", "-2"], "argument --epsilon: must be a finite number > 0, got -2"),
        (["{csv}", "--epsilon", "1", "--delta", "0.01"], "delta 0.01 is not below 1/n"),
        (["{csv}", "--epsilon", "1", "--schema", "{schema}"], "schema column 'nope' is not in the table"),
        (["{empty}", "--epsilon", "1"], "is empty"),
        (["{header}", "--epsilon", "1"], "has no data rows"),
        (["{latin1}", "--epsilon", "1"], "is not UTF-8 text"),
        (["{txt}", "--epsilon", "1"], "unsupported file type '.txt'"),
    ],
)
def test_synthesize_bad_input_is_one_line_and_exit_2(args, message, csv, tmp_path, capsys):
    files = {
        "csv": csv,
        "schema": tmp_path / "s.json",
        "empty": tmp_path / "empty.csv",
        "header": tmp_path / "header.csv",
        "latin1": tmp_path / "latin1.csv",
        "txt": tmp_path / "x.txt",
    }
    files["schema"].write_text('{"columns": {"nope": {"kind": "integer"}}}')
    files["empty"].write_text("")
    files["header"].write_text("a,b\n")
    files["latin1"].write_bytes("name\ncaf\xe9\n".encode("latin-1"))
    files["txt"].write_text("a\n1\n")
    argv = [a.format(**files) for a in args]
    code = main(["synthesize", *argv, "--rows", "10", "-o", str(tmp_path / "o.csv"), *FAST_ARGS])
    assert code == 2
    line = _error_line(capsys)
    assert line.startswith("dpsynth: error: ")
    assert message in line
    assert not (tmp_path / "o.csv").exists()


def test_evaluate_prints_and_writes_json(tmp_path, capsys):
    train, holdout, syn = (tmp_path / f"{n}.csv" for n in ("t", "h", "s"))
    make_table(800, seed=1).to_csv(train, index=False)
    make_table(300, seed=2).to_csv(holdout, index=False)
    make_table(800, seed=3).to_csv(syn, index=False)
    out = tmp_path / "q.json"
    code = main(
        [
            "evaluate",
            "--train",
            str(train),
            "--holdout",
            str(holdout),
            "--synthetic",
            str(syn),
            "--target",
            "outcome",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["tstr_auc"] > 0.7 and report["two_way_tvd"] < 0.25
    assert "TSTR" in capsys.readouterr().out


def test_evaluate_missing_column_is_one_line(tmp_path, capsys):
    train, syn = tmp_path / "t.csv", tmp_path / "s.csv"
    make_table(200).to_csv(train, index=False)
    make_table(200).drop(columns=["age"]).to_csv(syn, index=False)
    code = main(["evaluate", "--train", str(train), "--holdout", str(train), "--synthetic", str(syn)])
    assert code == 2
    assert "age" in _error_line(capsys)


def test_installed_command_never_prints_a_traceback(tmp_path):
    # The real entry point in a real process: bad input ends in one line, no traceback.
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "synthesize",
            str(tmp_path / "nope.csv"),
            "--epsilon",
            "1",
            "--rows",
            "5",
            "-o",
            str(tmp_path / "o.csv"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 2
    assert res.stderr.strip() == f"dpsynth: error: '{tmp_path / 'nope.csv'}' does not exist"

"""Re-deriving and re-checking a release without the raw data.

A release is reproducible from what its certificate and model file hold: the stored
generator re-draws the same table from the recorded seed and row count (on CPU, with
the recorded library versions), and the recorded accountant history re-computes the
claimed epsilon. Neither step reads raw data or spends budget.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import pandas as pd

from models.accounting import epsilon_of


def table_sha256(table: pd.DataFrame) -> str:
    """SHA-256 of the table's canonical CSV (header, no index, newline line ends)."""
    digest = hashlib.sha256()
    for start in range(0, max(len(table), 1), 100_000):
        chunk = table.iloc[start : start + 100_000]
        text = chunk.to_csv(index=False, header=start == 0, lineterminator="\n")
        digest.update(text.encode("utf-8"))
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (the stored model)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def recompute_epsilon(certificate: dict[str, Any]) -> float:
    """The epsilon the certificate's own accountant history gives at its accountant delta."""
    accountant = certificate["accountant"]
    history = [tuple(entry) for entry in accountant["state_dict"]["history"]]
    return epsilon_of(history, delta=float(certificate["delta_accountant"]), accountant=accountant["name"])


def rederive(model_path: str | Path, *, rows: int, seed: int) -> pd.DataFrame:
    """The table a release drew: the stored model, sampled on CPU with the recorded seed."""
    from models.synthesizer import Synthesizer

    return Synthesizer.load(model_path, device="cpu").sample(rows, random_state=seed)


def check_release(certificate: dict[str, Any], model_path: str | Path, *, rel_tol: float = 1e-9) -> list[str]:
    """Problems found re-deriving the release described by ``certificate``; empty when it checks out."""
    record = certificate.get("service", {}).get("reproduce")
    if record is None:
        return ["the certificate records nothing to re-derive the release from"]
    problems = []
    if file_sha256(model_path) != record["model_sha256"]:
        problems.append("the model file is not the one the release was drawn from (SHA-256 differs)")
    table = rederive(model_path, rows=int(record["rows"]), seed=int(record["sample_seed"]))
    if table_sha256(table) != record["table_sha256"]:
        problems.append("re-drawing the release gave a different table (SHA-256 differs)")
    epsilon = recompute_epsilon(certificate)
    if not math.isclose(epsilon, float(certificate["epsilon"]), rel_tol=rel_tol, abs_tol=1e-12):
        problems.append(
            f"the accountant history gives epsilon {epsilon!r}, "
            f"the certificate claims {certificate['epsilon']!r}"
        )
    return problems

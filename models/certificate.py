"""The privacy certificate: the exact, complete record of what a release spent.

It lists every mechanism that read raw data with its parameters and its epsilon share,
the accountant with its full history (``state_dict``), which parts of the schema were
public and which were discovered with DP, the input's SHA-256, versions and seeds.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

from models.accounting import PrivacyLedger, create_accountant, epsilon_of
from models.config import SynthesizerConfig
from models.domain import CategoricalDomain, Domain, NumericDomain
from models.schema import Schema

FORMAT = "dpsynth-certificate/1"


def library_versions() -> dict[str, str]:
    """Versions of the packages whose code shapes the guarantee."""
    out = {}
    for pkg in ("dpsynth", "torch", "opacus", "numpy", "pandas", "scipy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def code_commit() -> str:
    """Git commit of the running code, or ``"unknown"`` outside a checkout."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return res.stdout.strip() if res.returncode == 0 else "unknown"


def _mechanisms(ledger: PrivacyLedger) -> list[dict[str, Any]]:
    """Each mechanism (steps of one name merged) with its epsilon alone and its share."""
    merged: dict[str, dict[str, Any]] = {}
    for m in ledger.spent:
        entry = merged.setdefault(
            m.name,
            {
                "name": m.name,
                "type": "gaussian" if m.sample_rate == 1.0 else "poisson_subsampled_gaussian",
                "noise_multiplier": m.noise_multiplier,
                "sample_rate": m.sample_rate,
                "steps": 0,
                **(m.details or {}),
            },
        )
        entry["steps"] += m.steps
    out = list(merged.values())
    alone = [
        epsilon_of(
            [(e["noise_multiplier"], e["sample_rate"], e["steps"])],
            delta=ledger.accountant_delta,
            accountant=ledger.accountant,
        )
        for e in out
    ]
    for entry, eps in zip(out, alone, strict=True):
        entry["epsilon_alone"] = eps
        # Shares of the sum of stand-alone epsilons; composition makes the total smaller.
        entry["epsilon_share"] = eps / sum(alone) if sum(alone) else 0.0
    return out


def _domain_record(dom: Domain) -> dict[str, Any]:
    if isinstance(dom, NumericDomain):
        return {
            "kind": dom.kind.value,
            "bounds": list(dom.bounds),
            "bounds_source": "public" if dom.bounds_public else "dp",
            "quantile_bins": len(dom.bin_starts) - 1,
            "bins_source": "dp",
            "nullable": dom.nullable,
        }
    return {
        "kind": dom.kind.value,
        "categories": [c.item() if hasattr(c, "item") else c for c in dom.categories],
        "categories_source": "public" if dom.categories_public else "dp",
        "other_token": dom.has_other,
        "nullable": dom.nullable,
    }


def build_certificate(
    *,
    ledger: PrivacyLedger,
    config: SynthesizerConfig,
    schema: Schema,
    domains: list[Domain],
    input_sha256: str,
    rows: int,
    row_count_public: bool,
    completed: bool,
) -> dict[str, Any]:
    """The certificate of a fit; ``completed`` is False for a cancelled or partial run."""
    acct = create_accountant(ledger.accountant)
    acct.history = [(m.noise_multiplier, m.sample_rate, m.steps) for m in ledger.spent]
    selected = [d for d in domains if isinstance(d, CategoricalDomain) and not d.categories_public]
    cert = {
        "format": FORMAT,
        "completed": completed,
        "epsilon": ledger.epsilon_spent(),
        "epsilon_target": ledger.epsilon,
        "delta": ledger.delta,
        "delta_accountant": ledger.accountant_delta,
        "delta_partition_selection": ledger.delta_reserved,
        "neighbouring_relation": "add or remove one row",
        "accountant": {"name": ledger.accountant, "state_dict": dict(acct.state_dict())},
        "mechanisms": _mechanisms(ledger),
        "partition_selection": {
            "columns": [d.name for d in selected],
            "delta_per_column": ledger.delta_reserved / len(selected) if selected else 0.0,
        },
        "post_processing": [
            "generator fitted to the DP marginals",
            *(
                ["generator trained against the DP-SGD discriminator"]
                if config.discriminator_share > 0
                else []
            ),
            "sampling rows from the generator and decoding them with the DP domains",
        ],
        "schema": {
            "target": schema.target,
            "columns": {
                s.name: {
                    "kind_source": "declared" if s.declared else "inferred from dtypes",
                    "kind": s.kind.value,
                }
                for s in schema.columns.values()
            },
            "dropped": [s.name for s in schema.columns.values() if s.kind.is_dropped],
            "domains": {d.name: _domain_record(d) for d in domains},
        },
        "row_count": {
            "public": row_count_public,
            "value": rows if row_count_public else None,
            "why": "the default delta and the DP-SGD sample rate are functions of the row count"
            if row_count_public
            else "not released",
        },
        "input_sha256": input_sha256,
        "library_versions": library_versions(),
        "code_commit": code_commit(),
        "seed": config.seed,
        "noise_seeded": config.noise_seed is not None,
        "secure_mode": config.secure_mode,
        "config": config.to_dict(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    # Exactly what a JSON reader will see (tuples become lists), so saved == in memory.
    return json.loads(json.dumps(cert))

"""JSON forms of domains and marginals, for model files, checkpoints and certificates.

Everything here is public or DP output; model files are ``torch.save`` of tensors and
strings only, loaded with ``weights_only=True`` (never pickle).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.domain import CategoricalDomain, Domain, NumericDomain
from models.marginals import Marginal
from models.schema import ColumnKind


def _plain(value: object) -> object:
    """Numpy scalars to Python ones, so categories survive JSON."""
    return value.item() if isinstance(value, np.generic) else value


def domain_to_dict(dom: Domain) -> dict[str, Any]:
    """JSON form of a domain."""
    if isinstance(dom, NumericDomain):
        return {
            "type": "numeric",
            "name": dom.name,
            "kind": dom.kind.value,
            "bounds": list(dom.bounds),
            "bounds_public": dom.bounds_public,
            "log_space": dom.log_space,
            "cell_edges": dom.cell_edges.tolist(),
            "cell_weights": dom.cell_weights.tolist(),
            "bin_starts": dom.bin_starts.tolist(),
            "nullable": dom.nullable,
            "null_weight": dom.null_weight,
            "sigma": dom.sigma,
        }
    return {
        "type": "categorical",
        "name": dom.name,
        "kind": dom.kind.value,
        "categories": [_plain(c) for c in dom.categories],
        "categories_public": dom.categories_public,
        "has_other": dom.has_other,
        "nullable": dom.nullable,
        "counts": None if dom.counts is None else list(dom.counts),
        "null_count": dom.null_count,
        "sigma": dom.sigma,
    }


def domain_from_dict(raw: dict[str, Any]) -> Domain:
    """Inverse of ``domain_to_dict``."""
    if raw["type"] == "numeric":
        return NumericDomain(
            name=raw["name"],
            kind=ColumnKind(raw["kind"]),
            bounds=(raw["bounds"][0], raw["bounds"][1]),
            bounds_public=raw["bounds_public"],
            log_space=raw["log_space"],
            cell_edges=np.asarray(raw["cell_edges"], dtype=np.float64),
            cell_weights=np.asarray(raw["cell_weights"], dtype=np.float64),
            bin_starts=np.asarray(raw["bin_starts"], dtype=np.int64),
            nullable=raw["nullable"],
            null_weight=raw["null_weight"],
            sigma=raw["sigma"],
        )
    return CategoricalDomain(
        name=raw["name"],
        kind=ColumnKind(raw["kind"]),
        categories=tuple(raw["categories"]),
        categories_public=raw["categories_public"],
        has_other=raw["has_other"],
        nullable=raw["nullable"],
        counts=None if raw["counts"] is None else tuple(raw["counts"]),
        null_count=raw["null_count"],
        sigma=raw["sigma"],
    )


def marginal_to_dict(m: Marginal) -> dict[str, Any]:
    """JSON form of a measured marginal (noisy counts are DP output)."""
    return {
        "columns": list(m.columns),
        "maps": [x.tolist() for x in m.maps],
        "counts": m.counts.tolist(),
        "variance": m.variance.tolist(),
    }


def marginal_from_dict(raw: dict[str, Any]) -> Marginal:
    """Inverse of ``marginal_to_dict``."""
    return Marginal(
        tuple(raw["columns"]),
        tuple(np.asarray(x, dtype=np.int64) for x in raw["maps"]),
        np.asarray(raw["counts"], dtype=np.float64),
        np.asarray(raw["variance"], dtype=np.float64),
    )

"""dpsynth's engine: differentially private synthetic tables.

A pure library: it takes DataFrames and plain settings and returns plain results. It
imports nothing from ``workers`` or ``service``. Names load on first use, so that
``models.errors`` (needed by every CLI call) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "BudgetExceededError": "models.errors",
    "DPCompatibilityError": "models.errors",
    "DPSynthError": "models.errors",
    "FitCancelledError": "models.errors",
    "NotFittedError": "models.errors",
    "PrivacyParameterError": "models.errors",
    "SchemaError": "models.errors",
    "SecureModeUnavailableError": "models.errors",
    "ColumnKind": "models.schema",
    "ColumnSpec": "models.schema",
    "Schema": "models.schema",
    "infer_schema": "models.schema",
    "Synthesizer": "models.synthesizer",
    "ProgressEvent": "models.training",
}

__all__ = [
    "BudgetExceededError",
    "ColumnKind",
    "ColumnSpec",
    "DPCompatibilityError",
    "DPSynthError",
    "FitCancelledError",
    "NotFittedError",
    "PrivacyParameterError",
    "ProgressEvent",
    "Schema",
    "SchemaError",
    "SecureModeUnavailableError",
    "Synthesizer",
    "infer_schema",
]

if TYPE_CHECKING:
    from models.errors import (
        BudgetExceededError,
        DPCompatibilityError,
        DPSynthError,
        FitCancelledError,
        NotFittedError,
        PrivacyParameterError,
        SchemaError,
        SecureModeUnavailableError,
    )
    from models.schema import ColumnKind, ColumnSpec, Schema, infer_schema
    from models.synthesizer import Synthesizer
    from models.training import ProgressEvent


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

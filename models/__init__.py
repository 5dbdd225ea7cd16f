"""dpsynth's engine: differentially private synthetic tables.

A pure library: it takes DataFrames and plain settings and returns plain results. It
imports nothing from ``workers`` or ``service``.
"""

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

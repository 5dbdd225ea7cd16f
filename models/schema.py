"""Column kinds and public domains.

A schema says, for each column, what kind of values it holds and, optionally, its
**public** domain: numeric bounds or the category list, and whether it may be null.
Whatever the schema does not declare is discovered with DP later (see ``domain.py``)
and charged to the budget; nothing here reads values into the released model.

The JSON form is::

    {"target": "y",
     "columns": {"age": {"kind": "integer", "bounds": [0, 120], "nullable": false},
                 "sex": {"kind": "categorical", "categories": ["f", "m"]},
                 "income": {"kind": "continuous"},
                 "patient_id": {"kind": "identifier"}}}
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from models.errors import SchemaError


class ColumnKind(StrEnum):
    """What a column holds; decides its encoding and whether it is synthesized."""

    CONTINUOUS = "continuous"
    INTEGER = "integer"
    CATEGORICAL = "categorical"
    BOOLEAN = "boolean"
    DATETIME = "datetime"
    IDENTIFIER = "identifier"
    TEXT = "text"

    @property
    def is_numeric(self) -> bool:
        """Whether values are encoded through DP quantile bins."""
        return self in (ColumnKind.CONTINUOUS, ColumnKind.INTEGER, ColumnKind.DATETIME)

    @property
    def is_dropped(self) -> bool:
        """Identifier-like and free-text columns are never synthesized."""
        return self in (ColumnKind.IDENTIFIER, ColumnKind.TEXT)


_KEYS = {"kind", "bounds", "categories", "nullable"}


@dataclass(frozen=True, kw_only=True)
class ColumnSpec:
    """One column: its kind, its public domain if declared, and where the kind came from.

    Attributes:
        name: column name.
        kind: the column kind.
        bounds: public ``(low, high)`` for numeric kinds; ``None`` means discover with DP.
        categories: public category list; ``None`` means discover with DP.
        nullable: public null-ness; ``None`` means the null rate is measured with DP.
        declared: True when the custodian declared the kind (else inferred from dtypes).
    """

    name: str
    kind: ColumnKind
    bounds: tuple[float, float] | None = None
    categories: tuple[Any, ...] | None = None
    nullable: bool | None = None
    declared: bool = False

    @property
    def domain_is_public(self) -> bool:
        """Whether nothing about this column's domain has to be discovered with DP."""
        if self.kind is ColumnKind.BOOLEAN:
            return True
        if self.kind.is_numeric:
            return self.bounds is not None
        return self.categories is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as it appears in schema files and certificates."""
        out: dict[str, Any] = {"kind": self.kind.value}
        if self.bounds is not None:
            out["bounds"] = list(self.bounds)
        if self.categories is not None:
            out["categories"] = list(self.categories)
        if self.nullable is not None:
            out["nullable"] = self.nullable
        return out


@dataclass(frozen=True, kw_only=True)
class Schema:
    """Columns in table order plus an optional public target column."""

    columns: dict[str, ColumnSpec] = field(default_factory=dict)
    target: str | None = None

    @classmethod
    def from_json(cls, source: str | Path | dict[str, Any]) -> Schema:
        """Read a schema from a JSON file path or an already-parsed dict.

        Raises:
            SchemaError: listing every problem found, not only the first.
        """
        if isinstance(source, dict):
            raw = source
        else:
            try:
                raw = json.loads(Path(source).read_text(encoding="utf-8"))
            except FileNotFoundError as exc:
                raise SchemaError(f"schema file {str(source)!r} does not exist") from exc
            except json.JSONDecodeError as exc:
                raise SchemaError(f"schema file {str(source)!r} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("columns", {}), dict):
            raise SchemaError('a schema is a JSON object with a "columns" object')
        problems: list[str] = []
        columns: dict[str, ColumnSpec] = {}
        for name, spec in raw.get("columns", {}).items():
            try:
                columns[name] = _parse_column(name, spec)
            except SchemaError as exc:
                problems.append(str(exc))
        target = raw.get("target")
        if target is not None and not isinstance(target, str):
            problems.append(f"target must be a column name, got {target!r}")
        extra = set(raw) - {"columns", "target"}
        if extra:
            problems.append(f"unknown schema keys {sorted(extra)}; allowed: columns, target")
        if problems:
            raise SchemaError("; ".join(problems))
        return cls(columns=columns, target=target)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the inverse of ``from_json``)."""
        return {
            "target": self.target,
            "columns": {name: spec.to_dict() for name, spec in self.columns.items()},
        }

    @property
    def kept(self) -> list[ColumnSpec]:
        """Columns that are synthesized, in table order."""
        return [c for c in self.columns.values() if not c.kind.is_dropped]


def _parse_column(name: str, spec: Any) -> ColumnSpec:
    if not isinstance(spec, dict):
        raise SchemaError(f"column {name!r}: expected an object, got {spec!r}")
    unknown = set(spec) - _KEYS
    if unknown:
        raise SchemaError(f"column {name!r}: unknown keys {sorted(unknown)}; allowed {sorted(_KEYS)}")
    try:
        kind = ColumnKind(spec.get("kind"))
    except ValueError:
        allowed = [k.value for k in ColumnKind]
        raise SchemaError(f"column {name!r}: kind {spec.get('kind')!r} is not one of {allowed}") from None
    bounds = spec.get("bounds")
    if bounds is not None:
        if not kind.is_numeric:
            raise SchemaError(f"column {name!r}: bounds are only for numeric kinds, not {kind.value}")
        if kind is ColumnKind.DATETIME:
            bounds = [pd.Timestamp(b).value / 1e9 for b in bounds]
        if (
            not isinstance(bounds, list | tuple)
            or len(bounds) != 2
            or not all(isinstance(b, int | float) for b in bounds)
            or not bounds[0] < bounds[1]
        ):
            raise SchemaError(f"column {name!r}: bounds must be [low, high] with low < high, got {bounds!r}")
        bounds = (float(bounds[0]), float(bounds[1]))
    categories = spec.get("categories")
    if categories is not None:
        if kind not in (ColumnKind.CATEGORICAL, ColumnKind.BOOLEAN):
            raise SchemaError(f"column {name!r}: categories are only for categorical columns")
        if not isinstance(categories, list) or not categories:
            raise SchemaError(f"column {name!r}: categories must be a non-empty list")
        if len(set(map(str, categories))) != len(categories):
            raise SchemaError(f"column {name!r}: categories contain duplicates")
        categories = tuple(categories)
    nullable = spec.get("nullable")
    if nullable is not None and not isinstance(nullable, bool):
        raise SchemaError(f"column {name!r}: nullable must be true or false, got {nullable!r}")
    return ColumnSpec(
        name=name, kind=kind, bounds=bounds, categories=categories, nullable=nullable, declared=True
    )


def infer_schema(df: pd.DataFrame, declared: Schema | None = None) -> Schema:
    """Complete ``declared`` with kinds inferred from the table's dtypes.

    Kinds are structure, not values: the custodian reviews them before any release.
    Undeclared columns whose values are unique per row are dropped as identifiers with
    a warning, because synthesizing them either copies them or produces noise.

    Raises:
        SchemaError: the schema names columns the table lacks, or the target is unknown.
    """
    declared = declared or Schema()
    problems = [
        f"schema column {name!r} is not in the table (columns: {list(map(str, df.columns))})"
        for name in declared.columns
        if name not in df.columns
    ]
    if declared.target is not None and declared.target not in df.columns:
        problems.append(f"target {declared.target!r} is not a column of the table")
    if problems:
        raise SchemaError("; ".join(problems))
    columns: dict[str, ColumnSpec] = {}
    for name in df.columns:
        spec = declared.columns.get(name) or ColumnSpec(name=str(name), kind=_infer_kind(df[name]))
        if spec.kind is ColumnKind.IDENTIFIER and not spec.declared:
            warnings.warn(
                f"column {name!r} looks like an identifier (unique per row) and is dropped; "
                'declare its kind in the schema to keep it, or {"kind": "identifier"} to silence this',
                UserWarning,
                stacklevel=2,
            )
        if spec.kind is ColumnKind.TEXT and not spec.declared:
            warnings.warn(
                f"column {name!r} looks like free text and is dropped; declare its kind to keep it",
                UserWarning,
                stacklevel=2,
            )
        columns[str(name)] = spec
    if declared.target is not None and columns[declared.target].kind.is_dropped:
        raise SchemaError(f"target {declared.target!r} is an identifier or text column; declare its kind")
    return replace(declared, columns=columns)


def _infer_kind(col: pd.Series) -> ColumnKind:
    values = col.dropna()
    n = len(values)
    unique_per_row = n >= 20 and values.nunique() == n
    if pd.api.types.is_bool_dtype(col):
        return ColumnKind.BOOLEAN
    if pd.api.types.is_datetime64_any_dtype(col):
        return ColumnKind.DATETIME
    if pd.api.types.is_integer_dtype(col):
        return ColumnKind.IDENTIFIER if unique_per_row else ColumnKind.INTEGER
    if pd.api.types.is_float_dtype(col):
        integral = n > 0 and bool((values == values.round()).all())
        return ColumnKind.INTEGER if integral else ColumnKind.CONTINUOUS
    if unique_per_row:
        return ColumnKind.IDENTIFIER
    texts = values.astype(str)
    if n and texts.str.len().mean() > 40 and values.nunique() > n / 2:
        return ColumnKind.TEXT
    return ColumnKind.CATEGORICAL

"""Request and response bodies. Endpoints never return ORM rows.

Public views leave out storage keys and wrapped keys; raw-data facts (row count,
file hash) appear only in the custodian's view of a dataset.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.core.orm import JobState, Role


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class BudgetPublic(BaseModel):
    """A dataset's budget: total, charged, reserved by live jobs, remaining."""

    epsilon_total: float | None
    delta_total: float | None
    epsilon_charged: float
    delta_charged: float
    epsilon_reserved: float
    delta_reserved: float
    epsilon_remaining: float
    delta_remaining: float


class BudgetUpdate(BaseModel):
    """The dataset's total privacy budget."""

    epsilon: float = Field(gt=0, allow_inf_nan=False, description="total epsilon over all releases")
    delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="total delta over all releases; default a power of ten <= 1/(10 n)",
    )


class DatasetPublic(_Out):
    """What every role allowed to see a dataset sees."""

    id: str
    name: str
    file_format: str
    created_at: datetime
    raw_deleted_at: datetime | None
    epsilon_budget: float | None
    delta_budget: float | None


class DatasetCustodian(DatasetPublic):
    """The custodian's view: adds facts about the raw upload (not DP; custodian-only)."""

    size_bytes: int
    row_count: int
    sha256: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    inferred_schema: dict[str, Any]
    budget: BudgetPublic | None = None

    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class SchemaUpdate(BaseModel):
    """A schema in the engine's JSON form: kinds, public domains, target."""

    columns: dict[str, dict[str, Any]]
    target: str | None = None


class JobCreate(BaseModel):
    """A training job on one dataset."""

    dataset_id: str
    epsilon: float = Field(gt=0, allow_inf_nan=False, description="epsilon this release may spend")
    delta: float | None = Field(
        default=None, gt=0, lt=1, description="delta; default: a tenth of the dataset's total delta"
    )
    rows: int = Field(gt=0, le=100_000_000, description="rows in the first release")
    seed: int | None = Field(default=None, ge=0, description="seeds everything except the privacy noise")
    generator_steps: int | None = Field(default=None, gt=0, le=100_000, description="advanced")


class JobPublic(_Out):
    """A job as ``GET /jobs/{id}`` shows it."""

    id: str
    dataset_id: str
    state: JobState
    epsilon: float
    delta: float
    rows: int
    epsilon_charged: float | None
    delta_charged: float | None
    progress: float
    phase: str
    epoch: float
    epsilon_spent: float
    cancel_requested: bool
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    release_id: str | None = None


class ReleasePublic(_Out):
    """A release: what analysts may see."""

    id: str
    job_id: str
    dataset_id: str
    rows: int
    created_at: datetime
    epsilon: float
    delta: float


class LedgerLine(BaseModel):
    """One job's line in a dataset's budget ledger."""

    job_id: str
    state: JobState
    epsilon_reserved: float
    delta_reserved: float
    epsilon_charged: float | None
    delta_charged: float | None
    created_at: datetime
    finished_at: datetime | None
    release_ids: list[str]


class LedgerPublic(BaseModel):
    """A dataset's budget and every job that reserved or spent from it."""

    dataset_id: str
    budget: BudgetPublic
    lines: list[LedgerLine]


class KeyCreate(BaseModel):
    """A new API key in the caller's tenant."""

    role: Role
    name: str = Field(min_length=1, max_length=200)


class KeyPublic(_Out):
    """An API key without its secret."""

    id: str
    role: Role
    name: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyPublic):
    """A new key: the token is shown this once."""

    token: str


ExportFormat = Literal["jsonl", "csv"]
TableFormat = Literal["csv", "parquet"]

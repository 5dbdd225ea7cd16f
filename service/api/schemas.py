"""Request and response bodies. Endpoints never return ORM rows.

Public views leave out storage keys and wrapped keys; raw-data facts (row count,
file hash) appear only in the custodian's view of a dataset.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from service.core.orm import JobState, Role, aware

# Display names: no control characters (they end up in logs, CSV exports and terminals).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# The smallest total delta: far smaller ones underflow to 0 in the ledger (a tenth, then log10).
MIN_DELTA = 1e-300


# SQLite keeps no time zone: every stored time is UTC, so say so on the way out.
UTCDateTime = Annotated[datetime, AfterValidator(aware)]


def _check_json_values(value: Any, where: str) -> None:
    """Refuse what JSON storage and responses cannot hold: NaN, infinities, lone surrogates."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: numbers must be finite, got {value!r}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: text must be valid Unicode (no lone surrogates)") from None
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json_values(key, where)
            _check_json_values(item, f"{where}.{key}")
    if isinstance(value, list):
        for item in value:
            _check_json_values(item, where)


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


class RetentionUpdate(BaseModel):
    """How long the raw upload is kept."""

    days: float | None = Field(
        ge=0,
        le=36_500,
        allow_inf_nan=False,
        description="days after the upload; null: until erased on request",
    )


class BudgetUpdate(BaseModel):
    """The dataset's total privacy budget."""

    epsilon: float = Field(gt=0, allow_inf_nan=False, description="total epsilon over all releases")
    delta: float | None = Field(
        default=None,
        ge=MIN_DELTA,
        lt=1,
        description="total delta over all releases; default a power of ten <= 1/(10 n)",
    )


class DatasetPublic(_Out):
    """What every role allowed to see a dataset sees."""

    id: str
    name: str
    file_format: str
    created_at: UTCDateTime
    raw_expires_at: UTCDateTime | None
    raw_deleted_at: UTCDateTime | None
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
    """A schema in the engine's JSON form: kinds, public domains, target.

    A PUT replaces the whole review: columns left out get their inferred kind (DP-discovered
    domain), so ``{"target": "y"}`` alone means "inferred kinds, target y".
    """

    columns: dict[str, dict[str, Any]] = Field(default_factory=dict)
    target: str | None = None

    @field_validator("columns")
    @classmethod
    def _json_values(cls, columns: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        _check_json_values(columns, "columns")
        return columns


class JobCreate(BaseModel):
    """A training job on one dataset."""

    dataset_id: str
    epsilon: float = Field(gt=0, allow_inf_nan=False, description="epsilon this release may spend")
    delta: float | None = Field(
        default=None, gt=0, lt=1, description="delta; default: a tenth of the dataset's total delta"
    )
    rows: int = Field(gt=0, le=100_000_000, description="rows in the first release")
    seed: int | None = Field(
        default=None, ge=0, lt=2**31, description="seeds everything except the privacy noise"
    )
    generator_steps: int | None = Field(default=None, gt=0, le=100_000, description="advanced")
    accountant: Literal["prv", "rdp"] | None = Field(default=None, description="default prv")
    discriminator_share: float | None = Field(
        default=None, ge=0, lt=1, description="share of epsilon for the DP-SGD discriminator (DP-GAN phase)"
    )
    dpsgd_epochs: float | None = Field(default=None, gt=0, le=1000, description="discriminator passes")
    batch_size: int | None = Field(default=None, gt=0, le=65_536, description="expected Poisson batch size")
    secure_mode: bool | None = Field(default=None, description="privacy noise from a CSPRNG (torchcsprng)")
    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto",
        description="which workers may train it; auto: small tables on any worker, large on GPU",
    )


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
    queue: str
    worker: str | None
    device: str | None
    error: str | None
    created_at: UTCDateTime
    started_at: UTCDateTime | None
    finished_at: UTCDateTime | None
    release_id: str | None = None


class BatchCreate(BaseModel):
    """Jobs admitted together: all reserve their budget in one transaction, or none does."""

    jobs: list[JobCreate] = Field(min_length=1, max_length=1000)


class BatchPublic(BaseModel):
    """A batch and the current state of each of its jobs."""

    id: str
    created_at: UTCDateTime
    jobs: list[JobPublic]


class ReleasePublic(_Out):
    """A release: what analysts may see."""

    id: str
    job_id: str
    dataset_id: str
    rows: int
    created_at: UTCDateTime
    epsilon: float
    delta: float
    state: Literal["pending", "ready", "failed"] = "ready"


class ReleaseCreate(BaseModel):
    """Another table drawn from a succeeded job's model: post-processing, no budget."""

    rows: int = Field(gt=0, le=100_000_000, description="rows to draw")


class LedgerLine(BaseModel):
    """One job's line in a dataset's budget ledger."""

    job_id: str
    state: JobState
    epsilon_reserved: float
    delta_reserved: float
    epsilon_charged: float | None
    delta_charged: float | None
    created_at: UTCDateTime
    finished_at: UTCDateTime | None
    release_ids: list[str]


class LedgerPublic(BaseModel):
    """A dataset's budget and every job that reserved or spent from it."""

    dataset_id: str
    budget: BudgetPublic
    lines: list[LedgerLine]


class KeyCreate(BaseModel):
    """A new API key in the caller's tenant."""

    role: Role
    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN)


class KeyPublic(_Out):
    """An API key without its secret."""

    id: str
    role: Role
    name: str
    created_at: UTCDateTime
    revoked_at: UTCDateTime | None


class KeyCreated(KeyPublic):
    """A new key: the token is shown this once."""

    token: str


ExportFormat = Literal["jsonl", "csv"]
TableFormat = Literal["csv", "parquet"]


class PublicKeyPublic(BaseModel):
    """The service's public key, which signs audit bundles."""

    algorithm: Literal["Ed25519"]
    fingerprint: str = Field(description="sha256: and the hex SHA-256 of the 32 raw public-key bytes")
    public_key_pem: str = Field(description="the key as PEM; pass it to dpsynth audit verify --public-key")

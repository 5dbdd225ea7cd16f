"""The service's tables: tenants, API keys, users, datasets, jobs, releases and workers.

The audit log's tables live in ``audit.py``. The budget ledger needs no table of its
own: a job row *is* the ledger line (it reserves ``epsilon``/``delta`` while active and
holds the charged amounts once settled), so a reservation can never exist without its
job or the other way round.
"""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Enum, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.core.db import Base


def new_id() -> str:
    """A random object id; ids are never derived from user input."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """Timezone-aware now, UTC."""
    return datetime.now(UTC)


def aware(moment: datetime) -> datetime:
    """``moment`` as an aware UTC datetime (SQLite hands them back naive)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Role(enum.StrEnum):
    """What an API key or a user may do, as in DESIGN.md's table."""

    custodian = "custodian"
    analyst = "analyst"
    auditor = "auditor"
    admin = "admin"


class JobState(enum.StrEnum):
    """A job's life: queued -> running -> one of the three final states."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def final(self) -> bool:
        """Whether the job's charge is settled."""
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


UTCDateTime = DateTime(timezone=True)


class Tenant(Base):
    """An organisation; nothing is shared between tenants."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Set by the operator: workers take higher-priority tenants' jobs first, and run at
    # most ``max_running_jobs`` of a tenant's jobs at once (None: the service default).
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_running_jobs: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiKey(Base):
    """A hashed API key with one role in one tenant."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class User(Base):
    """A person who logs in to the web form with a name and password; one role in one tenant.

    ``password_hash`` is scrypt with its salt and cost parameters (see ``security.py``);
    a disabled user cannot log in and their open sessions end at their next request.
    """

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Dataset(Base):
    """An uploaded table and its privacy budget.

    ``row_count`` and ``sha256`` describe raw data: custodians see them, nobody else.
    ``wrapped_key`` is the dataset's own encryption key wrapped by the master key;
    erasing the raw upload destroys it (cryptographic erase) along with the file.
    """

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    file_format: Mapped[str] = mapped_column(String(16))
    size_bytes: Mapped[int] = mapped_column(Integer)
    row_count: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    inferred_schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    storage_key: Mapped[str | None] = mapped_column(String(200))
    wrapped_key: Mapped[bytes | None] = mapped_column()
    epsilon_budget: Mapped[float | None] = mapped_column(Float, default=None)
    delta_budget: Mapped[float | None] = mapped_column(Float, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the retention period of the raw upload ends (None: kept until erased on request).
    raw_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None, index=True)
    raw_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Batch(Base):
    """Jobs submitted together from one manifest; admitted all together or not at all."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Job(Base):
    """One training run; its row is the job's source of truth, not the broker's message."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    batch_id: Mapped[str | None] = mapped_column(ForeignKey("batches.id"), index=True, default=None)
    created_by: Mapped[str] = mapped_column(String(32))
    state: Mapped[JobState] = mapped_column(Enum(JobState, native_enum=False, length=16), index=True)
    # The reservation: what the job may spend.
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    rows: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Which workers may run it: "gpu" jobs go to GPU workers, "cpu" jobs to any worker.
    queue: Mapped[str] = mapped_column(String(16), default="cpu", server_default="cpu")
    # The charge, set once when the job reaches a final state.
    epsilon_charged: Mapped[float | None] = mapped_column(Float, default=None)
    delta_charged: Mapped[float | None] = mapped_column(Float, default=None)
    # Progress as the worker reports it.
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    phase: Mapped[str] = mapped_column(String(32), default="queued")
    epoch: Mapped[float] = mapped_column(Float, default=0.0)
    epsilon_spent: Mapped[float] = mapped_column(Float, default=0.0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # The lease: which worker holds the job and until when.
    lease_owner: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The worker and device of the latest attempt (kept after it ends).
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    device: Mapped[str | None] = mapped_column(String(100), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    model_key: Mapped[str | None] = mapped_column(String(200), default=None)
    # When the reconciler last re-sent the job's message (serverless brokers can lose one).
    resent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class Release(Base):
    """A synthetic table drawn from a finished job's model, with its certificate.

    ``quality`` is computed against raw data: custodian-only. A release drawn later from
    the stored model starts ``pending`` until a worker has written its table.
    """

    __tablename__ = "releases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    rows: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(200))
    certificate: Mapped[dict[str, Any]] = mapped_column(JSON)
    quality: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    state: Mapped[str] = mapped_column(String(16), default="ready")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    resent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Worker(Base):
    """A worker process as it reports itself: its device and the queues it serves.

    Written when it starts and refreshed every sweep of its reconciler, so ``seen_at``
    tells whether it is alive; operators read it with ``dpsynth admin workers``.
    """

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    device: Mapped[str] = mapped_column(String(100))
    queues: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

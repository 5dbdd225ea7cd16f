"""Dataset writes: register an upload, review its schema, set its retention, erase its raw data."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from models.errors import SchemaError
from models.schema import ColumnKind, Schema
from service.core import audit
from service.core.errors import ConflictError, InvalidRequestError
from service.core.orm import Dataset, Job, JobState, aware, utcnow
from service.core.storage import Storage
from service.core.uploads import StoredUpload

log = logging.getLogger(__name__)


def register(
    session: Session,
    *,
    dataset_id: str,
    tenant_id: str,
    name: str,
    file_format: str,
    upload: StoredUpload,
    actor: str,
    retention_days: float | None = None,
) -> Dataset:
    """The dataset row for a stored upload; its schema starts as the inferred kinds.

    ``retention_days`` (the service default) sets when the raw upload is erased.
    """
    now = utcnow()
    dataset = Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        name=name,
        file_format=file_format,
        size_bytes=upload.size_bytes,
        row_count=upload.row_count,
        sha256=upload.sha256,
        inferred_schema=upload.inferred_schema,
        schema=upload.inferred_schema,
        storage_key=upload.storage_key,
        wrapped_key=upload.wrapped_key,
        created_at=now,
        raw_expires_at=None if retention_days is None else now + timedelta(days=retention_days),
    )
    session.add(dataset)
    session.flush()
    audit.append(
        session,
        action="dataset.upload",
        actor=actor,
        tenant_id=tenant_id,
        object_type="dataset",
        object_id=dataset.id,
        details={
            "format": file_format,
            "size_bytes": upload.size_bytes,
            "sha256": upload.sha256,
            "raw_expires_at": None if dataset.raw_expires_at is None else dataset.raw_expires_at.isoformat(),
        },
    )
    return dataset


def update_schema(session: Session, dataset: Dataset, raw: dict[str, Any], *, actor: str) -> Dataset:
    """Replace the dataset's schema after checking it against the engine and the columns.

    Columns the schema leaves out keep their inferred kind, so a partial schema is fine.

    Raises:
        InvalidRequestError: every problem at once, in the engine's words.
    """
    try:
        schema = Schema.from_json(raw)
    except SchemaError as exc:
        raise InvalidRequestError(str(exc)) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. datetime bounds that are no dates
        raise InvalidRequestError(f"the schema is not valid: {exc}") from None
    known = list(dataset.inferred_schema["columns"])
    problems = [
        f"column {name!r} is not in the dataset (columns: {known})"
        for name in schema.columns
        if name not in known
    ]
    if schema.target is not None and schema.target not in known:
        problems.append(f"target {schema.target!r} is not a column of the dataset")
    if problems:
        raise InvalidRequestError("; ".join(problems))
    merged = {name: dict(spec) for name, spec in dataset.inferred_schema["columns"].items()}
    merged.update(schema.to_dict()["columns"])
    if schema.target is not None and ColumnKind(merged[schema.target]["kind"]).is_dropped:
        raise InvalidRequestError(
            f"target {schema.target!r} is an identifier or free-text column, which is never synthesized; "
            "declare another kind for it or choose another target"
        )
    dataset.schema = {"target": schema.target, "columns": merged}
    audit.append(
        session,
        action="schema.update",
        actor=actor,
        tenant_id=dataset.tenant_id,
        object_type="dataset",
        object_id=dataset.id,
        # Declared domains are public by the custodian's decision, so they may be logged.
        details={"schema": dataset.schema},
    )
    return dataset


def set_retention(session: Session, dataset: Dataset, days: float | None, *, actor: str) -> Dataset:
    """Keep the raw upload ``days`` after its upload (None: until erased on request).

    Raises:
        ConflictError: the raw data is already erased.
    """
    if dataset.raw_deleted_at is not None:
        raise ConflictError("the raw data of this dataset was already erased")
    created = aware(dataset.created_at)
    dataset.raw_expires_at = None if days is None else created + timedelta(days=days)
    audit.append(
        session,
        action="dataset.retention",
        actor=actor,
        tenant_id=dataset.tenant_id,
        object_type="dataset",
        object_id=dataset.id,
        details={
            "days": days,
            "raw_expires_at": None if dataset.raw_expires_at is None else dataset.raw_expires_at.isoformat(),
        },
    )
    return dataset


def erase_raw(session: Session, dataset: Dataset, *, actor: str, reason: str = "requested") -> str | None:
    """Erase the raw upload's key (cryptographic erase); returns the file's storage key.

    Releases, certificates and the ledger stay. The caller deletes the file once this
    transaction has committed (``finish_erase``): from then on the file is unreadable
    anyway, even if the delete fails or a backup kept a copy, and a rolled-back erase
    never loses the file.

    Raises:
        ConflictError: already erased, or a job is still using the data.
    """
    if dataset.raw_deleted_at is not None:
        raise ConflictError("the raw data of this dataset was already erased")
    live = select(Job.id).where(
        Job.dataset_id == dataset.id, Job.state.in_([JobState.queued, JobState.running])
    )
    if session.scalar(live.limit(1)) is not None:
        raise ConflictError("a job is still queued or running on this dataset; cancel it first")
    key = dataset.storage_key
    dataset.wrapped_key = None
    dataset.storage_key = None
    dataset.raw_deleted_at = utcnow()
    audit.append(
        session,
        action="dataset.raw_deleted",
        actor=actor,
        tenant_id=dataset.tenant_id,
        object_type="dataset",
        object_id=dataset.id,
        details={"reason": reason},
    )
    return key


def finish_erase(storage: Storage, key: str | None, engine: Engine) -> None:
    """After an erase committed: delete the file, and on SQLite push the change out of the WAL.

    ``secure_delete`` zeroes freed content in database pages, but in WAL mode the page
    that held the wrapped key survives in the main file until a checkpoint copies the new
    page over it; a TRUNCATE checkpoint does that and empties the WAL.
    """
    if key is not None:
        try:
            storage.delete(key)
        except Exception:  # the key is already destroyed: a file left behind is unreadable
            log.exception("could not delete %s after erasing its key; the file is unreadable", key)
    if engine.dialect.name == "sqlite":
        # Readers in other connections can make the checkpoint stop short: try again briefly.
        # The driver connection runs it outside a transaction (SQLAlchemy's would BEGIN first).
        for _ in range(50):
            raw = engine.raw_connection()
            try:
                busy = raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                raw.close()
            if not busy:
                return
            time.sleep(0.1)
        log.warning("the SQLite WAL could not be truncated after an erase; it empties at a later checkpoint")


def erase_expired(sessions: sessionmaker[Session], storage: Storage) -> list[str]:
    """Erase every raw upload whose retention period ended; returns the dataset ids.

    A dataset with a job still queued or running waits for the next sweep.
    """
    erased: list[str] = []
    engine = sessions.kw["bind"]
    with sessions() as session, session.begin():
        due = session.scalars(
            select(Dataset.id).where(Dataset.raw_deleted_at.is_(None), Dataset.raw_expires_at <= utcnow())
        ).all()
    for dataset_id in due:
        try:
            with sessions() as session, session.begin():
                dataset = session.scalars(
                    select(Dataset).where(Dataset.id == dataset_id).with_for_update()
                ).one()
                if dataset.raw_deleted_at is not None:
                    continue
                key = erase_raw(session, dataset, actor="system:retention", reason="retention period ended")
        except ConflictError as exc:
            log.info("dataset %s: retention ended but %s; retrying at the next sweep", dataset_id, exc)
            continue
        finish_erase(storage, key, engine)
        erased.append(dataset_id)
    return erased

"""Dataset writes: register an upload, review its schema, erase its raw data."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.errors import SchemaError
from models.schema import ColumnKind, Schema
from service.core import audit
from service.core.errors import ConflictError, InvalidRequestError
from service.core.orm import Dataset, Job, JobState, utcnow
from service.core.uploads import StoredUpload


def register(
    session: Session,
    *,
    dataset_id: str,
    tenant_id: str,
    name: str,
    file_format: str,
    upload: StoredUpload,
    actor: str,
) -> Dataset:
    """The dataset row for a stored upload; its schema starts as the inferred kinds."""
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
        details={"format": file_format, "size_bytes": upload.size_bytes, "sha256": upload.sha256},
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


def erase_raw(session: Session, dataset: Dataset, *, actor: str) -> str | None:
    """Erase the raw upload's key (cryptographic erase); returns the file's storage key.

    Releases, certificates and the ledger stay. The caller deletes the file once this
    transaction has committed: from then on the file is unreadable anyway, even if the
    delete fails or a backup kept a copy, and a rolled-back erase never loses the file.

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
    )
    return key

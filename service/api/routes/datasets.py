"""Datasets: upload, list, schema review, budget, ledger, raw-data erasure."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from sqlalchemy import select

from service.api.deps import Custodian, LedgerReader, ServicesDep, SessionDep, owned
from service.api.schemas import (
    NAME_PATTERN,
    BudgetPublic,
    BudgetUpdate,
    DatasetCustodian,
    DatasetPublic,
    LedgerLine,
    LedgerPublic,
    RetentionUpdate,
    SchemaUpdate,
    TableFormat,
)
from service.core import audit, datasets, ledger
from service.core.db import after_commit, transaction
from service.core.errors import InvalidRequestError, PayloadTooLargeError
from service.core.orm import Dataset, Job, Release, Role, new_id
from service.core.uploads import store_upload

router = APIRouter(prefix="/datasets", tags=["datasets"])
log = logging.getLogger(__name__)

_TYPES = {"text/csv": "csv", "application/vnd.apache.parquet": "parquet", "application/x-parquet": "parquet"}


def _custodian_view(session: SessionDep, dataset: Dataset) -> DatasetCustodian:
    view = DatasetCustodian.model_validate(dataset)
    view.budget = BudgetPublic(**ledger.budget_of(session, dataset).as_dict())
    return view


# The body is read as a stream, not declared as a parameter, so the OpenAPI says what it is here.
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "the table itself: UTF-8 CSV with a header row, or a Parquet file",
        "content": {
            "text/csv": {"schema": {"type": "string"}},
            "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=DatasetCustodian, openapi_extra=_UPLOAD_BODY
)
async def upload_dataset(
    request: Request,
    services: ServicesDep,
    caller: Custodian,
    name: Annotated[
        str,
        Query(min_length=1, max_length=200, pattern=NAME_PATTERN, description="a display name"),
    ],
    format: Annotated[
        TableFormat | None, Query(description="csv or parquet; default from Content-Type")
    ] = None,
) -> DatasetCustodian:
    """Upload a table as the raw request body (CSV or Parquet), streamed and encrypted.

    The body is never held whole in memory; over ``DPSYNTH_MAX_UPLOAD_BYTES`` it is a
    413, and a file that is not a table is a 422. Either way nothing is kept.
    """
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    file_format = format or _TYPES.get(content_type)
    if file_format is None:
        raise InvalidRequestError(
            "say which format the body is: ?format=csv or ?format=parquet, or Content-Type text/csv "
            "or application/vnd.apache.parquet"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > services.settings.max_upload_bytes:
        raise PayloadTooLargeError(
            f"the upload is larger than the limit of {services.settings.max_upload_bytes:,} bytes"
        )
    dataset_id = new_id()
    stored = await store_upload(
        request.stream(),
        storage=services.storage,
        master_key=services.settings.master_key(),
        dataset_id=dataset_id,
        file_format=file_format,
        max_bytes=services.settings.max_upload_bytes,
    )
    try:
        with transaction(services.sessions) as session:
            dataset = datasets.register(
                session,
                dataset_id=dataset_id,
                tenant_id=caller.tenant_id,
                name=name,
                file_format=file_format,
                upload=stored,
                retention_days=services.settings.raw_retention_days,
                actor=caller.actor,
            )
            return _custodian_view(session, dataset)
    except BaseException:
        services.storage.delete(stored.storage_key)
        raise


@router.get("", response_model=list[DatasetPublic])
def list_datasets(session: SessionDep, caller: LedgerReader) -> list[Dataset]:
    """The tenant's datasets, newest first."""
    query = select(Dataset).where(Dataset.tenant_id == caller.tenant_id).order_by(Dataset.created_at.desc())
    return list(session.scalars(query))


@router.get("/{dataset_id}", response_model=DatasetCustodian | DatasetPublic)
def get_dataset(
    dataset_id: str, session: SessionDep, caller: LedgerReader
) -> DatasetCustodian | DatasetPublic:
    """One dataset; custodians also see facts about the raw upload, auditors do not."""
    dataset = owned(session, Dataset, dataset_id, caller)
    if caller.role is Role.custodian:
        return _custodian_view(session, dataset)
    return DatasetPublic.model_validate(dataset)


@router.get("/{dataset_id}/schema")
def get_schema(dataset_id: str, session: SessionDep, caller: Custodian) -> dict:
    """The dataset's current schema (kinds and public domains)."""
    return owned(session, Dataset, dataset_id, caller).schema


@router.put("/{dataset_id}/schema")
def put_schema(dataset_id: str, body: SchemaUpdate, session: SessionDep, caller: Custodian) -> dict:
    """Set kinds, public domains (bounds, categories, nullable) and the target.

    A column without ``bounds``/``categories`` has its domain discovered with DP.
    """
    dataset = owned(session, Dataset, dataset_id, caller, lock=True)
    return datasets.update_schema(session, dataset, body.model_dump(), actor=caller.actor).schema


@router.put("/{dataset_id}/budget", response_model=BudgetPublic)
def put_budget(dataset_id: str, body: BudgetUpdate, session: SessionDep, caller: Custodian) -> BudgetPublic:
    """Set the dataset's total privacy budget (not below what is already charged or reserved)."""
    owned(session, Dataset, dataset_id, caller)
    budget = ledger.set_budget(session, dataset_id, epsilon=body.epsilon, delta=body.delta)
    audit.append(
        session,
        action="budget.update",
        actor=caller.actor,
        tenant_id=caller.tenant_id,
        object_type="dataset",
        object_id=dataset_id,
        details={"epsilon": budget.epsilon_total, "delta": budget.delta_total},
    )
    return BudgetPublic(**budget.as_dict())


@router.get("/{dataset_id}/ledger", response_model=LedgerPublic)
def get_ledger(dataset_id: str, session: SessionDep, caller: LedgerReader) -> LedgerPublic:
    """The budget and every job that reserved or spent from it."""
    dataset = owned(session, Dataset, dataset_id, caller)
    jobs = session.scalars(select(Job).where(Job.dataset_id == dataset.id).order_by(Job.created_at)).all()
    releases = session.execute(
        select(Release.job_id, Release.id).where(Release.dataset_id == dataset.id)
    ).all()
    by_job: dict[str, list[str]] = {}
    for job_id, release_id in releases:
        by_job.setdefault(job_id, []).append(release_id)
    return LedgerPublic(
        dataset_id=dataset.id,
        budget=BudgetPublic(**ledger.budget_of(session, dataset).as_dict()),
        lines=[
            LedgerLine(
                job_id=j.id,
                state=j.state,
                epsilon_reserved=j.epsilon,
                delta_reserved=j.delta,
                epsilon_charged=j.epsilon_charged,
                delta_charged=j.delta_charged,
                created_at=j.created_at,
                finished_at=j.finished_at,
                release_ids=by_job.get(j.id, []),
            )
            for j in jobs
        ],
    )


@router.delete("/{dataset_id}/raw", response_model=DatasetPublic)
def delete_raw(dataset_id: str, session: SessionDep, services: ServicesDep, caller: Custodian) -> Dataset:
    """Erase the raw upload (key and file); releases, certificates and the ledger stay.

    The file is deleted once the erase has committed and before the response is sent.
    """
    dataset = owned(session, Dataset, dataset_id, caller, lock=True)
    key = datasets.erase_raw(session, dataset, actor=caller.actor)
    storage, engine = services.storage, session.get_bind()
    after_commit(session, lambda: datasets.finish_erase(storage, key, engine))  # type: ignore[arg-type]
    return dataset


@router.put("/{dataset_id}/retention", response_model=DatasetPublic)
def set_retention(dataset_id: str, body: RetentionUpdate, session: SessionDep, caller: Custodian) -> Dataset:
    """Erase the raw upload automatically ``days`` after it was uploaded (null: keep until erased).

    A period already over erases it at the next sweep (within ``DPSYNTH_RECONCILE_SECONDS``).
    """
    dataset = owned(session, Dataset, dataset_id, caller, lock=True)
    return datasets.set_retention(session, dataset, body.days, actor=caller.actor)

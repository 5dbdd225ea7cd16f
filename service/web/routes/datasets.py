"""Datasets: list, upload (streamed, with a progress bar), overview, total budget, erase raw data.

Every page calls the API's own route function with the logged-in user as the caller.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.api.deps import Principal, ServicesDep, SessionDep
from service.api.routes import datasets as api
from service.api.routes import jobs as jobs_api
from service.api.routes import releases as releases_api
from service.api.routes import statements as statements_api
from service.api.schemas import NAME_PATTERN, BudgetUpdate, DatasetCustodian, DatasetPublic
from service.core.db import transaction
from service.core.errors import InvalidRequestError
from service.web.deps import Custodian, FormDep, LedgerReader, flash, render, web_router

router = web_router()
_EXTENSIONS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@router.get("/datasets")
def list_datasets(request: Request, session: SessionDep, caller: Custodian) -> Response:
    """The tenant's datasets with what is left of each budget."""
    rows = []
    for dataset in api.list_datasets(session, caller):
        view = api.get_dataset(dataset.id, session, caller)
        assert isinstance(view, DatasetCustodian)
        rows.append(view)
    return render(request, "datasets.html", datasets=rows)


@router.get("/datasets/new")
def upload_page(request: Request, caller: Custodian) -> Response:
    """The upload form (custodians only: an analyst typing this address gets a 403)."""
    return render(request, "dataset_new.html")


def _parse_budget(text: str | None) -> tuple[float | None, str | None]:
    if text is None or not text.strip():
        return None, None
    try:
        value = float(text)
    except ValueError:
        return None, f"{text!r} is not a number; write for example 3 or 1.5"
    if not (math.isfinite(value) and value > 0):
        return None, "the total epsilon must be a number above 0, for example 3"
    return value, None


@router.post("/datasets/upload")
async def upload(
    request: Request,
    services: ServicesDep,
    caller: Custodian,
    name: Annotated[str, Query()] = "",
    filename: Annotated[str, Query()] = "",
    budget: Annotated[str | None, Query()] = None,
) -> Response:
    """The raw file as the request body (sent by the page's script), into the API's upload path.

    Answers JSON for the script: where to go next, or ``{"detail", "field"}`` to show the
    message next to the field that caused it.
    """
    name = name.strip()
    if not name or len(name) > 200 or not re.match(NAME_PATTERN, name):
        return JSONResponse(
            {"detail": "give the dataset a name (up to 200 characters)", "field": "name"}, 422
        )
    epsilon, problem = _parse_budget(budget)
    if problem:
        return JSONResponse({"detail": problem, "field": "budget"}, 422)
    suffix = filename[filename.rfind(".") :].lower() if "." in filename else ""
    file_format = _EXTENSIONS.get(suffix)
    if file_format is None:
        detail = "choose a .csv or .parquet file" + (f"; {filename!r} is neither" if filename else "")
        return JSONResponse({"detail": detail, "field": "file"}, 422)
    dataset = await api.upload_dataset(request, services, caller, name=name, format=file_format)
    if epsilon is not None:
        with transaction(services.sessions) as session:
            api.put_budget(dataset.id, BudgetUpdate(epsilon=epsilon), session, caller)
    flash(request, f"Uploaded {name!r}: {dataset.row_count:,} rows. Review the schema before training.")
    return JSONResponse({"id": dataset.id, "next": f"/ui/datasets/{dataset.id}/schema"}, status_code=201)


def _overview(session: Session, caller: Principal, dataset_id: str) -> dict[str, Any]:
    dataset = api.get_dataset(dataset_id, session, caller)
    assert isinstance(dataset, DatasetCustodian)
    return {
        "dataset": dataset,
        "jobs": jobs_api.list_jobs(session, caller, dataset_id=dataset.id),
        "releases": [r for r in releases_api.list_releases(session, caller) if r.dataset_id == dataset.id],
    }


def _overview_with_errors(
    request: Request,
    services: ServicesDep,
    caller: Principal,
    dataset_id: str,
    errors: dict[str, str],
    values: dict,
) -> Response:
    with transaction(services.sessions) as session:
        context = _overview(session, caller, dataset_id)
    return render(request, "dataset.html", status_code=422, errors=errors, values=values, **context)


@router.get("/datasets/{dataset_id}")
def dataset_page(dataset_id: str, request: Request, session: SessionDep, caller: Custodian) -> Response:
    """One dataset: raw facts, budget, jobs and releases, and the erase button."""
    return render(request, "dataset.html", errors={}, values={}, **_overview(session, caller, dataset_id))


@router.post("/datasets/{dataset_id}/budget")
def set_budget(
    dataset_id: str, request: Request, form: FormDep, services: ServicesDep, caller: Custodian
) -> Response:
    """Set the dataset's total budget; errors come back next to the field."""
    values = {"epsilon": str(form.get("epsilon", "")), "delta": str(form.get("delta", "")).strip()}
    errors: dict[str, str] = {}
    try:
        body = BudgetUpdate(epsilon=values["epsilon"], delta=values["delta"] or None)  # type: ignore[arg-type]
    except ValidationError as exc:
        for problem in exc.errors():
            field = str(problem["loc"][0]) if problem["loc"] else "epsilon"
            errors[field] = _plain(problem["msg"], field)
    else:
        try:
            with transaction(services.sessions) as session:
                api.put_budget(dataset_id, body, session, caller)
        except InvalidRequestError as exc:
            errors["epsilon"] = str(exc)
    if errors:
        return _overview_with_errors(request, services, caller, dataset_id, errors, values)
    flash(request, "The total budget is saved.")
    return RedirectResponse(f"/ui/datasets/{dataset_id}", status_code=303)


def _plain(message: str, field: str) -> str:
    if field == "epsilon":
        return "write the total epsilon as a number above 0, for example 3"
    if field == "delta":
        return "leave delta empty for the default, or write a number between 0 and 1 such as 1e-6"
    return message


@router.post("/datasets/{dataset_id}/erase")
def erase_raw(
    dataset_id: str, request: Request, form: FormDep, services: ServicesDep, caller: Custodian
) -> Response:
    """Erase the raw upload after an explicit confirmation; releases and the ledger stay."""
    if form.get("confirm") != "yes":
        errors = {"confirm": "tick the box to confirm that the raw data should be erased for good"}
        return _overview_with_errors(request, services, caller, dataset_id, errors, {})
    with transaction(services.sessions) as session:
        name = api.delete_raw(dataset_id, session, services, caller).name
    flash(request, f"The raw data of {name!r} is erased. Its releases, certificates and ledger remain.")
    return RedirectResponse(f"/ui/datasets/{dataset_id}", status_code=303)


@router.get("/ledgers")
def ledgers(request: Request, session: SessionDep, caller: LedgerReader) -> Response:
    """Every dataset's budget at a glance (custodians and auditors)."""
    rows = [
        (dataset, api.get_ledger(dataset.id, session, caller))
        for dataset in api.list_datasets(session, caller)
    ]
    return render(request, "ledgers.html", rows=rows)


@router.get("/datasets/{dataset_id}/ledger")
def ledger(dataset_id: str, request: Request, session: SessionDep, caller: LedgerReader) -> Response:
    """What each job reserved and was charged, and what is left."""
    dataset = DatasetPublic.model_validate(api.get_dataset(dataset_id, session, caller))
    ledger = api.get_ledger(dataset_id, session, caller)
    return render(request, "ledger.html", dataset=dataset, ledger=ledger, section="/ui/ledgers")


@router.get("/datasets/{dataset_id}/statement")
def statement(dataset_id: str, services: ServicesDep, caller: LedgerReader) -> Response:
    """The budget statement as a PDF download (the API's route, with the logged-in user).

    PDF only: the HTML statement carries its own inline CSS, which the form's CSP refuses.
    """
    return statements_api.get_statement(dataset_id, services, caller, format="pdf")

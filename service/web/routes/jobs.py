"""Jobs: the new-job form (epsilon explained in plain words), live progress, cancel, more rows."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session

from service.api.deps import Principal, ServicesDep, SessionDep
from service.api.routes import datasets as datasets_api
from service.api.routes import jobs as api
from service.api.schemas import DatasetCustodian, JobCreate, ReleaseCreate
from service.core.db import transaction
from service.core.errors import BudgetExhaustedError, ConflictError, InvalidRequestError
from service.web.budget import budget_view, default_epsilon, job_delta
from service.web.deps import Custodian, FormDep, flash, render, web_router

router = web_router()

# The engine's phases in plain words (the page's script has the same list).
PHASES = {
    "queued": "waiting for a worker",
    "starting": "starting",
    "measure": "measuring noisy statistics",
    "generator": "fitting the generator",
    "dp-gan": "training against the DP-SGD discriminator",
    "done": "done",
}
FIELDS = (
    "epsilon",
    "delta",
    "rows",
    "generator_steps",
    "seed",
    "accountant",
    "discriminator_share",
    "dpsgd_epochs",
)
PLAIN = {
    "epsilon": "write epsilon as a number above 0, for example 1",
    "delta": "leave it empty for the default, or write a number between 0 and 1 such as 1e-6",
    "rows": "write how many synthetic rows you want: a whole number from 1 to 100,000,000",
    "generator_steps": "a whole number from 1 to 100,000, or empty for the default",
    "seed": "a whole number, 0 or more, or empty for a random one",
    "accountant": "choose PRV or RDP",
    "discriminator_share": "a share from 0 (no DP-GAN phase) up to, not including, 1; for example 0.3",
    "dpsgd_epochs": "a number of passes above 0, up to 1000, or empty for the default (3)",
}


@router.get("/jobs")
def list_jobs(request: Request, session: SessionDep, caller: Custodian) -> Response:
    """The tenant's jobs, newest first."""
    names = {d.id: d.name for d in datasets_api.list_datasets(session, caller)}
    return render(request, "jobs.html", jobs=api.list_jobs(session, caller), names=names)


def _number(text: str | None, low: float, high: float) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if low < value < high else None


def _form(
    request: Request,
    dataset: DatasetCustodian,
    values: dict[str, str],
    errors: dict[str, str],
    status: int = 200,
) -> Response:
    """The form, with the planned split for what it holds (when that is a valid job)."""
    options = {
        name: number
        for name, low, high in (("discriminator_share", 0, 1), ("dpsgd_epochs", 0, 1001))
        if (number := _number(values.get(name), low, high)) is not None
    }
    return render(
        request,
        "job_new.html",
        status_code=status,
        dataset=dataset,
        values=values,
        errors=errors,
        default_delta=job_delta(dataset),
        plan=budget_view(dataset, epsilon=_number(values.get("epsilon"), 0, float("inf")), **options),
    )


def _dataset(session: Session, caller: Principal, dataset_id: str) -> DatasetCustodian:
    dataset = datasets_api.get_dataset(dataset_id, session, caller)
    assert isinstance(dataset, DatasetCustodian)
    return dataset


@router.get("/datasets/{dataset_id}/jobs/new")
def new_job(dataset_id: str, request: Request, session: SessionDep, caller: Custodian) -> Response:
    """The job form, with the dataset's remaining budget and the planned split."""
    dataset = _dataset(session, caller, dataset_id)
    values = {"epsilon": f"{default_epsilon(dataset):g}", "rows": str(dataset.row_count), "accountant": "prv"}
    return _form(request, dataset, values, {})


@router.post("/datasets/{dataset_id}/jobs")
def submit(
    dataset_id: str, request: Request, form: FormDep, services: ServicesDep, caller: Custodian
) -> Response:
    """Reserve the budget and queue the job through the API's ``submit_job``."""
    values = {name: str(form.get(name, "")).strip() for name in FIELDS}
    errors: dict[str, str] = {}
    try:
        body = JobCreate(dataset_id=dataset_id, **{k: v for k, v in values.items() if v})  # type: ignore[arg-type]
    except ValidationError as exc:
        for problem in exc.errors():
            field = str(problem["loc"][0]) if problem["loc"] else "form"
            errors[field] = PLAIN.get(field, problem["msg"])
    else:
        try:
            with transaction(services.sessions) as session:
                job = api.submit_job(body, services, session, caller)
        except BudgetExhaustedError as exc:
            errors["epsilon"] = f"{exc}. Choose a smaller epsilon, or raise the dataset's total budget."
        except InvalidRequestError as exc:
            message = str(exc)
            field = next((f for f in ("delta", "rows", "epsilon") if message.startswith(f)), "form")
            errors[field] = message
        except ConflictError as exc:
            errors["form"] = str(exc).replace("(PUT /datasets/{id}/budget) ", "")
    if errors:
        with transaction(services.sessions) as session:
            dataset = _dataset(session, caller, dataset_id)
        return _form(request, dataset, values, errors, status=422)
    flash(request, f"Job queued: it reserved epsilon {job.epsilon:g} from the dataset's budget.")
    return RedirectResponse(f"/ui/jobs/{job.id}", status_code=303)


def _job_page(
    request: Request,
    session: Session,
    caller: Principal,
    job_id: str,
    errors: dict[str, str],
    status: int = 200,
) -> Response:
    job = api.get_job(job_id, session, caller)
    dataset = datasets_api.get_dataset(job.dataset_id, session, caller)
    return render(
        request, "job.html", status_code=status, job=job, dataset=dataset, phases=PHASES, errors=errors
    )


@router.get("/jobs/{job_id}")
def job_page(job_id: str, request: Request, session: SessionDep, caller: Custodian) -> Response:
    """Live progress (the page's script polls ``status``), cancel, and the release when done."""
    return _job_page(request, session, caller, job_id, {})


@router.get("/jobs/{job_id}/status")
def job_status(job_id: str, session: SessionDep, caller: Custodian) -> JSONResponse:
    """The job as the API shows it, for the progress bar."""
    return JSONResponse(api.get_job(job_id, session, caller).model_dump(mode="json"))


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, request: Request, services: ServicesDep, caller: Custodian) -> Response:
    """Cancel: a job that never ran ends uncharged; a running one stops, charged what it spent."""
    with transaction(services.sessions) as session:
        job = api.cancel_job(job_id, services, session, caller)
    flash(
        request,
        "Cancelled." if job.state == "cancelled" else "Stopping the job; it is charged what it spent.",
    )
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


@router.post("/jobs/{job_id}/releases")
def more_rows(
    job_id: str, request: Request, form: FormDep, services: ServicesDep, caller: Custodian
) -> Response:
    """Draw another table from the job's model: post-processing, no budget."""
    try:
        body = ReleaseCreate(rows=str(form.get("rows", "")).strip())  # type: ignore[arg-type]
    except ValidationError:
        errors = {"more-rows": "write how many rows to draw: a whole number from 1 to 100,000,000"}
        with transaction(services.sessions) as session:
            return _job_page(request, session, caller, job_id, errors, status=422)
    with transaction(services.sessions) as session:
        release = api.request_release(job_id, body, services, session, caller)
    flash(request, f"Drawing {release.rows:,} more rows; no budget is spent.")
    return RedirectResponse(f"/ui/releases/{release.id}", status_code=303)

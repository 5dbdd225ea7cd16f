"""Schema review: kinds, domains (public or DP-discovered), target, and the budget split.

Each column's kind and domain, the target, and the split of the budget the engine's
planner would use are shown before anything runs. The form's fields are numbered by
column position (``kind_0``, ``low_0`` …), so any column name works. The schema is saved
through the API's ``put_schema``; its problems come back next to the column they name.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import FormData

from models.schema import ColumnKind
from service.api.deps import ServicesDep, SessionDep
from service.api.routes import datasets as api
from service.api.schemas import DatasetCustodian, SchemaUpdate
from service.core.db import transaction
from service.core.errors import InvalidRequestError
from service.web.budget import budget_view
from service.web.deps import Custodian, FormDep, flash, render, web_router

router = web_router()

KINDS = [
    (ColumnKind.CONTINUOUS, "continuous number"),
    (ColumnKind.INTEGER, "whole number"),
    (ColumnKind.CATEGORICAL, "category"),
    (ColumnKind.BOOLEAN, "yes / no"),
    (ColumnKind.DATETIME, "date and time"),
    (ColumnKind.IDENTIFIER, "identifier (dropped)"),
    (ColumnKind.TEXT, "free text (dropped)"),
]
NULLABLE = {"dp": None, "no": False, "yes": True}


def _rows_from_schema(dataset: DatasetCustodian) -> list[dict[str, Any]]:
    """One row per column, filled from the saved schema."""
    rows = []
    for i, (name, inferred) in enumerate(dataset.inferred_schema["columns"].items()):
        spec = dataset.schema_["columns"].get(name, inferred)
        bounds, categories = spec.get("bounds"), spec.get("categories")
        nullable = {None: "dp", False: "no", True: "yes"}[spec.get("nullable")]
        rows.append(
            {
                "i": i,
                "name": name,
                "inferred": inferred["kind"],
                "kind": spec["kind"],
                "public": bounds is not None or categories is not None,
                "low": _bound_text(bounds[0], spec["kind"]) if bounds else "",
                "high": _bound_text(bounds[1], spec["kind"]) if bounds else "",
                "categories": "\n".join(str(c) for c in categories or []),
                "nullable": nullable,
            }
        )
    return rows


def _bound_text(value: float, kind: str) -> str:
    if kind == ColumnKind.DATETIME:
        return pd.Timestamp(value, unit="s").isoformat()
    return f"{value:g}"


def _number(text: str, kind: str) -> float | str:
    """A bound as the engine takes it: a number, or for dates the text (the engine parses it)."""
    if kind == ColumnKind.DATETIME:
        pd.Timestamp(text)  # raises ValueError on a non-date
        return text
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_form(
    form: FormData, names: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
    """The schema the form describes, the rows to show again, and the problems by field."""
    kinds = {k.value for k, _ in KINDS}
    columns: dict[str, dict[str, Any]] = {}
    rows, errors = [], {}
    for i, name in enumerate(names):
        text = {
            key: str(form.get(f"{key}_{i}", "")).strip()
            for key in ("kind", "domain", "low", "high", "nullable")
        }
        text["categories"] = str(form.get(f"categories_{i}", ""))
        kind = text["kind"] if text["kind"] in kinds else ColumnKind.CATEGORICAL.value
        public = text["domain"] == "public"
        rows.append({**text, "i": i, "name": name, "kind": kind, "public": public})
        spec: dict[str, Any] = {"kind": kind}
        if public and ColumnKind(kind).is_numeric:
            try:
                low, high = _number(text["low"], kind), _number(text["high"], kind)
            except ValueError:
                what = "dates such as 2020-01-31" if kind == ColumnKind.DATETIME else "numbers"
                errors[f"bounds_{i}"] = f"write the lowest and highest possible values as {what}"
                continue
            if not isinstance(low, str) and not low < high:  # type: ignore[operator]
                errors[f"bounds_{i}"] = "the lowest value must be below the highest"
                continue
            spec["bounds"] = [low, high]
        elif public and kind == ColumnKind.CATEGORICAL:
            categories = [line.strip() for line in text["categories"].splitlines() if line.strip()]
            if not categories:
                errors[f"categories_{i}"] = "list every possible category, one per line"
                continue
            spec["categories"] = categories
        if NULLABLE.get(text["nullable"]) is not None:
            spec["nullable"] = NULLABLE[text["nullable"]]
        columns[name] = spec
    target = str(form.get("target", "")) or None
    return {"target": target, "columns": columns}, rows, errors


def _engine_errors(message: str, names: list[str]) -> dict[str, str]:
    """The engine's "; "-joined problems, each next to the column (or target) it names."""
    errors: dict[str, str] = {}
    for part in message.split("; "):
        index = next((i for i, n in enumerate(names) if part.startswith(f"column {n!r}")), None)
        if index is not None:
            errors[f"column_{index}"] = part.split(": ", 1)[-1]
        elif part.startswith("target"):
            errors["target"] = part
        else:
            errors["form"] = (errors.get("form", "") + " " + part).strip()
    return errors


def _page(
    request: Request,
    dataset: DatasetCustodian,
    rows: list[dict[str, Any]],
    errors: dict[str, str],
    status: int = 200,
) -> Response:
    return render(
        request,
        "schema.html",
        status_code=status,
        dataset=dataset,
        rows=rows,
        kinds=KINDS,
        target=dataset.schema_.get("target"),
        errors=errors,
        plan=budget_view(dataset),
    )


@router.get("/datasets/{dataset_id}/schema")
def schema_page(dataset_id: str, request: Request, session: SessionDep, caller: Custodian) -> Response:
    """Review kinds and domains, and see the budget split before anything runs."""
    dataset = api.get_dataset(dataset_id, session, caller)
    assert isinstance(dataset, DatasetCustodian)
    return _page(request, dataset, _rows_from_schema(dataset), {})


@router.post("/datasets/{dataset_id}/schema")
def save_schema(
    dataset_id: str, request: Request, form: FormDep, services: ServicesDep, caller: Custodian
) -> Response:
    """Save the reviewed schema (kinds, public domains, target) through the API's route."""
    with transaction(services.sessions) as session:
        dataset = api.get_dataset(dataset_id, session, caller)
    assert isinstance(dataset, DatasetCustodian)
    names = list(dataset.inferred_schema["columns"])
    raw, rows, errors = parse_form(form, names)
    for row in rows:
        row["inferred"] = dataset.inferred_schema["columns"][row["name"]]["kind"]
    if not errors:
        try:
            with transaction(services.sessions) as session:
                api.put_schema(dataset_id, SchemaUpdate(**raw), session, caller)
        except InvalidRequestError as exc:
            errors = _engine_errors(str(exc), names)
    if errors:
        dataset.schema_ = {**dataset.schema_, "target": raw["target"]}
        return _page(request, dataset, rows, errors, status=422)
    flash(request, "The schema is saved. The budget split below follows it.")
    return RedirectResponse(f"/ui/datasets/{dataset_id}/schema", status_code=303)

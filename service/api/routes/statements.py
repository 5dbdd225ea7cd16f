"""A dataset's budget statement, as PDF or HTML, for custodians and auditors."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from service.api.deps import LedgerReader, ServicesDep, owned
from service.core import statement
from service.core.db import transaction
from service.core.orm import Dataset
from service.core.statement_document import document
from service.core.statement_render import render_html, render_pdf

router = APIRouter(prefix="/datasets", tags=["datasets"])

# The HTML is a self-contained document: its own inline CSS, no scripts, nothing fetched.
_HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
_RESPONSES: dict[int | str, dict] = {
    200: {
        "description": "the statement: a PDF attachment, or an HTML page",
        "content": {
            "application/pdf": {"schema": {"type": "string", "format": "binary"}},
            "text/html": {"schema": {"type": "string"}},
        },
    }
}


@router.get("/{dataset_id}/statement", response_class=Response, responses=_RESPONSES)
def get_statement(
    dataset_id: str,
    services: ServicesDep,
    caller: LedgerReader,
    format: Annotated[statement.StatementFormat, Query(description="pdf or html")] = "pdf",
) -> Response:
    """The budget statement: budget, every release and its guarantee, what remains, who did what.

    Written for readers who are not privacy engineers. Asking for it is an audited event,
    and the statement names that event (its place in the hash-chained audit log), so it can
    be tied to an audit log export. It holds no fact about the raw upload.
    """
    with transaction(services.sessions) as session:
        dataset = owned(session, Dataset, dataset_id, caller)
        facts = statement.issue(session, dataset, actor=caller.actor, fmt=format)
    doc = document(facts)
    if format == "html":
        return HTMLResponse(render_html(doc), headers={"Content-Security-Policy": _HTML_CSP})
    name = f"statement-{facts.dataset_id}-{facts.generated_at:%Y-%m-%d}.pdf"
    return Response(
        render_pdf(doc),
        media_type="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )

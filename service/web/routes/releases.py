"""Releases: list, download (CSV/Parquet), the certificate (page and JSON), the quality report.

The quality report is computed against raw data, so only the custodian sees it (the API's
``get_quality`` is custodian-only); certificates lose the raw input's hash for everyone
else (the API's ``get_certificate`` does that).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import JSONResponse, Response

from service.api.deps import ServicesDep, SessionDep
from service.api.routes import releases as api
from service.api.schemas import TableFormat
from service.core.orm import Role
from service.web import charts
from service.web.deps import ReleaseReader, render, web_router

router = web_router()


@router.get("/releases")
def list_releases(request: Request, session: SessionDep, caller: ReleaseReader) -> Response:
    """The tenant's releases, newest first."""
    return render(request, "releases.html", releases=api.list_releases(session, caller))


def _quality_view(report: dict[str, Any] | None) -> dict[str, Any] | None:
    if not report:
        return None
    marginals = []
    for m in report.get("marginals", []):
        gap = 0.5 * sum(abs(a - b) for a, b in zip(m["real"], m["synthetic"], strict=True))
        marginals.append({**m, "svg": charts.marginal_bars(m), "tvd": gap})
    associations = report.get("associations")
    heatmaps = None
    if associations:
        heatmaps = {
            "real": charts.heatmap(associations["real"], title="Real (training rows)"),
            "synthetic": charts.heatmap(associations["synthetic"], title="Synthetic"),
        }
    return {"report": report, "marginals": marginals, "heatmaps": heatmaps}


@router.get("/releases/{release_id}")
def release_page(release_id: str, request: Request, session: SessionDep, caller: ReleaseReader) -> Response:
    """Downloads, the certificate's summary and, for the custodian, the quality report."""
    release = api.get_release(release_id, session, caller)
    certificate = api.get_certificate(release_id, session, caller)
    quality = None
    if caller.role is Role.custodian:
        quality = _quality_view(api.get_quality(release_id, session, caller)["report"])
    return render(
        request,
        "release.html",
        release=release,
        certificate=certificate,
        quality=quality,
        can_download=caller.role is not Role.auditor,
        legend=charts.legend(),
    )


@router.get("/releases/{release_id}/download")
def download(
    release_id: str,
    session: SessionDep,
    services: ServicesDep,
    caller: ReleaseReader,
    format: Annotated[TableFormat, Query()] = "csv",
) -> Response:
    """The synthetic table as a file (audited as a download, like the API's)."""
    return api.download_release(release_id, session, services, caller, format=format)


@router.get("/releases/{release_id}/certificate")
def certificate_page(
    release_id: str, request: Request, session: SessionDep, caller: ReleaseReader
) -> Response:
    """The privacy certificate as a page people can read."""
    release = api.get_release(release_id, session, caller)
    certificate = api.get_certificate(release_id, session, caller)
    return render(request, "certificate.html", release=release, c=certificate)


@router.get("/releases/{release_id}/certificate.json")
def certificate_json(release_id: str, session: SessionDep, caller: ReleaseReader) -> JSONResponse:
    """The certificate exactly as the API serves it."""
    certificate = api.get_certificate(release_id, session, caller)
    headers = {"Content-Disposition": f'inline; filename="certificate-{release_id}.json"'}
    return JSONResponse(certificate, headers=headers)

"""Errors on the web form's paths become pages (or JSON for its scripts); the API's stay JSON.

The handlers wrap the API's (``service.api.errors``) and pick by path, so a service error
keeps one status everywhere. They run after the request's transaction has rolled back.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from service.api.errors import SafeJSONResponse, status_of
from service.core.errors import BudgetExhaustedError, ServiceError
from service.web.deps import LoginRequired, render

TITLES = {
    400: "That did not work",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible right now",
    413: "Too large",
    422: "Please check the input",
}


def is_web(request: Request) -> bool:
    """Whether the request is for the web form."""
    return request.url.path == "/ui" or request.url.path.startswith("/ui/")


def wants_json(request: Request) -> bool:
    """The form's scripts ask for JSON; browsers navigating ask for HTML."""
    return "application/json" in request.headers.get("accept", "")


def error_page(request: Request, status: int, message: str) -> Response:
    """The error page (or ``{"detail": message}`` for a script)."""
    if wants_json(request):
        return SafeJSONResponse({"detail": message}, status_code=status)
    title = TITLES.get(status, "Something went wrong")
    return render(request, "error.html", status_code=status, status=status, title=title, message=message)


def safe_next(path: str | None) -> str:
    """Only a path inside the web form is followed after login (no open redirects)."""
    if path and path.startswith("/ui/") and not path.startswith("//") and "\\" not in path:
        return path
    return "/ui/"


def install(app: FastAPI) -> None:
    """Wrap the app's handlers so that ``/ui`` paths get pages."""
    api_service = app.exception_handlers[ServiceError]
    api_validation = app.exception_handlers[RequestValidationError]

    async def service_error(request: Request, exc: Exception) -> Response:
        if not is_web(request):
            return await api_service(request, exc)
        if wants_json(request):
            body: dict[str, Any] = {"detail": str(exc)}
            if isinstance(exc, BudgetExhaustedError):
                body["epsilon_remaining"] = exc.epsilon_remaining
            return SafeJSONResponse(body, status_code=status_of(exc))
        return error_page(request, status_of(exc), str(exc))

    async def login_required(request: Request, _exc: Exception) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": "your session ended; log in again", "login": "/ui/login"}, 401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        where = "/ui/login" if request.method != "GET" else f"/ui/login?next={quote(safe_next(target))}"
        return RedirectResponse(where, status_code=303)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if not is_web(request):
            return await http_exception_handler(request, exc)
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return error_page(request, exc.status_code, message)

    async def validation_error(request: Request, exc: Exception) -> Response:
        if not is_web(request):
            return await api_validation(request, exc)
        return error_page(request, 422, "The address or the form is not valid; go back and try again.")

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)

"""The one place where service errors become HTTP responses."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from service.core.crypto import DecryptionError
from service.core.errors import (
    AuthenticationError,
    BudgetExhaustedError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceError,
    UploadRejectedError,
)

STATUS: list[tuple[type[Exception], int]] = [
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (BudgetExhaustedError, 409),
    (ConflictError, 409),
    (PayloadTooLargeError, 413),
    (UploadRejectedError, 422),
    (InvalidRequestError, 422),
]


def _status(exc: Exception) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400


async def service_error(_request: Request, exc: Exception) -> JSONResponse:
    """``{"detail": message}`` with the status of the error's class (budget adds what remains)."""
    body: dict[str, object] = {"detail": str(exc)}
    if isinstance(exc, BudgetExhaustedError):
        body["epsilon_remaining"] = exc.epsilon_remaining
        body["delta_remaining"] = exc.delta_remaining
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
    return JSONResponse(body, status_code=_status(exc), headers=headers)


async def decryption_error(_request: Request, exc: Exception) -> JSONResponse:
    """Stored data failed authentication: a server-side integrity problem, reported as such."""
    return JSONResponse({"detail": "stored data failed its integrity check; contact the operator"}, 500)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(DecryptionError, decryption_error)

"""The one place where service errors become HTTP responses."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

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


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that can quote back anything a client sent.

    The default rendering fails (a 500) on a lone surrogate, which ``json.loads`` accepts
    from a request body as an escaped surrogate, and on NaN or infinity (``NaN``,
    ``Infinity``): non-ASCII is escaped here and non-finite numbers are quoted as text.
    """

    def render(self, content: Any) -> bytes:
        """The content as ASCII JSON."""
        text = json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        return text.encode()


def status_of(exc: Exception) -> int:
    """The HTTP status of a service error (400 for one not in ``STATUS``)."""
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
    return SafeJSONResponse(body, status_code=status_of(exc), headers=headers)


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a request that does not fit the schema, rendered safely."""
    assert isinstance(exc, RequestValidationError)
    return SafeJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


async def decryption_error(_request: Request, exc: Exception) -> JSONResponse:
    """Stored data failed authentication: a server-side integrity problem, reported as such."""
    return JSONResponse({"detail": "stored data failed its integrity check; contact the operator"}, 500)


async def overloaded(_request: Request, exc: Exception) -> JSONResponse:
    """No database connection came free in time: the service is overloaded, try again (503)."""
    return JSONResponse(
        {"detail": "the service is overloaded (no database connection free); retry shortly"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(PoolTimeoutError, overloaded)
    app.add_exception_handler(DecryptionError, decryption_error)
    app.add_exception_handler(RequestValidationError, validation_error)

"""Errors of the service layer; ``service.api.errors`` maps each to one HTTP status.

Messages are for the person who made the request: they say what was wrong and what to
do, and never quote raw data values.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every error the service reports to its caller."""


class NotFoundError(ServiceError, LookupError):
    """No such object in the caller's tenant (another tenant's object is 'not found' too)."""


class PermissionDeniedError(ServiceError, PermissionError):
    """The caller's role may not do this."""


class AuthenticationError(ServiceError):
    """Missing, malformed, unknown or revoked credentials."""


class InvalidRequestError(ServiceError, ValueError):
    """The request is well-formed but its content is not acceptable."""


class ConflictError(ServiceError):
    """The object is in a state that does not allow this (e.g. raw data already erased)."""


class BudgetExhaustedError(ConflictError):
    """A job would take the dataset past its privacy budget.

    Attributes:
        epsilon_remaining: what is left of the dataset's epsilon budget.
        delta_remaining: what is left of its delta budget.
    """

    def __init__(self, message: str, *, epsilon_remaining: float, delta_remaining: float) -> None:
        super().__init__(message)
        self.epsilon_remaining = epsilon_remaining
        self.delta_remaining = delta_remaining


class UploadRejectedError(ServiceError, ValueError):
    """The uploaded file is not a usable table; nothing of it was kept."""


class PayloadTooLargeError(UploadRejectedError):
    """The upload is over the size limit; nothing of it was kept."""

"""Errors raised by the engine.

Each class subclasses the builtin that best describes it, so callers that do not
know dpsynth can still catch ``ValueError`` or ``RuntimeError``. Messages quote the
bad value and say how to fix it; the service maps them to HTTP codes in one place.
"""


class DPSynthError(Exception):
    """Base of every error the engine raises on purpose (callers catch this one)."""


class SchemaError(DPSynthError, ValueError):
    """The schema file or the table does not fit the declared schema."""


class PrivacyParameterError(DPSynthError, ValueError):
    """An epsilon, delta or other privacy setting is invalid for this table."""


class BudgetExceededError(DPSynthError, ValueError):
    """A mechanism would spend more privacy budget than the target allows."""


class DPCompatibilityError(DPSynthError, ValueError):
    """A model or training setting would break the DP-SGD accounting."""


class SecureModeUnavailableError(DPSynthError, RuntimeError):
    """``secure_mode=True`` was asked for but no cryptographically secure RNG is installed."""


class NotFittedError(DPSynthError, RuntimeError):
    """A synthesizer was used before ``fit`` or ``load``."""


class FitCancelledError(DPSynthError, RuntimeError):
    """Training stopped because the caller asked for it.

    Attributes:
        epsilon_spent: the epsilon the completed steps spent; it stays spent.
    """

    def __init__(self, message: str, *, epsilon_spent: float) -> None:
        super().__init__(message)
        self.epsilon_spent = epsilon_spent

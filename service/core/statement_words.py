"""The budget statement's words: numbers, times, events and charges as a lawyer reads them.

Shared by every part of the statement so that the HTML and the PDF say exactly the same.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from service.core.orm import Job, JobState, aware

_REASON_CHARS = 200


def eps_text(value: Any) -> str:
    """Epsilon to four significant digits (``—`` when there is none)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def delta_text(value: Any) -> str:
    """Delta as ``1 × 10⁻⁶`` (``—`` when there is none)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = round(value / 10**exponent, 2)
    if abs(mantissa) >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:g} × 10{str(exponent).translate(_SUPERSCRIPT)}"


def count_text(value: Any) -> str:
    """A count with thousands separators (``?`` when there is none)."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"


def when_text(value: datetime | None, *, seconds: bool = False) -> str:
    """A time in UTC, e.g. ``2026-11-23 15:52 UTC``."""
    if value is None:
        return "—"
    return as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def _reason(error: str) -> str:
    error = " ".join(error.split())
    if not error:
        return "no reason recorded"
    return error if len(error) <= _REASON_CHARS else error[: _REASON_CHARS - 1] + "…"


def charge_reason(job: Job) -> str:
    """How the job's charge came about, as README's "Charges" says it."""
    state, error = JobState(job.state), (job.error or "").strip()
    charged = job.epsilon_charged or 0.0
    if state is JobState.succeeded:
        return "finished: charged what its certificate spent"
    if not state.final:
        return f"{state.value}: its reservation is held until it ends"
    if state is JobState.cancelled:
        if job.started_at is None:
            return "cancelled before it started: charged nothing"
        if error == "cancelled by request":
            return "cancelled while training: charged what it had spent when it stopped"
        if error:
            return f"stopped ({_reason(error)}): charged what it had spent when it stopped"
        return (
            "cancelled while back in the queue after an interrupted attempt: charged its whole "
            "reservation, because what the attempt spent cannot be proven lower"
        )
    if charged == 0 and (job.delta_charged or 0.0) == 0:
        return f"refused before any privacy mechanism ran: charged nothing ({_reason(error)})"
    if charged >= job.epsilon:
        return (
            "failed: charged its whole reservation, because a failed run cannot prove it spent less "
            f"({_reason(error)})"
        )
    return f"failed: charged what it had spent ({_reason(error)})"


def describe(
    action: str,
    object_id: str | None,
    details: dict[str, Any],
    jobs: dict[str, str],
    releases: dict[str, str],
) -> str:
    """An audit event in plain words, naming jobs and releases by their labels (J1, R1).

    An action this function does not know is written as the log writes it.
    """
    job = jobs.get(object_id or "", "")
    release = releases.get(object_id or "", "")
    of_job = jobs.get(str(details.get("job_id")), "")
    fmt = str(details.get("format", "")).upper()
    charged = details.get("epsilon_charged")
    charge = f"; charged ε {eps_text(charged)}" if isinstance(charged, int | float) else ""
    said = str(details.get("error") or "")
    error = f" ({_reason(said)})" if said and said != "cancelled by request" else ""
    if action == "job.queued" and details.get("reason"):
        return f"put {job} back in the queue ({_reason(str(details['reason']))})"
    if action == "batch.queued":
        return "submitted a batch including " + ", ".join(
            jobs[j] for j in details.get("jobs", []) if j in jobs
        )
    words = {
        "dataset.upload": "uploaded the dataset (stored encrypted)",
        "schema.update": "reviewed the schema (column kinds and public domains)",
        "budget.update": f"set the total budget to ε {eps_text(details.get('epsilon'))}, "
        f"δ {delta_text(details.get('delta'))}",
        "dataset.raw_deleted": "erased the raw data (encryption key and file destroyed)",
        "job.queued": f"submitted {job}, reserving ε {eps_text(details.get('epsilon'))}, "
        f"δ {delta_text(details.get('delta'))}",
        "job.running": f"started {job} (attempt {details.get('attempt', '?')})",
        "job.succeeded": f"finished {job}{charge}",
        "job.failed": f"{job} failed{error}{charge}",
        "job.cancelled": f"{job} cancelled{error}{charge}",
        "job.cancel_requested": f"asked {job} to stop",
        "release.created": f"released {release} from {of_job}: {count_text(details.get('rows'))} rows",
        "release.requested": f"asked for {release}, another table from {of_job}'s model (no budget)",
        "release.failed": f"{release} failed; nothing was released",
        "release.download": f"downloaded {release} as {fmt}",
        "statement.generated": f"generated a budget statement ({fmt})",
    }
    if action in words:
        return words[action]
    target = job or release or ("the dataset" if object_id else "")
    return f"{action} {target}".strip()


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC time (SQLite keeps no time zone: every stored time is UTC)."""
    return aware(value).astimezone(UTC)


def one_in(delta: float) -> str:
    """A probability as odds, e.g. ``one in 1,000,000``."""
    if delta <= 0:
        return "zero"
    n = 1 / delta
    exact = abs(math.log10(n) - round(math.log10(n))) < 1e-9
    text = f"{n:,.0f}" if n < 1e15 else f"{n:.2g}"
    return f"one in {text}" if exact else f"about one in {text}"


def factor(epsilon: float) -> str:
    """The number e to the power ``epsilon``, rounded for reading."""
    if epsilon > math.log(1e6):
        return "more than a million"
    value = math.exp(epsilon)
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"

"""How numbers, dates and sizes read on the pages (Jinja filters)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from service.core.orm import aware


def epsilon(value: float | None) -> str:
    """Epsilon to three decimals, trailing zeros dropped (``—`` when there is none)."""
    if value is None:
        return "—"
    if value != 0 and abs(value) < 0.001:
        return f"{value:.1e}"
    return f"{value:.3f}".rstrip("0").rstrip(".")


def delta(value: float | None) -> str:
    """Delta in scientific notation, e.g. ``1e-06``."""
    if value is None:
        return "—"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(value))
    mantissa = round(value / 10**exponent, 1)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"1e{exponent}" if mantissa == 1 else f"{mantissa:g}e{exponent}"


def percent(value: float | None, digits: int = 0) -> str:
    """A fraction as a percentage."""
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def when(value: datetime | str | None, seconds: bool = False) -> str:
    """A UTC time as ``2026-11-23 15:52 UTC`` (with ``:07`` seconds when asked)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return aware(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def size(value: int | None) -> str:
    """Bytes in the largest unit that keeps the number at least 1."""
    if value is None:
        return "—"
    amount = float(value)
    for unit in ("bytes", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{amount:.0f} {unit}" if unit == "bytes" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} bytes"


def number(value: Any, digits: int = 3) -> str:
    """A metric to ``digits`` decimals, ``n/a`` when missing."""
    if value is None:
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{float(value):.{digits}f}"


def short(object_id: str | None) -> str:
    """The first 8 characters of an id, enough to tell objects apart on a page."""
    return (object_id or "")[:8]


FILTERS = {
    "eps": epsilon,
    "delta": delta,
    "pct": percent,
    "when": when,
    "size": size,
    "num": number,
    "short": short,
}

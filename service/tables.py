"""Reading and writing tables (CSV or Parquet) with clear errors for bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

SUFFIXES = (".csv", ".parquet", ".pq")


class TableFormatError(ValueError):
    """The file is missing, unreadable, or not a table."""


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise TableFormatError(f"{str(path)!r}: unsupported file type {suffix!r}; use .csv or .parquet")
    return "csv" if suffix == ".csv" else "parquet"


def read_table(path: str | Path) -> pd.DataFrame:
    """A DataFrame from a CSV (UTF-8, header row) or Parquet file.

    Raises:
        TableFormatError: with a one-line reason: missing, empty, not UTF-8, not a table.
    """
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise TableFormatError(f"{str(path)!r} does not exist")
    try:
        if fmt == "csv":
            df = pd.read_csv(path, encoding="utf-8")
        else:
            df = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise TableFormatError(f"{str(path)!r} is empty") from None
    except UnicodeDecodeError:
        raise TableFormatError(f"{str(path)!r} is not UTF-8 text; re-save it as UTF-8 CSV") from None
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableFormatError(f"{str(path)!r} is not a readable {fmt} table: {reason}") from None
    if df.shape[1] == 0 or len(df) == 0:
        raise TableFormatError(f"{str(path)!r} has no data rows")
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write CSV or Parquet by the file's suffix."""
    path = Path(path)
    if _format(path) == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""A small HTTP client for a running dpsynth server (what the CLI's client commands use).

The server URL and API key come from ``--url``/``--key`` or ``DPSYNTH_URL`` /
``DPSYNTH_API_KEY``. Errors from the server become ``ClientError`` with the server's
own message, so the CLI can print one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
_CHUNK = 1 << 20


class ClientError(RuntimeError):
    """The server refused the request or could not be reached."""


class Client:
    """Calls the dpsynth API with one API key."""

    def __init__(self, url: str | None = None, key: str | None = None, *, timeout: float = 60.0) -> None:
        self.url = (url or os.environ.get("DPSYNTH_URL") or DEFAULT_URL).rstrip("/")
        key = key or os.environ.get("DPSYNTH_API_KEY")
        if not key:
            raise ClientError("no API key: pass --key or set DPSYNTH_API_KEY")
        self.http = httpx.Client(base_url=self.url, headers={"X-API-Key": key}, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of a successful response.

        Raises:
            ClientError: with the server's message for any non-2xx status.
        """
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the dpsynth server at {self.url}: {exc}") from None
        _raise_for(response)
        return response.json()

    def upload(
        self, path: Path, *, name: str | None = None, on_bytes: Callable[[int], None] | None = None
    ) -> Any:
        """Stream a CSV or Parquet file to ``POST /datasets``."""
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise ClientError(f"{str(path)!r}: upload a .csv or .parquet file")
        file_format = "csv" if suffix == ".csv" else "parquet"

        def body() -> Iterator[bytes]:
            with path.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    if on_bytes is not None:
                        on_bytes(len(chunk))
                    yield chunk

        return self.request(
            "POST",
            "/datasets",
            params={"name": name or path.name, "format": file_format},
            content=body(),
            headers={"Content-Length": str(path.stat().st_size)},
            timeout=None,
        )

    def download(
        self,
        path: str,
        out: Path,
        *,
        params: dict[str, str] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> int:
        """Stream ``GET path`` into ``out`` (written whole or not at all); returns bytes written."""
        tmp = out.with_name(f".{out.name}.part")
        written = 0
        try:
            with self.http.stream("GET", path, params=params, timeout=None) as response:
                if response.is_error:
                    response.read()
                    _raise_for(response)
                with tmp.open("wb") as fh:
                    for chunk in response.iter_bytes(_CHUNK):
                        fh.write(chunk)
                        written += len(chunk)
                        if on_bytes is not None:
                            on_bytes(len(chunk))
            tmp.replace(out)
        except httpx.HTTPError as exc:
            raise ClientError(f"download from {self.url} failed: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return written


def _raise_for(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    raise ClientError(f"server said {response.status_code}: {detail}")

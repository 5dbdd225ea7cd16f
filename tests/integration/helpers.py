"""Small tables and upload helpers shared by the service tests."""

from __future__ import annotations

import io

import httpx
import pandas as pd

from tests.conftest import make_table


def csv_bytes(n: int = 600, seed: int = 0) -> bytes:
    """A small mixed table as CSV."""
    return make_table(n, seed).to_csv(index=False).encode()


def parquet_bytes(n: int = 600, seed: int = 0) -> bytes:
    """The same table as Parquet."""
    out = io.BytesIO()
    make_table(n, seed).to_parquet(out, index=False)
    return out.getvalue()


def upload(client: httpx.Client, body: bytes, *, fmt: str = "csv", name: str = "t") -> httpx.Response:
    """POST /datasets with a raw body."""
    return client.post("/datasets", params={"name": name, "format": fmt}, content=body)


def dataset_with_budget(client: httpx.Client, *, epsilon: float = 1.0, delta: float | None = None) -> str:
    """Upload the small table and set its budget; returns the dataset id."""
    response = upload(client, csv_bytes())
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    budget = client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": epsilon, "delta": delta})
    assert budget.status_code == 200, budget.text
    return dataset_id


def read_csv(content: bytes) -> pd.DataFrame:
    """A CSV response body as a DataFrame."""
    return pd.read_csv(io.BytesIO(content))

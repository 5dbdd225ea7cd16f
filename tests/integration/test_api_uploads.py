"""Uploads against a live API: what is accepted, what is refused (leaving nothing behind),
encryption at rest, and erasing the raw data."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from service.core import crypto
from service.core.audit import AuditEvent
from service.core.orm import Dataset
from service.core.storage import Storage
from service.core.uploads import open_raw
from tests.integration.helpers import csv_bytes, dataset_with_budget, parquet_bytes, read_csv, upload
from tests.integration.live import LiveService, live_service, service_settings
from tests.integration.test_api_access import RELEASE_TABLE, make_release

KINDS = {
    "age": "integer",
    "income": "continuous",
    "smoker": "categorical",
    "region": "categorical",
    "children": "integer",
    "outcome": "categorical",
}
LIMIT = 4096


def parquet_of(table: pa.Table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def storage_root(service: LiveService) -> Path:
    return service.settings.data_dir / "storage"


def snapshot(service: LiveService) -> tuple[list[str], int, int]:
    """Every path in storage (files, folders, hidden temporary files), datasets, upload events."""
    paths = sorted(str(p.relative_to(storage_root(service))) for p in storage_root(service).rglob("*"))
    with service.sessions() as session:
        datasets = session.scalar(select(func.count()).select_from(Dataset)) or 0
        uploads = (
            session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "dataset.upload")
            )
            or 0
        )
    return paths, datasets, uploads


def raw_files(service: LiveService, dataset_id: str) -> list[str]:
    folder = storage_root(service) / "datasets" / dataset_id
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with live_service(service_settings(tmp_path_factory.mktemp("uploads") / "data")) as service:
        yield service


@pytest.fixture(scope="module")
def custodian(live: LiveService) -> Iterator[httpx.Client]:
    with live.client(live.key("custodian")) as client:
        yield client


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    settings = service_settings(tmp_path_factory.mktemp("limited") / "data", max_upload_bytes=LIMIT)
    with live_service(settings) as service:
        yield service


def test_csv_is_accepted_with_its_row_count_and_inferred_kinds(live: LiveService, custodian: httpx.Client):
    body = csv_bytes(600)
    response = upload(custodian, body, name="people")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["name"] == "people"
    assert dataset["file_format"] == "csv"
    assert dataset["row_count"] == 600
    assert dataset["size_bytes"] == len(body)
    assert dataset["sha256"] == hashlib.sha256(body).hexdigest()
    assert {name: spec["kind"] for name, spec in dataset["inferred_schema"]["columns"].items()} == KINDS
    assert dataset["schema"] == dataset["inferred_schema"]
    assert dataset["budget"]["epsilon_total"] is None
    assert raw_files(live, dataset["id"]) == ["raw.enc"]
    assert custodian.get(f"/datasets/{dataset['id']}").json() == dataset


def test_parquet_is_accepted_by_its_content_type(live: LiveService, custodian: httpx.Client):
    response = custodian.post(
        "/datasets",
        params={"name": "people"},
        content=parquet_bytes(600),
        headers={"Content-Type": "application/vnd.apache.parquet"},
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert (dataset["file_format"], dataset["row_count"]) == ("parquet", 600)
    assert {name: spec["kind"] for name, spec in dataset["inferred_schema"]["columns"].items()} == KINDS


def test_csv_kinds_include_booleans_and_datetimes(custodian: httpx.Client):
    body = b"flag,when,score\ntrue,2024-01-01T10:00:00,1.5\nfalse,2024-02-01T11:30:00,2.25\n"
    response = custodian.post(
        "/datasets",
        params={"name": "kinds"},
        content=body,
        headers={"Content-Type": "text/csv; charset=utf-8"},
    )
    assert response.status_code == 201, response.text
    kinds = {name: spec["kind"] for name, spec in response.json()["inferred_schema"]["columns"].items()}
    assert kinds == {"flag": "boolean", "when": "datetime", "score": "continuous"}


def test_csv_whose_column_turns_from_numbers_to_text_after_the_first_block_is_accepted(
    custodian: httpx.Client,
):
    rows = 150_000  # more than the reader's first 1 MiB block
    body = b"code,label\n" + b"17,a\n" * rows + b"n/a,b\n"
    response = upload(custodian, body, name="mixed")
    assert response.status_code == 201, response.text
    assert response.json()["row_count"] == rows + 1


REFUSED = {
    "empty body": ({"format": "csv"}, b"", 422, "the upload is empty"),
    "header only": ({"format": "csv"}, b"a,b\n", 422, "the table has no data rows"),
    "header without newline": ({"format": "csv"}, b"a,b", 422, "the table has no data rows"),
    "latin-1 value": ({"format": "csv"}, "a,b\n1,café\n".encode("latin-1"), 422, "not UTF-8"),
    "latin-1 header": ({"format": "csv"}, "café,b\n1,2\n".encode("latin-1"), 422, "not UTF-8"),
    "duplicate columns": ({"format": "csv"}, b"a,b,a\n1,2,3\n", 422, "duplicate column names ['a']"),
    "unnamed column": ({"format": "csv"}, b"a,,b\n1,2,3\n", 422, "a column has an empty name"),
    "ragged rows": ({"format": "csv"}, b"a,b\n1,2\n3,s3cr3t,4\n", 422, "not a readable csv table"),
    "binary garbage": ({"format": "csv"}, bytes(range(256)) * 16, 422, "not"),
    "garbage as parquet": ({"format": "parquet"}, b"PAR1 not really parquet", 422, "not a readable parquet"),
    "csv as parquet": ({"format": "parquet"}, csv_bytes(50), 422, "not a readable parquet table"),
    "parquet as csv": ({"format": "csv"}, parquet_bytes(50), 422, "not"),
    "parquet without rows": (
        {"format": "parquet"},
        parquet_of(pa.table({"a": pa.array([], type=pa.int64())})),
        422,
        "the table has no data rows",
    ),
    "parquet nested column": (
        {"format": "parquet"},
        parquet_of(pa.table({"a": [[1, 2], [3]], "b": [1, 2]})),
        422,
        "column 'a' holds nested values",
    ),
    "parquet bytes column": (
        {"format": "parquet"},
        parquet_of(pa.table({"a": [b"\x00\x01", b"\xff"]})),
        422,
        "column 'a' holds raw bytes",
    ),
    "no format": ({}, csv_bytes(50), 422, "say which format the body is"),
    "unknown format": ({"format": "xlsx"}, csv_bytes(50), 422, "'csv' or 'parquet'"),
    "empty name": ({"format": "csv", "name": ""}, csv_bytes(50), 422, "at least 1 character"),
    "control characters in name": ({"format": "csv", "name": "a\nb"}, csv_bytes(50), 422, "pattern"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_refused_upload_says_why_and_leaves_nothing(live: LiveService, custodian: httpx.Client, case: str):
    params, body, status, message = REFUSED[case]
    before = snapshot(live)
    response = custodian.post("/datasets", params={"name": "t", **params}, content=body)
    assert response.status_code == status, response.text
    assert message in response.text
    assert snapshot(live) == before
    assert "s3cr3t" not in response.text, "error messages never quote the data"


def test_refused_for_an_unknown_content_type(live: LiveService, custodian: httpx.Client):
    before = snapshot(live)
    response = custodian.post(
        "/datasets", params={"name": "t"}, content=b'{"a": 1}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "say which format" in response.json()["detail"]
    assert snapshot(live) == before


@pytest.mark.parametrize("role", [None, "analyst", "auditor", "admin"])
def test_upload_without_a_custodian_key_stores_nothing(live: LiveService, role: str | None):
    before = snapshot(live)
    with live.client(live.key(role) if role else None) as client:
        response = upload(client, csv_bytes(50))
    assert response.status_code == (403 if role else 401)
    assert snapshot(live) == before


def _lines(n: int) -> bytes:
    """A one-column CSV of exactly ``n`` bytes."""
    return b"a\n" + b"1\n" * ((n - 2) // 2)


def test_upload_at_the_size_limit_is_accepted(limited: LiveService):
    with limited.client(limited.key("custodian")) as client:
        response = upload(client, _lines(LIMIT))
    assert response.status_code == 201, response.text
    assert response.json()["size_bytes"] == LIMIT


def test_upload_over_the_limit_with_content_length_is_413(limited: LiveService):
    before = snapshot(limited)
    with limited.client(limited.key("custodian")) as client:
        response = upload(client, _lines(LIMIT + 2))
    assert response.status_code == 413
    assert response.json()["detail"] == f"the upload is larger than the limit of {LIMIT:,} bytes"
    assert snapshot(limited) == before


def test_chunked_upload_over_the_limit_is_413_and_leaves_nothing(limited: LiveService):
    body = _lines(3 * LIMIT)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    before = snapshot(limited)
    with limited.client(limited.key("custodian")) as client:
        request = client.build_request(
            "POST", "/datasets", params={"name": "t", "format": "csv"}, content=chunks()
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        response = client.send(request)
    assert response.status_code == 413
    assert response.json()["detail"] == f"the upload is larger than the limit of {LIMIT:,} bytes"
    assert snapshot(limited) == before


def test_a_name_or_filename_with_dot_dot_never_becomes_a_path(live: LiveService, custodian: httpx.Client):
    name = "../../../../tmp/evil/raw.enc"
    outside = set(live.settings.data_dir.parent.rglob("*"))
    response = custodian.post(
        "/datasets",
        params={"name": name, "format": "csv"},
        content=csv_bytes(50),
        headers={"Content-Disposition": 'attachment; filename="../../evil.csv"'},
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["name"] == name
    assert len(dataset["id"]) == 32 and all(c in "0123456789abcdef" for c in dataset["id"])
    created = set(live.settings.data_dir.parent.rglob("*")) - outside
    storage = storage_root(live)
    new_files = {p for p in created if p.is_file() and not p.name.startswith("dpsynth.db")}
    assert new_files == {storage / "datasets" / dataset["id"] / "raw.enc"}
    assert not any("evil" in str(p) for p in created)
    bad_format = custodian.post("/datasets", params={"name": "t", "format": "../csv"}, content=csv_bytes(50))
    assert bad_format.status_code == 422


def test_raw_upload_is_encrypted_at_rest(live: LiveService, custodian: httpx.Client):
    marker = "zebra-7f3a9c"
    body = ("secret_column,n\n" + "".join(f"{marker}-{i % 7},{i}\n" for i in range(300))).encode()
    response = upload(custodian, body, name="sealed")
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    stored = (storage_root(live) / "datasets" / dataset_id / "raw.enc").read_bytes()
    assert stored.startswith(crypto.MAGIC)
    assert marker.encode() not in stored
    assert b"secret_column" not in stored
    assert len(stored) > len(body)  # header and tags: all of it is there, sealed
    with live.sessions() as session:
        row = session.get(Dataset, dataset_id)
        assert row is not None and row.wrapped_key is not None and row.storage_key is not None
        data_key = crypto.unwrap_key(live.settings.master_key(), row.wrapped_key, context=dataset_id)
        assert data_key not in stored and row.wrapped_key not in stored
        with open_raw(Storage(live.settings.storage), row.storage_key, data_key, dataset_id=dataset_id) as fh:
            assert fh.read() == body


def test_delete_raw_erases_file_and_key_and_keeps_releases_and_ledger(live: LiveService):
    with live.client(live.key("custodian")) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        release_id = make_release(live, client, dataset_id, epsilon=0.25)
        assert raw_files(live, dataset_id) == ["raw.enc"]

        erased = client.delete(f"/datasets/{dataset_id}/raw")
        assert erased.status_code == 200, erased.text
        assert erased.json()["raw_deleted_at"] is not None
        assert "row_count" not in erased.json()
        # The file is gone by the time the answer arrives, not some time later.
        assert raw_files(live, dataset_id) == []
        with live.sessions() as session:
            row = session.get(Dataset, dataset_id)
            assert row is not None
            assert (row.wrapped_key, row.storage_key) == (None, None)
            assert row.raw_deleted_at is not None

        again = client.delete(f"/datasets/{dataset_id}/raw")
        assert again.status_code == 409
        assert again.json()["detail"] == "the raw data of this dataset was already erased"
        job = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.1, "rows": 5})
        assert job.status_code == 409
        assert "erased" in job.json()["detail"]

        assert client.get(f"/datasets/{dataset_id}").json()["raw_deleted_at"] is not None
        assert client.get(f"/releases/{release_id}").status_code == 200
        assert client.get(f"/releases/{release_id}/certificate").json()["epsilon"] == 0.25
        download = client.get(f"/releases/{release_id}/download")
        assert download.status_code == 200
        pd.testing.assert_frame_equal(read_csv(download.content), RELEASE_TABLE)
        ledger = client.get(f"/datasets/{dataset_id}/ledger").json()
        assert [line["release_ids"] for line in ledger["lines"]] == [[release_id]]
        assert ledger["budget"]["epsilon_charged"] == pytest.approx(0.25)
    with live.sessions() as session:
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.object_id == dataset_id)).all()
    assert "dataset.raw_deleted" in actions


def test_delete_raw_waits_for_live_jobs(live: LiveService):
    with live.client(live.key("custodian")) as client:
        dataset_id = dataset_with_budget(client, epsilon=1.0)
        job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.1, "rows": 5}).json()["id"]
        refused = client.delete(f"/datasets/{dataset_id}/raw")
        assert refused.status_code == 409
        assert "cancel it first" in refused.json()["detail"]
        assert raw_files(live, dataset_id) == ["raw.enc"]
        assert client.post(f"/jobs/{job_id}/cancel").json()["state"] == "cancelled"
        assert client.delete(f"/datasets/{dataset_id}/raw").status_code == 200
    assert raw_files(live, dataset_id) == []

"""Retention periods and erasure: the raw upload goes (key and file), releases and the ledger stay."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from service.core.datasets import erase_expired
from service.core.storage import Storage
from tests.integration.helpers import csv_bytes, upload
from tests.integration.live import live_service, service_settings
from tests.integration.processes import Server, cli, service_env, wait_for

QUICK_JOB = {"epsilon": 0.3, "rows": 40, "generator_steps": 200, "discriminator_share": 0.0}


def _wrapped_key(db: Path, dataset_id: str) -> bytes | None:
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT wrapped_key FROM datasets WHERE id = ?", (dataset_id,)).fetchone()[
            0
        ]


def test_retention_period_end_erases_key_and_file_and_keeps_releases_and_ledger(tmp_path: Path):
    env = service_env(tmp_path / "data")
    cli(env, "admin", "create-tenant", "acme")
    custodian = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    auditor = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "auditor").stdout.strip()
    server = Server(env, log=tmp_path / "serve.log")  # API + embedded worker; sweeps every second
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": custodian}, timeout=30) as client:
            dataset = upload(client, csv_bytes(300)).json()
            dataset_id = dataset["id"]
            assert dataset["raw_expires_at"] is None  # no service default: kept until erased
            client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": 2.0}).raise_for_status()
            job_id = client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB}).json()["id"]
            job = wait_for(
                lambda: (j := client.get(f"/jobs/{job_id}").json())["state"] == "succeeded" and j,
                timeout=180,
                what="the job",
            )
            db = tmp_path / "data" / "dpsynth.db"
            key = _wrapped_key(db, dataset_id)
            assert key and len(key) > 16
            raw_file = tmp_path / "data" / "storage" / "datasets" / dataset_id / "raw.enc"
            assert raw_file.is_file()

            said = cli(
                {**env, "DPSYNTH_API_KEY": custodian}, "datasets", "retention", dataset_id, "--days", "0"
            )
            assert "erased after" in said.stdout
            erased = wait_for(
                lambda: (d := client.get(f"/datasets/{dataset_id}").json())["raw_deleted_at"] and d,
                timeout=60,
                what="the retention sweep",
            )
            assert erased["raw_expires_at"] is not None
            # Key and file are gone; the database and its WAL keep no copy of the wrapped key.
            assert _wrapped_key(db, dataset_id) is None
            assert not raw_file.exists()
            for path in db.parent.glob("dpsynth.db*"):
                assert key not in path.read_bytes(), f"the erased key is still in {path.name}"
            # What was released stays: the table, its certificate, the ledger's charge.
            release_id = job["release_id"]
            assert client.get(f"/releases/{release_id}/download").status_code == 200
            assert client.get(f"/releases/{release_id}/certificate").json()["epsilon"] > 0
            ledger = client.get(f"/datasets/{dataset_id}/ledger").json()
            assert ledger["budget"]["epsilon_charged"] == pytest.approx(job["epsilon_charged"])
            refused = client.post("/jobs", json={"dataset_id": dataset_id, **QUICK_JOB})
            assert refused.status_code == 409 and "erased" in refused.json()["detail"]
            assert client.put(f"/datasets/{dataset_id}/retention", json={"days": 5}).status_code == 409
        with httpx.Client(base_url=server.url, headers={"X-API-Key": auditor}, timeout=30) as client:
            events = [json.loads(line) for line in client.get("/audit/export").text.splitlines()]
    finally:
        server.stop()
    mine = [e for e in events if e.get("object_id") == dataset_id]
    retention = [e for e in mine if e["action"] == "dataset.retention"]
    deleted = [e for e in mine if e["action"] == "dataset.raw_deleted"]
    assert len(retention) == 1 and retention[0]["details"]["days"] == 0
    assert len(deleted) == 1 and deleted[0]["actor"] == "system:retention"
    assert deleted[0]["details"] == {"reason": "retention period ended"}


def test_service_default_retention_and_a_live_job_delays_the_erase(tmp_path: Path):
    settings = service_settings(tmp_path / "data", raw_retention_days=30)
    with live_service(settings) as service:
        with service.client(service.key("custodian")) as client:
            dataset = upload(client, csv_bytes(100)).json()
            created = dataset["created_at"]
            assert dataset["raw_expires_at"] is not None and dataset["raw_expires_at"] > created
            client.put(f"/datasets/{dataset['id']}/budget", json={"epsilon": 1.0}).raise_for_status()
            job_id = client.post(
                "/jobs", json={"dataset_id": dataset["id"], "epsilon": 0.1, "rows": 5}
            ).json()["id"]
            assert client.put(f"/datasets/{dataset['id']}/retention", json={"days": 0}).status_code == 200
            storage = Storage(settings.storage)
            # A queued job still needs the data: the sweep leaves it for later.
            assert erase_expired(service.sessions, storage) == []
            client.post(f"/jobs/{job_id}/cancel").raise_for_status()
            assert erase_expired(service.sessions, storage) == [dataset["id"]]
            assert erase_expired(service.sessions, storage) == []  # once
            assert client.get(f"/datasets/{dataset['id']}").json()["raw_deleted_at"] is not None
            kept = upload(client, csv_bytes(100)).json()
            cleared = client.put(f"/datasets/{kept['id']}/retention", json={"days": None}).json()
            assert cleared["raw_expires_at"] is None
            assert erase_expired(service.sessions, storage) == []

"""The same service on the scale-out broker: Redis chosen by DPSYNTH_BROKER_URL."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.helpers import csv_bytes, upload
from tests.integration.processes import Server, cli, service_env, wait_for


def test_job_runs_through_redis(tmp_path: Path, redis_url: str, postgres_url: str):
    """Redis broker and PostgreSQL database together: the scale-out topology, natively."""
    env = service_env(tmp_path / "data", DPSYNTH_BROKER_URL=redis_url, DPSYNTH_DATABASE_URL=postgres_url)
    cli(env, "admin", "create-tenant", "acme")
    token = cli(env, "admin", "create-key", "--tenant", "acme", "--role", "custodian").stdout.strip()
    server = Server(env, log=tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": token}, timeout=30) as client:
            dataset_id = upload(client, csv_bytes(300)).json()["id"]
            client.put(f"/datasets/{dataset_id}/budget", json={"epsilon": 1.0})
            job_id = client.post("/jobs", json={"dataset_id": dataset_id, "epsilon": 0.5, "rows": 40}).json()[
                "id"
            ]

            def final() -> dict | None:
                job = client.get(f"/jobs/{job_id}").json()
                return job if job["state"] in ("succeeded", "failed", "cancelled") else None

            job = wait_for(final, timeout=180, what="the job to finish")
            assert job["state"] == "succeeded", server.tail()
            download = client.get(f"/releases/{job['release_id']}/download", params={"format": "csv"})
            assert download.status_code == 200
            assert len(download.text.strip().splitlines()) == 41
    finally:
        server.stop()
    assert not (tmp_path / "data" / "broker.db").exists()  # nothing went through the embedded broker
